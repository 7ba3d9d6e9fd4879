// Package rules builds the redirect ruleset of one sidecar pod as a pure value and renders it
// for the two capture backends: iptables-restore input (nat table) and an nftables description
// (tables, chains and rules as data, plus a readable text form).
//
// The package is pure: no syscalls, no network namespaces, no exec. Package capture applies a
// Ruleset inside a network namespace and reads it back.
//
// Semantics (docs/design.md "Traffic classes"), NAT REDIRECT in the style of istio-iptables and
// linkerd proxy-init, identical for both backends and mirrored for IPv6:
//
//	prerouting (hook): tcp → inbound
//	inbound:           excluded inbound ports return; captured ports (or all) → in_redirect
//	in_redirect:       tcp → redirect to InboundCapturePort
//	output (hook):     tcp → outbound
//	outbound:          from 127.0.0.6 (::6) via lo return        (proxy's inbound passthrough)
//	                   proxy uid/gid via lo to a non-loopback destination → inbound
//	                                                             (app → own pod IP, second leg)
//	                   proxy uid/gid return                      (proxy's own traffic)
//	                   to 127.0.0.1 (::1) return                 (app → localhost)
//	                   excluded ports and CIDRs return
//	                   captured CIDRs (or all) → out_redirect
//	out_redirect:      tcp → redirect to OutboundCapturePort
//
// The application's own connections to its pod IP leave through lo and are captured outbound
// like any other destination; the proxy's onward connection to the pod IP (uid 1337 via lo) is
// then sent through the inbound chain, and the proxy's final hop from 127.0.0.6 returns.
package rules

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

// Family is an IP family.
type Family int

// The IP families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// Logical chain names. The nftables backend uses them as they are; iptables prefixes them with
// contract.IPTablesChainPrefix and upper-cases them. The two hook chains are nftables base
// chains, and iptables' built-in PREROUTING and OUTPUT chains.
const (
	ChainPrerouting  = "prerouting"
	ChainOutput      = "output"
	ChainInbound     = "inbound"
	ChainInRedirect  = "in_redirect"
	ChainOutbound    = "outbound"
	ChainOutRedirect = "out_redirect"
)

// MatchKind is what a Match tests.
type MatchKind int

// The kinds of match the rules use.
const (
	MatchTCP     MatchKind = iota + 1 // layer-4 protocol is TCP
	MatchDstPort                      // TCP destination port == Port
	MatchDst                          // destination address in Prefix
	MatchSrc                          // source address in Prefix
	MatchOutLo                        // output interface is lo
	MatchUID                          // socket owner uid == ID
	MatchGID                          // socket owner gid == ID
	// MatchRaw is an expression the nftables backend read back from the kernel and could not
	// map to one of the kinds above (someone else's rule); Raw describes it.
	MatchRaw
)

// Match is one condition of a rule. Negate inverts it.
type Match struct {
	Kind   MatchKind
	Negate bool
	Port   uint16
	Prefix netip.Prefix
	ID     uint32
	Raw    string
}

// VerdictKind is what a rule does when it matches.
type VerdictKind int

// The verdicts the rules use.
const (
	VerdictReturn   VerdictKind = iota + 1 // leave the chain
	VerdictJump                            // jump to Chain
	VerdictRedirect                        // REDIRECT to Port on the local host
	// VerdictRaw is a verdict read back from the kernel that is none of the above; Raw describes it.
	VerdictRaw
)

// Verdict is a rule's action.
type Verdict struct {
	Kind  VerdictKind
	Chain string // VerdictJump
	Port  uint16 // VerdictRedirect
	Raw   string // VerdictRaw
}

// Rule is one rule: all of Matches, then Verdict. Comment describes it and is installed with it.
type Rule struct {
	Matches []Match
	Verdict Verdict
	Comment string
}

// Chain is a chain of rules. Hook is "prerouting" or "output" for the two entry chains and
// empty for the others.
type Chain struct {
	Name  string
	Hook  string
	Rules []Rule
}

// Ruleset is the complete redirect ruleset for one pod: a pure value.
type Ruleset struct {
	Settings redirect.Settings
	// Families holds IPv4 always, and IPv6 when the pod has an IPv6 address.
	Families []Family
}

// Build returns the ruleset of settings s for the given families. IPv4 is always included;
// duplicates and unknown families are ignored; the result is ordered IPv4, IPv6.
func Build(s redirect.Settings, families ...Family) Ruleset {
	fams := []Family{IPv4}
	if slices.Contains(families, IPv6) {
		fams = append(fams, IPv6)
	}
	return Ruleset{Settings: s, Families: fams}
}

// Has reports whether the ruleset covers family f.
func (r Ruleset) Has(f Family) bool { return slices.Contains(r.Families, f) }

// loopback is 127.0.0.1/32 or ::1/128.
func loopback(f Family) netip.Prefix {
	if f == IPv6 {
		return netip.MustParsePrefix("::1/128")
	}
	return netip.MustParsePrefix("127.0.0.1/32")
}

// passthrough is the proxy's inbound passthrough source, 127.0.0.6/32 or ::6/128.
func passthrough(f Family) netip.Prefix {
	a := netip.MustParseAddr(contract.InboundPassthroughIPv4)
	if f == IPv6 {
		a = netip.MustParseAddr(contract.InboundPassthroughIPv6)
	}
	return netip.PrefixFrom(a, a.BitLen())
}

func ofFamily(ps []netip.Prefix, f Family) []netip.Prefix {
	if f == IPv6 {
		return redirect.V6(ps)
	}
	return redirect.V4(ps)
}

// Chains returns the chains of family f in a fixed order: the two hook chains, then inbound,
// in_redirect, outbound, out_redirect.
func (r Ruleset) Chains(f Family) []Chain {
	s := r.Settings
	tcp := Match{Kind: MatchTCP}
	port := func(p uint16) Match { return Match{Kind: MatchDstPort, Port: p} }
	dst := func(p netip.Prefix) []Match {
		if p.Bits() == 0 { // the whole family: no address match needed
			return nil
		}
		return []Match{{Kind: MatchDst, Prefix: p}}
	}
	jump := func(c string) Verdict { return Verdict{Kind: VerdictJump, Chain: c} }
	ret := Verdict{Kind: VerdictReturn}

	var inbound []Rule
	inboundCaptures := s.InboundAll || len(s.InboundPorts) > 0
	if inboundCaptures {
		for _, p := range s.ExcludeInboundPorts {
			inbound = append(inbound, Rule{[]Match{tcp, port(p)}, ret, fmt.Sprintf("sidelane: inbound port %d excluded", p)})
		}
		if s.InboundAll {
			inbound = append(inbound, Rule{[]Match{tcp}, jump(ChainInRedirect), "sidelane: capture inbound, all ports"})
		} else {
			for _, p := range s.InboundPorts {
				if slices.Contains(s.ExcludeInboundPorts, p) {
					continue
				}
				inbound = append(inbound, Rule{[]Match{tcp, port(p)}, jump(ChainInRedirect), fmt.Sprintf("sidelane: capture inbound port %d", p)})
			}
		}
	}

	lo := Match{Kind: MatchOutLo}
	notLoopback := Match{Kind: MatchDst, Negate: true, Prefix: loopback(f)}
	uid := Match{Kind: MatchUID, ID: s.ProxyUID}
	gid := Match{Kind: MatchGID, ID: s.ProxyGID}
	outbound := []Rule{
		{[]Match{tcp, {Kind: MatchSrc, Prefix: passthrough(f)}, lo}, ret, "sidelane: proxy inbound passthrough"},
		{[]Match{tcp, notLoopback, lo, uid}, jump(ChainInbound), "sidelane: proxy uid to own pod ip via inbound"},
		{[]Match{tcp, notLoopback, lo, gid}, jump(ChainInbound), "sidelane: proxy gid to own pod ip via inbound"},
		{[]Match{tcp, uid}, ret, "sidelane: proxy uid own traffic"},
		{[]Match{tcp, gid}, ret, "sidelane: proxy gid own traffic"},
		{[]Match{tcp, {Kind: MatchDst, Prefix: loopback(f)}}, ret, "sidelane: localhost not captured"},
	}
	for _, p := range s.ExcludeOutboundPorts {
		outbound = append(outbound, Rule{[]Match{tcp, port(p)}, ret, fmt.Sprintf("sidelane: outbound port %d excluded", p)})
	}
	for _, c := range ofFamily(s.ExcludeOutboundCIDRs, f) {
		outbound = append(outbound, Rule{append([]Match{tcp}, dst(c)...), ret, "sidelane: outbound cidr " + c.String() + " excluded"})
	}
	if s.OutboundAll {
		outbound = append(outbound, Rule{[]Match{tcp}, jump(ChainOutRedirect), "sidelane: capture outbound, all destinations"})
	} else {
		for _, c := range ofFamily(s.OutboundCIDRs, f) {
			outbound = append(outbound, Rule{append([]Match{tcp}, dst(c)...), jump(ChainOutRedirect), "sidelane: capture outbound cidr " + c.String()})
		}
	}

	return []Chain{
		{Name: ChainPrerouting, Hook: "prerouting", Rules: []Rule{{[]Match{tcp}, jump(ChainInbound), "sidelane: inbound tcp"}}},
		{Name: ChainOutput, Hook: "output", Rules: []Rule{{[]Match{tcp}, jump(ChainOutbound), "sidelane: outbound tcp"}}},
		{Name: ChainInbound, Rules: inbound},
		{Name: ChainInRedirect, Rules: []Rule{{[]Match{tcp}, Verdict{Kind: VerdictRedirect, Port: s.InboundCapturePort}, fmt.Sprintf("sidelane: redirect to inbound capture port %d", s.InboundCapturePort)}}},
		{Name: ChainOutbound, Rules: outbound},
		{Name: ChainOutRedirect, Rules: []Rule{{[]Match{tcp}, Verdict{Kind: VerdictRedirect, Port: s.OutboundCapturePort}, fmt.Sprintf("sidelane: redirect to outbound capture port %d", s.OutboundCapturePort)}}},
	}
}
