package cnirpc

import (
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/selection"
)

// DecisionFor is the answer to Decide for a pod with uid and facts, whose sandbox interface has
// sandboxIPs: selection.Decide, then the redirect settings of a captured pod validated by
// redirect.FromAnnotations, and the families of rules.FamiliesFor. It is the one place that
// turns a pod into a decision: the agent calls it, and so do the stand-in agents of the tests
// and benchmarks.
func DecisionFor(uid string, facts selection.PodFacts, excluded func(namespace string) bool, sandboxIPs []string) Decision {
	sel := selection.Decide(facts, excluded)
	d := Decision{Capture: sel.Capture, Reason: sel.Reason, UID: uid}
	if !d.Capture {
		return d
	}
	s, err := redirect.FromAnnotations(facts.Annotations)
	if err != nil {
		d.Invalid = err.Error()
		return d
	}
	d.Settings = &s
	for _, f := range rules.FamiliesFor(sandboxIPs) {
		d.Families = append(d.Families, f.String())
	}
	return d
}
