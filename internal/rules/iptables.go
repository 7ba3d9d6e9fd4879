package rules

import (
	"fmt"
	"strings"

	"github.com/sidelane/sidelane/internal/contract"
)

// IPTablesChain is the iptables name of logical chain c: the built-in PREROUTING and OUTPUT
// for the hook chains, contract.IPTablesChainPrefix + upper case for the others.
func IPTablesChain(c string) string {
	switch c {
	case ChainPrerouting:
		return "PREROUTING"
	case ChainOutput:
		return "OUTPUT"
	}
	return contract.IPTablesChainPrefix + strings.ToUpper(c)
}

// IPTablesChains returns the names of our own (non built-in) chains of the nat table, in the
// order IPTablesRestore declares them.
func (r Ruleset) IPTablesChains() []string {
	var out []string
	for _, c := range r.Chains(IPv4) {
		if c.Hook == "" {
			out = append(out, IPTablesChain(c.Name))
		}
	}
	return out
}

// IPTablesDeclarations returns the chain declaration lines (":SIDELANE_X - [0:0]") of our chains.
// With --noflush, a declaration creates the chain, or flushes it when it exists.
func (r Ruleset) IPTablesDeclarations() []string {
	var out []string
	for _, c := range r.IPTablesChains() {
		out = append(out, ":"+c+" - [0:0]")
	}
	return out
}

// IPTablesRules returns the "-A CHAIN ..." lines of family f, in the canonical form
// iptables-save prints them (so that a listing read back compares equal), chain by chain.
func (r Ruleset) IPTablesRules(f Family) []string {
	var out []string
	for _, c := range r.Chains(f) {
		for _, rule := range c.Rules {
			out = append(out, IPTablesRule(IPTablesChain(c.Name), rule))
		}
	}
	return out
}

// IPTablesRestore returns the input of iptables-restore (IPv4) or ip6tables-restore (IPv6)
// for family f: the nat table only, to be used with --noflush, touching only our chains
// (declared, hence created or flushed) and appending the jumps from PREROUTING and OUTPUT.
// Jumps left by an earlier run must be deleted first: see IPTablesRestoreReplacing.
func (r Ruleset) IPTablesRestore(f Family) string {
	return r.IPTablesRestoreReplacing(f, nil)
}

// IPTablesRestoreReplacing is IPTablesRestore with deleteFirst, rules as printed by
// iptables-save (e.g. our earlier jumps from PREROUTING/OUTPUT), deleted in the same
// transaction before the new rules are added, so that a re-apply leaves exactly one copy.
func (r Ruleset) IPTablesRestoreReplacing(f Family, deleteFirst []string) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, d := range r.IPTablesDeclarations() {
		b.WriteString(d + "\n")
	}
	for _, d := range deleteFirst {
		b.WriteString("-D " + strings.TrimPrefix(d, "-A ") + "\n")
	}
	for _, l := range r.IPTablesRules(f) {
		b.WriteString(l + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// IPTablesRule renders one rule of chain in iptables-save's canonical option order:
// addresses, interface, protocol, owner, tcp, comment, target.
func IPTablesRule(chain string, rule Rule) string {
	parts := []string{"-A", chain}
	not := func(m Match) []string {
		if m.Negate {
			return []string{"!"}
		}
		return nil
	}
	for _, kind := range []MatchKind{MatchSrc, MatchDst, MatchOutLo, MatchTCP} {
		for _, m := range rule.Matches {
			if m.Kind != kind {
				continue
			}
			parts = append(parts, not(m)...)
			switch kind {
			case MatchSrc:
				parts = append(parts, "-s", m.Prefix.String())
			case MatchDst:
				parts = append(parts, "-d", m.Prefix.String())
			case MatchOutLo:
				parts = append(parts, "-o", "lo")
			case MatchTCP:
				parts = append(parts, "-p", "tcp")
			}
		}
	}
	for _, m := range rule.Matches {
		switch m.Kind {
		case MatchUID:
			parts = append(parts, "-m", "owner")
			parts = append(parts, not(m)...)
			parts = append(parts, "--uid-owner", fmt.Sprint(m.ID))
		case MatchGID:
			parts = append(parts, "-m", "owner")
			parts = append(parts, not(m)...)
			parts = append(parts, "--gid-owner", fmt.Sprint(m.ID))
		}
	}
	for _, m := range rule.Matches {
		if m.Kind == MatchDstPort {
			parts = append(parts, "-m", "tcp")
			parts = append(parts, not(m)...)
			parts = append(parts, "--dport", fmt.Sprint(m.Port))
		}
	}
	if rule.Comment != "" {
		parts = append(parts, "-m", "comment", "--comment", fmt.Sprintf("%q", rule.Comment))
	}
	switch rule.Verdict.Kind {
	case VerdictReturn:
		parts = append(parts, "-j", "RETURN")
	case VerdictJump:
		parts = append(parts, "-j", IPTablesChain(rule.Verdict.Chain))
	case VerdictRedirect:
		parts = append(parts, "-j", "REDIRECT", "--to-ports", fmt.Sprint(rule.Verdict.Port))
	}
	return strings.Join(parts, " ")
}
