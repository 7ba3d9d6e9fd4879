package capture

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

func TestFake(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rs := rules.Build(redirect.Defaults(), rules.IPv4, rules.IPv6)
	for _, tc := range []struct {
		backend, name string
		real          Backend
	}{
		{"auto", "nftables", newNFTables()},
		{"nftables", "nftables", newNFTables()},
		{"iptables", "iptables", &IPTables{}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			f := NewFake()
			be, err := f.New(tc.backend)
			if err != nil {
				t.Fatal(err)
			}
			if be.Name() != tc.name || !slices.Equal(be.Expected(rs), tc.real.Expected(rs)) {
				t.Fatalf("%s: name %s, Expected differs from the real backend's", tc.backend, be.Name())
			}
			if err := f.InNetns(a, func() error { return be.Apply(rs) }); err != nil {
				t.Fatal(err)
			}
			var live []string
			if err := f.InNetns(a, func() (err error) { live, err = be.Live(); return err }); err != nil || len(rules.Diff(be.Expected(rs), live)) > 0 {
				t.Fatalf("live in a after Apply: %v %v", live, err)
			}
			if len(f.Live(b)) != 0 {
				t.Errorf("netns b has rules %v", f.Live(b))
			}
			if err := f.InNetns(a, be.Remove); err != nil || len(f.Live(a)) != 0 {
				t.Errorf("after Remove: %v %v", f.Live(a), err)
			}
			if !slices.Equal(f.Applied(), []string{a}) || !slices.Equal(f.Removed(), []string{a}) {
				t.Errorf("applied %v removed %v", f.Applied(), f.Removed())
			}
		})
	}
	f := NewFake()
	be, _ := f.New("nftables")
	if err := be.Apply(rs); err == nil || !strings.Contains(err.Error(), "outside InNetns") {
		t.Errorf("Apply outside InNetns: %v", err)
	}
	if err := f.InNetns(filepath.Join(dir, "gone"), be.Remove); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("InNetns of a missing path: %v", err)
	}
	f.ApplyErr = errors.New("boom")
	if err := f.InNetns(a, func() error { return be.Apply(rs) }); !errors.Is(err, f.ApplyErr) || len(f.Live(a)) != 0 {
		t.Errorf("ApplyErr: %v, live %v", err, f.Live(a))
	}
	if _, err := f.New("ebpf"); err == nil || !strings.Contains(err.Error(), "ebpf") {
		t.Errorf("unknown backend: %v", err)
	}
}
