// Package inspect reads and compares a pod's redirect rules for the node agent: the expected
// listing for the pod's settings and backend, the live listing read from the pod's network
// namespace, and their difference (agentapi.RulesView). Engine hides the capture backends so
// that the agent's API and repair logic can be tested without root.
package inspect

import (
	"fmt"
	"sync"

	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// Engine is what the agent needs from the rule engine and the capture backends.
type Engine interface {
	// Expected is the canonical listing of what backend installs for rs.
	Expected(backend string, rs rules.Ruleset) ([]string, error)
	// Live is the canonical listing of our rules read from the network namespace at netns.
	Live(backend, netns string) ([]string, error)
	// Apply installs rs atomically in the network namespace at netns.
	Apply(backend, netns string, rs rules.Ruleset) error
	// BackendName resolves a configured backend ("auto") to the name it reports ("nftables").
	BackendName(backend string) (string, error)
}

// Capture is the Engine of a real node: package capture, entered into the pod's netns.
// Backends are created once per name, in the agent's (host) network namespace. Tests set
// Fake to run it on a capture.Fake instead of the kernel.
type Capture struct {
	Fake *capture.Fake

	mu       sync.Mutex
	backends map[string]capture.Backend
}

func (c *Capture) inNetns(netns string, fn func() error) error {
	if c.Fake != nil {
		return c.Fake.InNetns(netns, fn)
	}
	return capture.InNetns(netns, fn)
}

var _ Engine = (*Capture)(nil)

func (c *Capture) backend(name string) (capture.Backend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.backends[name]; ok {
		return b, nil
	}
	newBackend := capture.New
	if c.Fake != nil {
		newBackend = c.Fake.New
	}
	b, err := newBackend(name)
	if err != nil {
		return nil, err
	}
	if c.backends == nil {
		c.backends = map[string]capture.Backend{}
	}
	c.backends[name] = b
	return b, nil
}

// BackendName implements Engine.
func (c *Capture) BackendName(backend string) (string, error) {
	b, err := c.backend(backend)
	if err != nil {
		return "", err
	}
	return b.Name(), nil
}

// Expected implements Engine.
func (c *Capture) Expected(backend string, rs rules.Ruleset) ([]string, error) {
	b, err := c.backend(backend)
	if err != nil {
		return nil, err
	}
	return b.Expected(rs), nil
}

// Live implements Engine.
func (c *Capture) Live(backend, netns string) ([]string, error) {
	b, err := c.backend(backend)
	if err != nil {
		return nil, err
	}
	var live []string
	err = c.inNetns(netns, func() error {
		var err error
		live, err = b.Live()
		return err
	})
	return live, err
}

// Apply implements Engine.
func (c *Capture) Apply(backend, netns string, rs rules.Ruleset) error {
	b, err := c.backend(backend)
	if err != nil {
		return err
	}
	return c.inNetns(netns, func() error { return b.Apply(rs) })
}

// Ruleset is the ruleset of settings s for a pod with the given IPs (the sandbox addresses the
// plugin reported): the families come from rules.FamiliesFor, the decision the plugin's ADD used.
func Ruleset(s redirect.Settings, podIPs []string) rules.Ruleset {
	return rules.Build(s, rules.FamiliesFor(podIPs)...)
}

// BackendOf returns the backend to inspect r with: the one recorded, else def (the plugin's
// configured backend), else auto.
func BackendOf(r record.Record, def string) string {
	switch {
	case r.Backend != "":
		return r.Backend
	case def != "":
		return def
	}
	return contract.BackendAuto
}

// View inspects the pod of record r: expected rules (none for a skipped pod), live rules from
// its netns, their difference. def is the default backend. Errors reading live rules are in
// LiveErr; the view is then not in sync.
func View(e Engine, r record.Record, def string) agentapi.RulesView {
	backend := BackendOf(r, def)
	v := agentapi.RulesView{Pod: r.PodRecord, Settings: r.Settings, Backend: backend, Expected: []string{}, Live: []string{}, Diff: []string{}}
	if name, err := e.BackendName(backend); err == nil {
		v.Backend = name
	}
	var errs []string
	if r.State != agentapi.StateSkipped {
		if r.Settings == nil {
			errs = append(errs, "no redirect settings known for this pod")
		} else if exp, err := e.Expected(backend, Ruleset(*r.Settings, r.PodIPs)); err != nil {
			errs = append(errs, fmt.Sprintf("expected rules: %v", err))
		} else if exp != nil {
			v.Expected = exp
		}
	}
	if r.Netns == "" {
		errs = append(errs, "network namespace of the pod unknown")
	} else if live, err := e.Live(backend, r.Netns); err != nil {
		errs = append(errs, fmt.Sprintf("live rules: %v", err))
	} else if live != nil {
		v.Live = live
	}
	if d := rules.Diff(v.Expected, v.Live); d != nil {
		v.Diff = d
	}
	if len(errs) > 0 {
		v.LiveErr = joinLines(errs)
	}
	v.InSync = len(errs) == 0 && len(v.Diff) == 0
	return v
}

func joinLines(s []string) string {
	out := s[0]
	for _, x := range s[1:] {
		out += "; " + x
	}
	return out
}
