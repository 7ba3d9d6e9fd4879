package capture

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// fakeExec answers commands from a table and records what ran; unknown commands fail like a
// missing binary.
type fakeExec struct {
	out   map[string]string // "name args..." → stdout
	fail  map[string]bool   // commands that fail
	calls []string
	stdin []string
}

func (f *fakeExec) Run(stdin, name string, args ...string) (string, error) {
	cmd := strings.TrimSpace(name + " " + strings.Join(args, " "))
	f.calls = append(f.calls, cmd)
	f.stdin = append(f.stdin, stdin)
	if f.fail[cmd] {
		return "", fmt.Errorf("%s: exit status 1", cmd)
	}
	if out, ok := f.out[cmd]; ok {
		return out, nil
	}
	// A fixture of a whole save also answers for one table (fixtures hold few tables).
	if base, ok := strings.CutSuffix(cmd, " -t mangle"); ok {
		if out, ok := f.out[base]; ok {
			return out, nil
		}
	}
	return "", fmt.Errorf("%s: %w", cmd, errors.New("executable file not found"))
}

const kubeletHint = `*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
`

const kubeProxy = `*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
`

// ours is a host table that holds only our own chains (as if a buggy earlier run had written
// into the host's namespace): detection must ignore it.
const ours = `*nat
:PREROUTING ACCEPT [0:0]
:SIDELANE_INBOUND - [0:0]
:SIDELANE_OUTBOUND - [0:0]
-A PREROUTING -p tcp -j SIDELANE_INBOUND
-A SIDELANE_INBOUND -p tcp -j RETURN
COMMIT
`

func TestDetectVariant(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     map[string]string
		want    Variant
		wantErr string
	}{
		{"kubelet hint in nft", map[string]string{"iptables-nft-save": kubeletHint, "iptables-legacy-save": ""}, VariantNFT, ""},
		{"kubelet hint in legacy", map[string]string{"iptables-nft-save": "", "iptables-legacy-save": kubeletHint}, VariantLegacy, ""},
		{"hint in legacy beats rules in nft", map[string]string{"iptables-nft-save": kubeProxy, "iptables-legacy-save": kubeletHint}, VariantLegacy, ""},
		{"kube-proxy chains in legacy", map[string]string{"iptables-nft-save": "", "iptables-legacy-save": kubeProxy}, VariantLegacy, ""},
		{"hint in both prefers nft", map[string]string{"iptables-nft-save": kubeletHint, "iptables-legacy-save": kubeletHint}, VariantNFT, ""},
		{"our own chains are ignored (legacy host)", map[string]string{"iptables-nft-save": ours, "iptables-legacy-save": "", "iptables --version": "iptables v1.8.9 (legacy)\n"}, VariantLegacy, ""},
		{"our own chains are ignored (nft host)", map[string]string{"iptables-nft-save": "", "iptables-legacy-save": ours, "iptables --version": "iptables v1.8.9 (nf_tables)\n"}, VariantNFT, ""},
		{"legacy save missing", map[string]string{"iptables-nft-save": kubeletHint}, VariantNFT, ""},
		{"fallback to version nft", map[string]string{"iptables-nft-save": "", "iptables-legacy-save": "", "iptables --version": "iptables v1.8.9 (nf_tables)\n"}, VariantNFT, ""},
		{"fallback to version legacy", map[string]string{"iptables --version": "iptables v1.8.7 (legacy)\n"}, VariantLegacy, ""},
		{"no iptables at all", map[string]string{}, "", "no kubernetes chains found"},
		{"odd version", map[string]string{"iptables --version": "iptables v1.4.21\n"}, "", "unrecognised"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := detectVariant(&fakeExec{out: tc.out})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("detectVariant = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestDetectVariantStable: the answer does not change after our rules exist (istio #61019).
func TestDetectVariantStable(t *testing.T) {
	fe := &fakeExec{out: map[string]string{"iptables-nft-save": "", "iptables-legacy-save": "", "iptables --version": "iptables v1.8.9 (legacy)\n"}}
	first, err := detectVariant(fe)
	if err != nil {
		t.Fatal(err)
	}
	// Our earlier run left rules in the other variant, more than anyone else's.
	fe.out["iptables-nft-save"] = ours + strings.Repeat("-A SIDELANE_INBOUND -j RETURN\n", 50)
	second, err := detectVariant(fe)
	if err != nil || second != first {
		t.Fatalf("detection changed after our own rules appeared: %q then %q (%v)", first, second, err)
	}
}

func TestNewIPTablesVariant(t *testing.T) {
	if _, err := newIPTables("bogus", &fakeExec{}); err == nil || !strings.Contains(err.Error(), `"bogus"`) {
		t.Fatalf("err = %v, want one naming the variant", err)
	}
	b, err := newIPTables(VariantAuto, &fakeExec{out: map[string]string{"iptables-legacy-save": kubeletHint}})
	if err != nil || b.Variant() != VariantLegacy {
		t.Fatalf("auto: %v %v", b, err)
	}
}

func TestNew(t *testing.T) {
	for _, name := range []string{"auto", "nftables"} {
		b, err := New(name)
		if err != nil || b.Name() != "nftables" {
			t.Errorf("New(%q) = %v, %v", name, b, err)
		}
	}
	for _, bad := range []string{"", "ipvs", "NFTABLES"} {
		_, err := New(bad)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("New(%q) err = %v, want one naming the value", bad, err)
		}
	}
}

// TestIPTablesApplyFake checks the transactions the backend sends, without forking.
func TestIPTablesApplyFake(t *testing.T) {
	rs := rules.Build(redirect.Defaults(), rules.IPv4)
	prev := "*nat\n:PREROUTING ACCEPT [3:180]\n:OUTPUT ACCEPT [0:0]\n:SIDELANE_INBOUND - [0:0]\n:SIDELANE_OLD - [0:0]\n" +
		"-A PREROUTING -p tcp -m comment --comment \"sidelane: inbound tcp\" -j SIDELANE_INBOUND\n-A OUTPUT -j KEEP\nCOMMIT\n"
	fe := &fakeExec{out: map[string]string{
		"iptables-nft-save -t nat":        prev,
		"ip6tables-nft-save -t nat":       "*nat\n:SIDELANE_OUTBOUND - [0:0]\n-A OUTPUT -p tcp -j SIDELANE_OUTBOUND\nCOMMIT\n",
		"iptables-nft-restore --noflush":  "",
		"ip6tables-nft-restore --noflush": "",
	}}
	b, err := newIPTables(VariantNFT, fe)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(rs); err != nil {
		t.Fatal(err)
	}
	i4 := slices.Index(fe.calls, "iptables-nft-restore --noflush")
	i6 := slices.Index(fe.calls, "ip6tables-nft-restore --noflush")
	if i4 < 0 || i6 < 0 {
		t.Fatalf("calls %q", fe.calls)
	}
	in4 := fe.stdin[i4]
	for _, want := range []string{
		"-D PREROUTING -p tcp -m comment --comment \"sidelane: inbound tcp\" -j SIDELANE_INBOUND\n",
		"-A PREROUTING -p tcp -m comment --comment \"sidelane: inbound tcp\" -j SIDELANE_INBOUND\n",
		":SIDELANE_OLD - [0:0]\n-X SIDELANE_OLD\n",
	} {
		if !strings.Contains(in4, want) {
			t.Errorf("IPv4 restore input lacks %q:\n%s", want, in4)
		}
	}
	if strings.Contains(in4, "KEEP") {
		t.Errorf("IPv4 restore touches a foreign rule:\n%s", in4)
	}
	// The ruleset has no IPv6: our IPv6 rules are removed.
	in6 := fe.stdin[i6]
	for _, want := range []string{"-D OUTPUT -p tcp -j SIDELANE_OUTBOUND\n", "-X SIDELANE_OUTBOUND\n"} {
		if !strings.Contains(in6, want) {
			t.Errorf("IPv6 restore input lacks %q:\n%s", want, in6)
		}
	}
}

// TestIPTablesApplyRollsBack: when the second family fails, the first is removed again.
func TestIPTablesApplyRollsBack(t *testing.T) {
	fe := &fakeExec{
		out: map[string]string{
			"iptables-legacy-save -t nat":                 "*nat\n:SIDELANE_INBOUND - [0:0]\nCOMMIT\n",
			"ip6tables-legacy-save -t nat":                "",
			"iptables-legacy-restore --noflush --wait=30": "",
		},
		fail: map[string]bool{"ip6tables-legacy-restore --noflush --wait=30": true},
	}
	b, err := newIPTables(VariantLegacy, fe)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Apply(rules.Build(redirect.Defaults(), rules.IPv4, rules.IPv6))
	if err == nil || !strings.Contains(err.Error(), "ipv6") {
		t.Fatalf("err = %v, want the IPv6 failure", err)
	}
	var restores []string
	for i, c := range fe.calls {
		if c == "iptables-legacy-restore --noflush --wait=30" {
			restores = append(restores, fe.stdin[i])
		}
	}
	if len(restores) != 2 || !strings.Contains(restores[1], "-X SIDELANE_INBOUND") {
		t.Fatalf("want an IPv4 apply then an IPv4 removal, got %q", restores)
	}
}

func TestParseSaveCanonical(t *testing.T) {
	// nft and legacy print chains in different orders; the listing does not depend on it.
	a := parseSave("*nat\n:SIDELANE_B - [5:300]\n:SIDELANE_A - [0:0]\n-A SIDELANE_B -j RETURN\n-A OUTPUT -j SIDELANE_B\n-A SIDELANE_A -j RETURN\nCOMMIT\n")
	b := parseSave("*nat\n:SIDELANE_A - [0:0]\n:SIDELANE_B - [0:0]\n-A OUTPUT -j SIDELANE_B\n-A SIDELANE_A -j RETURN\n-A SIDELANE_B -j RETURN\nCOMMIT\n")
	if d := rules.Diff(a.lines, b.lines); d != nil {
		t.Fatalf("listings differ: %q", d)
	}
	want := []string{":SIDELANE_A - [0:0]", ":SIDELANE_B - [0:0]", "-A OUTPUT -j SIDELANE_B", "-A SIDELANE_A -j RETURN", "-A SIDELANE_B -j RETURN"}
	if !slices.Equal(a.lines, want) {
		t.Fatalf("lines %q, want %q", a.lines, want)
	}
}

// TestDetectVariantCheap: on an nft host with kubelet's hint, one small read decides; the
// legacy save is never asked for a table (that would load it into the host's kernel).
func TestDetectVariantCheap(t *testing.T) {
	fe := &fakeExec{out: map[string]string{"iptables-nft-save -t mangle": kubeletHint}}
	if v, err := detectVariant(fe); err != nil || v != VariantNFT {
		t.Fatalf("detectVariant = %q, %v", v, err)
	}
	if !slices.Equal(fe.calls, []string{"iptables-nft-save -t mangle"}) {
		t.Fatalf("calls %q, want only the mangle read", fe.calls)
	}
	fe = &fakeExec{out: map[string]string{"iptables --version": "iptables v1.8.9 (legacy)"}}
	if _, err := detectVariant(fe); err != nil {
		t.Fatal(err)
	}
	for _, c := range fe.calls {
		if strings.HasPrefix(c, "iptables-legacy-save ") {
			t.Errorf("legacy save with a table: %q", c)
		}
	}
}
