package capture

import (
	"errors"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

// backendCase is one backend under test, with the commands that tamper with its rules.
type backendCase struct {
	name    string
	new     func(t *testing.T) Backend
	break_  func(b Backend) // make the next Apply fail
	delRule []string        // command deleting the redirect rule of out_redirect (IPv4)
	addRule []string        // command adding a foreign rule to our outbound chain (IPv4)
}

func backendCases() []backendCase {
	ipt := func(v Variant) backendCase {
		bin := "iptables-" + string(v)
		return backendCase{
			name: "iptables-" + string(v),
			new: func(t *testing.T) Backend {
				b, err := NewIPTables(v)
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			break_:  func(b Backend) { b.(*IPTables).breakApply = true },
			delRule: []string{bin, "-t", "nat", "-F", "SIDELANE_OUT_REDIRECT"},
			addRule: []string{bin, "-t", "nat", "-I", "SIDELANE_OUTBOUND", "1", "-p", "tcp", "--dport", "22", "-j", "RETURN"},
		}
	}
	return []backendCase{
		{
			name: "nftables",
			new: func(t *testing.T) Backend {
				b, err := New("nftables")
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			break_:  func(b Backend) { b.(*NFTables).breakApply = true },
			delRule: []string{"nft", "flush", "chain", "ip", "sidelane", "out_redirect"},
			addRule: []string{"nft", "insert", "rule", "ip", "sidelane", "outbound", "tcp", "dport", "22", "counter", "return"},
		},
		ipt(VariantNFT),
		ipt(VariantLegacy),
	}
}

func testSettings() redirect.Settings {
	s := redirect.Defaults()
	s.ExcludeOutboundPorts = []uint16{9091}
	s.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("fd99::/64")}
	return s
}

func inNetns(t *testing.T, path string, fn func() error) {
	t.Helper()
	if err := InNetns(path, fn); err != nil {
		t.Fatal(err)
	}
}

func live(t *testing.T, path string, b Backend) []string {
	t.Helper()
	var l []string
	inNetns(t, path, func() (err error) { l, err = b.Live(); return err })
	return l
}

func TestApplyRemoveTamper(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bc := range backendCases() {
		t.Run(bc.name, func(t *testing.T) {
			name, path := newNetns(t)
			b := bc.new(t)
			rs := rules.Build(testSettings(), rules.IPv4, rules.IPv6)
			if l := live(t, path, b); len(l) != 0 {
				t.Fatalf("fresh netns: live rules %q", l)
			}
			for i := 0; i < 2; i++ {
				inNetns(t, path, func() error { return b.Apply(rs) })
			}
			want := b.Expected(rs)
			if d := rules.Diff(want, live(t, path, b)); d != nil {
				t.Fatalf("after applying twice, diff:\n%s", strings.Join(d, "\n"))
			}

			// Tampering: a deleted rule and a foreign rule both show in the diff.
			run(t, "ip", append([]string{"netns", "exec", name}, bc.delRule...)...)
			d := rules.Diff(want, live(t, path, b))
			if len(d) != 1 || !strings.HasPrefix(d[0], "-") || !strings.Contains(d[0], "15001") {
				t.Fatalf("after deleting the redirect rule, diff %q, want one -line naming 15001", d)
			}
			run(t, "ip", append([]string{"netns", "exec", name}, bc.addRule...)...)
			d = rules.Diff(want, live(t, path, b))
			if !slices.ContainsFunc(d, func(l string) bool { return strings.HasPrefix(l, "+") && strings.Contains(l, "22") }) {
				t.Fatalf("after adding a rule, diff %q has no +line with port 22", d)
			}
			// Apply repairs.
			inNetns(t, path, func() error { return b.Apply(rs) })
			if d := rules.Diff(want, live(t, path, b)); d != nil {
				t.Fatalf("after re-apply, diff:\n%s", strings.Join(d, "\n"))
			}
			// A failing Apply of other settings changes nothing.
			other := testSettings()
			other.OutboundCapturePort = 16001
			bc.break_(b)
			err := InNetns(path, func() error { return b.Apply(rules.Build(other, rules.IPv4, rules.IPv6)) })
			if err == nil {
				t.Fatal("broken Apply succeeded")
			}
			if d := rules.Diff(want, live(t, path, b)); d != nil {
				t.Fatalf("after a failed Apply, diff:\n%s", strings.Join(d, "\n"))
			}
			// Remove cleans, and is idempotent.
			for i := 0; i < 2; i++ {
				inNetns(t, path, b.Remove)
				if l := live(t, path, b); len(l) != 0 {
					t.Fatalf("after Remove %d: live %q", i+1, l)
				}
			}
			// A failing Apply in a clean netns leaves nothing.
			err = InNetns(path, func() error { return b.Apply(rs) })
			if err == nil {
				t.Fatal("broken Apply succeeded")
			}
			if l := live(t, path, b); len(l) != 0 {
				t.Fatalf("after a failed Apply in a clean netns: live %q", l)
			}
		})
	}
}

// TestFamiliesFollowRuleset: re-applying without IPv6 removes our IPv6 rules, and back.
func TestFamiliesFollowRuleset(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bc := range backendCases() {
		t.Run(bc.name, func(t *testing.T) {
			_, path := newNetns(t)
			b := bc.new(t)
			for _, fams := range [][]rules.Family{{rules.IPv4, rules.IPv6}, {rules.IPv4}, {rules.IPv4, rules.IPv6}} {
				rs := rules.Build(testSettings(), fams...)
				inNetns(t, path, func() error { return b.Apply(rs) })
				if d := rules.Diff(b.Expected(rs), live(t, path, b)); d != nil {
					t.Fatalf("families %v: diff:\n%s", fams, strings.Join(d, "\n"))
				}
			}
			inNetns(t, path, b.Remove)
		})
	}
}

// TestNFTTextIsValid: the readable nftables text of every family is accepted by nft itself.
func TestNFTTextIsValid(t *testing.T) {
	testenv.RequireRoot(t)
	name, _ := newNetns(t)
	rs := rules.Build(testSettings(), rules.IPv4, rules.IPv6)
	for _, f := range rs.Families {
		cmd := exec.Command("ip", "netns", "exec", name, "nft", "-c", "-f", "-")
		cmd.Stdin = strings.NewReader(rs.NFT(f).Text())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("nft -c rejects the %s text: %v\n%s\n%s", f, err, out, rs.NFT(f).Text())
		}
	}
}

func TestInNetnsErrors(t *testing.T) {
	err := InNetns("/nonexistent/netns", func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Fatalf("err = %v, want one naming the path", err)
	}
	testenv.RequireRoot(t)
	_, path := newNetns(t)
	sentinel := errors.New("boom")
	err = InNetns(path, func() error { return sentinel })
	if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want the wrapped sentinel naming %s", err, path)
	}
}

// TestNFTablesStaleIPv6Table: an IPv6 table left behind (without an IPv4 one) is removed by an
// IPv4-only Apply.
func TestNFTablesStaleIPv6Table(t *testing.T) {
	testenv.RequireRoot(t)
	name, path := newNetns(t)
	b := newNFTables()
	run(t, "ip", "netns", "exec", name, "nft", "add", "table", "ip6", "sidelane")
	rs := rules.Build(testSettings(), rules.IPv4)
	inNetns(t, path, func() error { return b.Apply(rs) })
	if d := rules.Diff(b.Expected(rs), live(t, path, b)); d != nil {
		t.Fatalf("diff:\n%s", strings.Join(d, "\n"))
	}
}

// TestNFTablesPolicyTamper: a base chain's policy changed to drop shows in the diff.
func TestNFTablesPolicyTamper(t *testing.T) {
	testenv.RequireRoot(t)
	name, path := newNetns(t)
	b := newNFTables()
	rs := rules.Build(testSettings(), rules.IPv4)
	inNetns(t, path, func() error { return b.Apply(rs) })
	run(t, "ip", "netns", "exec", name, "nft", "chain ip sidelane output { policy drop ; }")
	d := rules.Diff(b.Expected(rs), live(t, path, b))
	if !slices.ContainsFunc(d, func(l string) bool { return strings.HasPrefix(l, "+") && strings.Contains(l, "policy drop") }) {
		t.Fatalf("diff %q does not show the drop policy", d)
	}
}

// TestPassthroughAddress: an IPv6 Apply gives lo ::6/128, usable at once (not tentative).
func TestPassthroughAddress(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bc := range backendCases()[:2] {
		t.Run(bc.name, func(t *testing.T) {
			name, path := newNetns(t)
			b := bc.new(t)
			inNetns(t, path, func() error { return b.Apply(rules.Build(testSettings(), rules.IPv4, rules.IPv6)) })
			out := run(t, "ip", "-n", name, "-6", "addr", "show", "dev", "lo")
			if !strings.Contains(out, "inet6 ::6/128") || strings.Contains(out, "tentative") {
				t.Fatalf("lo after Apply:\n%s", out)
			}
		})
	}
}
