package rules

import (
	"fmt"
	"strings"

	"github.com/sidelane/sidelane/internal/contract"
)

// NFTPriority is the priority of our nat base chains (nftables' "dstnat").
const NFTPriority = -100

// NFTTable describes our nftables table of one family as data: what the nftables backend
// programs, and what it reads back from the kernel for comparison.
type NFTTable struct {
	Family string // "ip" or "ip6"
	Name   string // contract.NFTablesTableName
	Chains []NFTChain
}

// NFTChain is a chain of an NFTTable. Base chains have Type "nat", a Hook, a Priority and
// Policy "accept"; regular chains leave them empty.
type NFTChain struct {
	Name     string
	Type     string
	Hook     string
	Priority int
	Policy   string
	Rules    []Rule
}

// NFTFamily is the nftables family name of f: "ip" or "ip6".
func NFTFamily(f Family) string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// NFT returns the nftables description of family f: table contract.NFTablesTableName of
// family "ip" or "ip6" with its chains and rules.
func (r Ruleset) NFT(f Family) NFTTable {
	t := NFTTable{Family: NFTFamily(f), Name: contract.NFTablesTableName}
	for _, c := range r.Chains(f) {
		nc := NFTChain{Name: c.Name, Rules: c.Rules}
		if c.Hook != "" {
			nc.Type, nc.Hook, nc.Priority, nc.Policy = "nat", c.Hook, NFTPriority, "accept"
		}
		t.Chains = append(t.Chains, nc)
	}
	return t
}

// Text renders the table in nft's input syntax (readable; `nft -f` accepts it).
func (t NFTTable) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", t.Family, t.Name)
	for i, c := range t.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != "" {
			fmt.Fprintf(&b, "\t\t%s\n", c.header())
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", NFTRuleText(t.Family, r))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (c NFTChain) header() string {
	return fmt.Sprintf("type %s hook %s priority %d; policy %s;", c.Type, c.Hook, c.Priority, c.Policy)
}

// Lines is the canonical listing of the table, one line per table, chain and rule, in order.
// The nftables backend compares the lines of the expected table with those of the table read
// back from the kernel.
func (t NFTTable) Lines() []string {
	prefix := t.Family + " " + t.Name
	out := []string{"table " + prefix}
	for _, c := range t.Chains {
		if c.Hook != "" {
			out = append(out, fmt.Sprintf("chain %s %s { %s }", prefix, c.Name, c.header()))
		} else {
			out = append(out, fmt.Sprintf("chain %s %s", prefix, c.Name))
		}
		for _, r := range c.Rules {
			out = append(out, fmt.Sprintf("rule %s %s %s", prefix, c.Name, NFTRuleText(t.Family, r)))
		}
	}
	return out
}

// NFTRuleText renders one rule in nft syntax for table family fam ("ip" or "ip6").
func NFTRuleText(fam string, r Rule) string {
	var parts []string
	op := func(m Match) string {
		if m.Negate {
			return "!= "
		}
		return ""
	}
	for _, m := range r.Matches {
		switch m.Kind {
		case MatchTCP:
			parts = append(parts, "meta l4proto "+op(m)+"tcp")
		case MatchDstPort:
			parts = append(parts, fmt.Sprintf("tcp dport %s%d", op(m), m.Port))
		case MatchSrc, MatchDst:
			dir := "saddr"
			if m.Kind == MatchDst {
				dir = "daddr"
			}
			addr := m.Prefix.String()
			if m.Prefix.IsSingleIP() {
				addr = m.Prefix.Addr().String()
			}
			parts = append(parts, fmt.Sprintf("%s %s %s%s", fam, dir, op(m), addr))
		case MatchOutLo:
			parts = append(parts, `oifname `+op(m)+`"lo"`)
		case MatchUID:
			parts = append(parts, fmt.Sprintf("meta skuid %s%d", op(m), m.ID))
		case MatchGID:
			parts = append(parts, fmt.Sprintf("meta skgid %s%d", op(m), m.ID))
		case MatchRaw:
			parts = append(parts, m.Raw)
		}
	}
	switch r.Verdict.Kind {
	case VerdictReturn:
		parts = append(parts, "return")
	case VerdictJump:
		parts = append(parts, "jump "+r.Verdict.Chain)
	case VerdictRedirect:
		parts = append(parts, fmt.Sprintf("redirect to :%d", r.Verdict.Port))
	case VerdictRaw:
		parts = append(parts, r.Verdict.Raw)
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}
