package rules

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// knobs are the redirect settings the golden files cover: one per annotation, from annotations.
var knobs = []struct {
	name string
	ann  map[string]string
}{
	{"defaults", nil},
	{"inbound-list", map[string]string{contract.AnnotationInboundPorts: "8080,9090,15021"}},
	{"inbound-none", map[string]string{contract.AnnotationInboundPorts: ""}},
	{"exclude-inbound", map[string]string{contract.AnnotationExcludeInboundPorts: "22,8443"}},
	{"outbound-cidrs", map[string]string{contract.AnnotationOutboundCIDRs: "10.96.0.0/12,192.168.1.7,fd00:10::/64"}},
	{"outbound-none", map[string]string{contract.AnnotationOutboundCIDRs: ""}},
	{"exclude-cidrs", map[string]string{contract.AnnotationExcludeOutboundCIDRs: "169.254.169.254/32,10.0.0.0/8,fd00::/8"}},
	{"exclude-ports", map[string]string{contract.AnnotationExcludeOutboundPorts: "3306,5432"}},
	{"custom-uid-gid", map[string]string{contract.AnnotationProxyUID: "2000", contract.AnnotationProxyGID: "3000"}},
	{"custom-capture-ports", map[string]string{contract.AnnotationInboundCapturePort: "16006", contract.AnnotationOutboundCapturePort: "16001"}},
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if d := Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); d != nil {
		t.Errorf("%s differs from the rendering (-golden +got):\n%s", path, strings.Join(d, "\n"))
	}
}

func TestGolden(t *testing.T) {
	for _, k := range knobs {
		t.Run(k.name, func(t *testing.T) {
			s, err := redirect.FromAnnotations(k.ann)
			if err != nil {
				t.Fatal(err)
			}
			rs := Build(s, IPv4, IPv6)
			var ipt, nft strings.Builder
			for _, f := range rs.Families {
				ipt.WriteString("# " + f.String() + "\n" + rs.IPTablesRestore(f))
				nft.WriteString("# " + f.String() + "\n" + rs.NFT(f).Text())
			}
			golden(t, k.name+".iptables.golden", ipt.String())
			golden(t, k.name+".nft.golden", nft.String())
		})
	}
}

func TestBuildFamilies(t *testing.T) {
	for _, tc := range []struct {
		in   []Family
		want []Family
	}{
		{nil, []Family{IPv4}},
		{[]Family{IPv4}, []Family{IPv4}},
		{[]Family{IPv6}, []Family{IPv4, IPv6}},
		{[]Family{IPv6, IPv4, IPv6}, []Family{IPv4, IPv6}},
		{[]Family{Family(5)}, []Family{IPv4}},
	} {
		if got := Build(redirect.Defaults(), tc.in...).Families; !slices.Equal(got, tc.want) {
			t.Errorf("Build(%v).Families = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestFamilySeparation checks that a family's rules never mention the other family's addresses.
func TestFamilySeparation(t *testing.T) {
	s, err := redirect.FromAnnotations(map[string]string{
		contract.AnnotationOutboundCIDRs:        "10.0.0.0/8,fd00::/8",
		contract.AnnotationExcludeOutboundCIDRs: "10.1.0.0/16,fd00:1::/32",
	})
	if err != nil {
		t.Fatal(err)
	}
	rs := Build(s, IPv6)
	for _, tc := range []struct {
		f       Family
		has, no []string
	}{
		{IPv4, []string{"10.0.0.0/8", "10.1.0.0/16", "127.0.0.6/32", "127.0.0.1/32"}, []string{"fd00", "::"}},
		{IPv6, []string{"fd00::/8", "fd00:1::/32", "::6/128", "::1/128"}, []string{"10.", "127."}},
	} {
		text := rs.IPTablesRestore(tc.f)
		for _, h := range tc.has {
			if !strings.Contains(text, h) {
				t.Errorf("%s rules lack %s:\n%s", tc.f, h, text)
			}
		}
		for _, n := range tc.no {
			if strings.Contains(text, n) {
				t.Errorf("%s rules mention %s:\n%s", tc.f, n, text)
			}
		}
	}
}

// TestEveryRuleHasAComment: every rule carries a self-describing comment.
func TestEveryRuleHasAComment(t *testing.T) {
	for _, k := range knobs {
		s, err := redirect.FromAnnotations(k.ann)
		if err != nil {
			t.Fatal(err)
		}
		rs := Build(s, IPv4, IPv6)
		for _, f := range rs.Families {
			for _, c := range rs.Chains(f) {
				for _, r := range c.Rules {
					if !strings.HasPrefix(r.Comment, "sidelane: ") {
						t.Errorf("%s %s %s: rule %+v has no comment", k.name, f, c.Name, r)
					}
				}
			}
		}
	}
}

func TestInboundListSkipsExcluded(t *testing.T) {
	s, err := redirect.FromAnnotations(map[string]string{
		contract.AnnotationInboundPorts:        "8080,15090",
		contract.AnnotationExcludeInboundPorts: "8080",
	})
	if err != nil {
		t.Fatal(err)
	}
	text := Build(s).IPTablesRestore(IPv4)
	if strings.Contains(text, "--dport 8080 -m comment --comment \"sidelane: capture") || strings.Contains(text, "--dport 15090 -m comment --comment \"sidelane: capture") {
		t.Errorf("an excluded port is captured:\n%s", text)
	}
}

func TestIPTablesRestoreReplacing(t *testing.T) {
	old := `-A OUTPUT -p tcp -m comment --comment "sidelane: outbound tcp" -j SIDELANE_OUTBOUND`
	text := Build(redirect.Defaults()).IPTablesRestoreReplacing(IPv4, []string{old})
	lines := strings.Split(text, "\n")
	del := slices.Index(lines, `-D OUTPUT -p tcp -m comment --comment "sidelane: outbound tcp" -j SIDELANE_OUTBOUND`)
	add := slices.Index(lines, old)
	if del < 0 || add < 0 || del > add {
		t.Fatalf("want the old jump deleted before it is added again:\n%s", text)
	}
	if lines[0] != "*nat" || lines[len(lines)-2] != "COMMIT" {
		t.Fatalf("not a nat table transaction:\n%s", text)
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name           string
		expected, live []string
		want           []string
	}{
		{"equal", []string{"a", "b"}, []string{"a", "b"}, nil},
		{"both empty", nil, nil, nil},
		{"missing", []string{"a", "b", "c"}, []string{"a", "c"}, []string{"-b"}},
		{"extra", []string{"a", "c"}, []string{"a", "x", "c"}, []string{"+x"}},
		{"none live", []string{"a", "b"}, nil, []string{"-a", "-b"}},
		{"none expected", nil, []string{"a"}, []string{"+a"}},
		{"moved", []string{"a", "b", "c"}, []string{"b", "a", "c"}, []string{"+b", "-b"}},
		{"duplicate", []string{"a"}, []string{"a", "a"}, []string{"+a"}},
		{"changed", []string{"a", "b"}, []string{"a", "B"}, []string{"+B", "-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.expected, tc.live)
			if !slices.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Errorf("Diff(%q, %q) = %q, want %q", tc.expected, tc.live, got, tc.want)
			}
		})
	}
}

func TestNFTLines(t *testing.T) {
	tbl := Build(redirect.Defaults()).NFT(IPv4)
	lines := tbl.Lines()
	if lines[0] != "table ip sidelane" {
		t.Fatalf("first line %q", lines[0])
	}
	want := `rule ip sidelane out_redirect meta l4proto tcp redirect to :15001 comment "sidelane: redirect to outbound capture port 15001"`
	if !slices.Contains(lines, want) {
		t.Errorf("lines lack %q:\n%s", want, strings.Join(lines, "\n"))
	}
}
