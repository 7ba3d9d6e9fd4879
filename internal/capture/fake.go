package capture

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
)

// Fake stands in for the kernel under the capture backends, for tests of code that uses this
// package without root: New returns backends whose Expected is the real backends' rendering
// and whose Apply, Remove and Live act on a listing kept per network namespace, the one entered
// with InNetns (a path that must exist, as for the real InNetns). It records every Apply and
// Remove. Its methods are safe for concurrent use, but one InNetns runs at a time.
type Fake struct {
	// ApplyErr, when set, makes Apply fail without changing anything.
	ApplyErr error

	enter   sync.Mutex // held during InNetns
	mu      sync.Mutex
	current string
	live    map[string][]string
	applied []string
	removed []string
}

// NewFake returns a Fake whose namespaces hold no rules.
func NewFake() *Fake { return &Fake{live: map[string][]string{}} }

// New is New for the fake: "auto" and "nftables" render as nftables, "iptables" as iptables.
func (f *Fake) New(backend string) (Backend, error) {
	switch backend {
	case contract.BackendAuto, contract.BackendNFTables:
		return &fakeBackend{f: f, real: newNFTables()}, nil
	case contract.BackendIPTables:
		return &fakeBackend{f: f, real: &IPTables{}}, nil
	}
	return New(backend) // the real error for an unknown name
}

// InNetns is InNetns for the fake: fn's backend calls act on netnsPath's listing.
func (f *Fake) InNetns(netnsPath string, fn func() error) error {
	if _, err := os.Stat(netnsPath); err != nil {
		return fmt.Errorf("enter netns %s: %w", netnsPath, err)
	}
	f.enter.Lock()
	defer f.enter.Unlock()
	f.mu.Lock()
	f.current = netnsPath
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.current = ""
		f.mu.Unlock()
	}()
	if err := fn(); err != nil {
		return fmt.Errorf("in netns %s: %w", netnsPath, err)
	}
	return nil
}

// SetLive replaces the listing of netns (as a tamperer, or a pod that started with rules).
func (f *Fake) SetLive(netns string, lines []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[netns] = slices.Clone(lines)
}

// Live returns the listing of netns.
func (f *Fake) Live(netns string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.live[netns])
}

// Applied returns the namespaces of every successful Apply, in order.
func (f *Fake) Applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

// Removed returns the namespaces of every Remove, in order.
func (f *Fake) Removed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

// fakeBackend renders with a real backend and keeps the rules in its Fake.
type fakeBackend struct {
	f    *Fake
	real interface {
		Name() string
		Expected(rules.Ruleset) []string
	}
}

func (b *fakeBackend) Name() string                       { return b.real.Name() }
func (b *fakeBackend) Expected(rs rules.Ruleset) []string { return b.real.Expected(rs) }

func (b *fakeBackend) netns() (string, error) {
	if b.f.current == "" {
		return "", fmt.Errorf("capture.Fake: %s used outside InNetns", b.Name())
	}
	return b.f.current, nil
}

func (b *fakeBackend) Apply(rs rules.Ruleset) error {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	ns, err := b.netns()
	if err != nil {
		return err
	}
	if b.f.ApplyErr != nil {
		return b.f.ApplyErr
	}
	b.f.live[ns] = b.real.Expected(rs)
	b.f.applied = append(b.f.applied, ns)
	return nil
}

func (b *fakeBackend) Remove() error {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	ns, err := b.netns()
	if err != nil {
		return err
	}
	delete(b.f.live, ns)
	b.f.removed = append(b.f.removed, ns)
	return nil
}

func (b *fakeBackend) Live() ([]string, error) {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	ns, err := b.netns()
	if err != nil {
		return nil, err
	}
	return slices.Clone(b.f.live[ns]), nil
}
