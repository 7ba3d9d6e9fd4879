package capture

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// TestEncodeDecodeRoundTrip: every rule of every family decodes back to itself, so that
// Live (decoded from the kernel) and Expected (the model) compare equal.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	s := redirect.Defaults()
	s.InboundAll, s.InboundPorts = false, []uint16{80, 8080}
	s.OutboundAll = false
	s.OutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("fd00::/13")}
	s.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("192.168.0.0/17"), netip.MustParsePrefix("::/0")}
	s.ExcludeOutboundPorts = []uint16{1, 65535}
	for _, set := range []redirect.Settings{redirect.Defaults(), s} {
		rs := rules.Build(set, rules.IPv4, rules.IPv6)
		for _, f := range rs.Families {
			for _, c := range rs.Chains(f) {
				for _, r := range c.Rules {
					exprs, err := encodeRule(f, r)
					if err != nil {
						t.Fatalf("%s %s: %v", f, c.Name, err)
					}
					got := decodeRule(f, exprs)
					got.Comment = r.Comment
					if !reflect.DeepEqual(got, r) {
						t.Errorf("%s %s: decoded %+v, want %+v", f, c.Name, got, r)
					}
				}
			}
		}
	}
}

// TestDecodeForeign: expressions we never write show up as raw text in the listing.
func TestDecodeForeign(t *testing.T) {
	r := decodeRule(rules.IPv4, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{17}}, // udp
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	})
	text := rules.NFTRuleText("ip", r)
	for _, want := range []string{"Meta", "Counter", "verdict"} {
		if !strings.Contains(text, want) {
			t.Errorf("decoded foreign rule %q lacks %q", text, want)
		}
	}
}

func TestEncodeRejectsWrongFamily(t *testing.T) {
	_, err := encodeRule(rules.IPv4, rules.Rule{
		Matches: []rules.Match{{Kind: rules.MatchDst, Prefix: netip.MustParsePrefix("fd00::/8")}},
		Verdict: rules.Verdict{Kind: rules.VerdictReturn},
	})
	if err == nil || !strings.Contains(err.Error(), "fd00::/8") {
		t.Fatalf("err = %v, want one naming the address", err)
	}
}
