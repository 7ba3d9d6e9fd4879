package cnirpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/selection"
)

// Fake is a Handler for tests and benchmarks, a stand-in for the node agent: it answers Decide
// with DecisionFor on the pods given to SetPod and records every request.
type Fake struct {
	mu   sync.Mutex
	pods map[string]fakePod
	// Excluded are the namespaces the decision excludes (beside contract.SystemNamespace).
	Excluded []string
	// Block, when non-nil, is waited on (or ctx's end) before any answer: a slow agent.
	Block chan struct{}
	// Decided are the Decide requests received, Reports the reports, Warnings every warning.
	Decided  []DecideRequest
	Reports  []agentapi.Report
	Warnings []string
}

var _ Handler = (*Fake)(nil)

type fakePod struct {
	uid   string
	facts selection.PodFacts
}

// SetPod adds or replaces the pod facts.Namespace/name with uid; Decide answers for it.
func (f *Fake) SetPod(name, uid string, facts selection.PodFacts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pods == nil {
		f.pods = map[string]fakePod{}
	}
	f.pods[facts.Namespace+"/"+name] = fakePod{uid: uid, facts: facts}
}

func (f *Fake) wait(ctx context.Context) error {
	if f.Block == nil {
		return nil
	}
	select {
	case <-f.Block:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Decide implements Handler.
func (f *Fake) Decide(ctx context.Context, req DecideRequest, warnings []string) (Decision, error) {
	if err := f.wait(ctx); err != nil {
		return Decision{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Decided = append(f.Decided, req)
	f.Warnings = append(f.Warnings, warnings...)
	p, ok := f.pods[req.Namespace+"/"+req.Name]
	if !ok {
		return Decision{}, fmt.Errorf("pod %s/%s not found", req.Namespace, req.Name)
	}
	excluded := func(ns string) bool { return ns == contract.SystemNamespace || slices.Contains(f.Excluded, ns) }
	return DecisionFor(p.uid, p.facts, excluded, req.SandboxIPs), nil
}

// Report implements Handler.
func (f *Fake) Report(ctx context.Context, r agentapi.Report, warnings []string) error {
	if err := f.wait(ctx); err != nil {
		return err
	}
	if r.Namespace == "" || r.Name == "" {
		return errors.New("report: namespace and name are required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Reports = append(f.Reports, r)
	f.Warnings = append(f.Warnings, warnings...)
	return nil
}

// Snapshot returns copies of what was received so far.
func (f *Fake) Snapshot() (decided []DecideRequest, reports []agentapi.Report, warnings []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]DecideRequest(nil), f.Decided...), append([]agentapi.Report(nil), f.Reports...), append([]string(nil), f.Warnings...)
}
