package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
)

// NFTables is the native nftables backend: tables contract.NFTablesTableName of families ip
// and ip6, programmed over netlink in one atomic transaction.
type NFTables struct {
	// breakApply adds a rule jumping to a missing chain to the transaction (atomicity tests).
	breakApply bool
}

var _ Backend = (*NFTables)(nil)

func newNFTables() *NFTables { return &NFTables{} }

// Name is "nftables".
func (b *NFTables) Name() string { return contract.BackendNFTables }

// conn returns an nftables connection to the calling thread's network namespace (the caller
// runs on a thread locked into the pod's namespace, see InNetns). One netlink socket serves
// every request of an operation.
func (b *NFTables) conn() (*nftables.Conn, func(), error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: connect: %w", err)
	}
	return c, func() { _ = c.CloseLasting() }, nil
}

func tableFamily(f rules.Family) nftables.TableFamily {
	if f == rules.IPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

var allFamilies = []rules.Family{rules.IPv4, rules.IPv6}

// Apply replaces our tables in one netlink transaction: for each family, add the table (so
// that deleting it cannot fail), delete it with everything in it, and add it again with the
// ruleset's chains and rules; tables of families rs does not cover are only deleted. The
// kernel applies the whole batch or none of it. For IPv6, lo first gets the passthrough
// address ::6.
func (b *NFTables) Apply(rs rules.Ruleset) error {
	if err := ensurePassthroughAddress(rs); err != nil {
		return fmt.Errorf("nftables apply (nothing changed): %w", err)
	}
	// Deleting a table with base chains costs an RCU grace period (milliseconds), so the
	// common case, a pod's first ADD, creates the tables exclusively (NLM_F_EXCL) without
	// looking first; if one already exists the whole batch fails with EEXIST, changing
	// nothing, and is sent again as a replacement of the tables that exist.
	// A ruleset without IPv6 must also delete an IPv6 table left by an earlier apply, so then
	// we look first.
	var present []rules.Family
	var err error
	if len(rs.Families) < len(allFamilies) {
		if present, err = b.presentTables(); err != nil {
			return fmt.Errorf("nftables apply (nothing changed): %w", err)
		}
	}
	err = b.applyBatch(rs, present)
	if errors.Is(err, unix.EEXIST) {
		if present, err = b.presentTables(); err == nil {
			err = b.applyBatch(rs, present)
		}
	}
	if err != nil {
		return fmt.Errorf("nftables apply (nothing changed): %w", err)
	}
	return nil
}

// presentTables returns the families in which our table exists.
func (b *NFTables) presentTables() ([]rules.Family, error) {
	c, done, err := b.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	var out []rules.Family
	for _, f := range allFamilies {
		ts, err := c.ListTablesOfFamily(tableFamily(f))
		if err != nil {
			return nil, fmt.Errorf("list %s tables: %w", f, err)
		}
		if slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == contract.NFTablesTableName }) {
			out = append(out, f)
		}
	}
	return out, nil
}

// applyBatch sends one transaction: in the families of present, our table is replaced (add,
// delete, add); in the others it is created exclusively. Tables of families rs does not cover
// are deleted when present.
func (b *NFTables) applyBatch(rs rules.Ruleset, present []rules.Family) error {
	var tx nftBatch
	if err := b.buildApply(&tx, rs, present); err != nil {
		return err
	}
	return tx.send()
}

func (b *NFTables) buildApply(tx *nftBatch, rs rules.Ruleset, present []rules.Family) error {
	const table = contract.NFTablesTableName
	for _, f := range allFamilies {
		fam := byte(tableFamily(f))
		if slices.Contains(present, f) {
			tx.addTable(fam, table, false)
			tx.delTable(fam, table)
		}
		if !rs.Has(f) {
			continue
		}
		tx.addTable(fam, table, !slices.Contains(present, f))
		desc := rs.NFT(f)
		for _, ch := range desc.Chains {
			tx.addChain(fam, table, ch)
		}
		for _, ch := range desc.Chains {
			for _, r := range ch.Rules {
				exprs, err := encodeRule(f, r)
				if err != nil {
					return fmt.Errorf("chain %s: %w", ch.Name, err)
				}
				tx.addRule(fam, table, ch.Name, exprs, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
			}
		}
		if b.breakApply {
			tx.addRule(fam, table, rules.ChainOutbound,
				[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "missing"}}, nil)
		}
	}
	return nil
}

// Remove deletes our tables of both families in one transaction; it succeeds when none exist.
func (b *NFTables) Remove() error {
	var tx nftBatch
	for _, f := range allFamilies {
		fam := byte(tableFamily(f))
		tx.addTable(fam, contract.NFTablesTableName, false)
		tx.delTable(fam, contract.NFTablesTableName)
	}
	if err := tx.send(); err != nil {
		return fmt.Errorf("nftables remove: %w", err)
	}
	return nil
}

// Expected is the canonical listing (rules.NFTTable.Lines) of the tables Apply(rs) installs.
func (b *NFTables) Expected(rs rules.Ruleset) []string {
	var out []string
	for _, f := range rs.Families {
		out = append(out, rs.NFT(f).Lines()...)
	}
	return out
}

// Live reads our tables back from the kernel over netlink and decodes every rule's
// expressions; expressions that are not ours show up as raw text, so tampering is visible.
func (b *NFTables) Live() ([]string, error) {
	c, done, err := b.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	var out []string
	for _, f := range allFamilies {
		desc, ok, err := readTable(c, f)
		if err != nil {
			return nil, fmt.Errorf("nftables live %s: %w", f, err)
		}
		if ok {
			out = append(out, desc.Lines()...)
		}
	}
	return out, nil
}

func hookOf(h string) *nftables.ChainHook {
	if h == "output" {
		return nftables.ChainHookOutput
	}
	return nftables.ChainHookPrerouting
}

func hookName(h *nftables.ChainHook) string {
	switch {
	case h == nil:
		return ""
	case *h == *nftables.ChainHookPrerouting:
		return "prerouting"
	case *h == *nftables.ChainHookOutput:
		return "output"
	}
	return fmt.Sprintf("hook%d", *h)
}

// chainOrder is the order of our chains in a listing; others come after, by name.
var chainOrder = []string{rules.ChainPrerouting, rules.ChainOutput, rules.ChainInbound,
	rules.ChainInRedirect, rules.ChainOutbound, rules.ChainOutRedirect}

func readTable(c *nftables.Conn, f rules.Family) (rules.NFTTable, bool, error) {
	tables, err := c.ListTablesOfFamily(tableFamily(f))
	if err != nil {
		return rules.NFTTable{}, false, fmt.Errorf("list tables: %w", err)
	}
	var t *nftables.Table
	for _, x := range tables {
		if x.Name == contract.NFTablesTableName {
			t = x
		}
	}
	if t == nil {
		return rules.NFTTable{}, false, nil
	}
	chains, err := c.ListChainsOfTableFamily(tableFamily(f))
	if err != nil {
		return rules.NFTTable{}, false, fmt.Errorf("list chains: %w", err)
	}
	desc := rules.NFTTable{Family: rules.NFTFamily(f), Name: t.Name}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != t.Name {
			continue
		}
		nc := rules.NFTChain{Name: ch.Name}
		if ch.Hooknum != nil {
			nc.Type, nc.Hook = string(ch.Type), hookName(ch.Hooknum)
			if ch.Priority != nil {
				nc.Priority = int(*ch.Priority)
			}
			nc.Policy = "accept"
			if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
				nc.Policy = "drop"
			}
		}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return rules.NFTTable{}, false, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rs {
			dr := decodeRule(f, r.Exprs)
			dr.Comment, _ = userdata.GetString(r.UserData, userdata.TypeComment)
			nc.Rules = append(nc.Rules, dr)
		}
		desc.Chains = append(desc.Chains, nc)
	}
	rank := func(n string) int {
		if i := slices.Index(chainOrder, n); i >= 0 {
			return i
		}
		return len(chainOrder)
	}
	slices.SortStableFunc(desc.Chains, func(a, b rules.NFTChain) int {
		if d := rank(a.Name) - rank(b.Name); d != 0 {
			return d
		}
		if rank(a.Name) == len(chainOrder) {
			return bytes.Compare([]byte(a.Name), []byte(b.Name))
		}
		return 0
	})
	return desc, true, nil
}

// Payload offsets of the fields the rules match.
const (
	tcpDportOffset = 2
	ip4SrcOffset   = 12
	ip4DstOffset   = 16
	ip6SrcOffset   = 8
	ip6DstOffset   = 24
)

func addrField(f rules.Family, src bool) (offset, length uint32) {
	switch {
	case f == rules.IPv6 && src:
		return ip6SrcOffset, 16
	case f == rules.IPv6:
		return ip6DstOffset, 16
	case src:
		return ip4SrcOffset, 4
	}
	return ip4DstOffset, 4
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// encodeRule turns a rule into nftables expressions.
func encodeRule(f rules.Family, r rules.Rule) ([]expr.Any, error) {
	var out []expr.Any
	meta := func(k expr.MetaKey, neg bool, data []byte) {
		out = append(out, &expr.Meta{Key: k, Register: 1}, &expr.Cmp{Op: cmpOp(neg), Register: 1, Data: data})
	}
	for _, m := range r.Matches {
		switch m.Kind {
		case rules.MatchTCP:
			meta(expr.MetaKeyL4PROTO, m.Negate, []byte{unix.IPPROTO_TCP})
		case rules.MatchOutLo:
			meta(expr.MetaKeyOIFNAME, m.Negate, ifname("lo"))
		case rules.MatchUID:
			meta(expr.MetaKeySKUID, m.Negate, binaryutil.NativeEndian.PutUint32(m.ID))
		case rules.MatchGID:
			meta(expr.MetaKeySKGID, m.Negate, binaryutil.NativeEndian.PutUint32(m.ID))
		case rules.MatchDstPort:
			out = append(out,
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpDportOffset, Len: 2},
				&expr.Cmp{Op: cmpOp(m.Negate), Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)})
		case rules.MatchSrc, rules.MatchDst:
			if (f == rules.IPv6) != m.Prefix.Addr().Is6() {
				return nil, fmt.Errorf("address %s in the %s table", m.Prefix, f)
			}
			off, n := addrField(f, m.Kind == rules.MatchSrc)
			out = append(out, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
			p := m.Prefix.Masked()
			if p.Bits() < int(n*8) {
				mask := make([]byte, n)
				for i := 0; i < p.Bits(); i++ {
					mask[i/8] |= 0x80 >> (i % 8)
				}
				out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
			}
			out = append(out, &expr.Cmp{Op: cmpOp(m.Negate), Register: 1, Data: p.Addr().AsSlice()})
		default:
			return nil, fmt.Errorf("match kind %d cannot be encoded", m.Kind)
		}
	}
	switch r.Verdict.Kind {
	case rules.VerdictReturn:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case rules.VerdictJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Verdict.Chain})
	case rules.VerdictRedirect:
		out = append(out, &expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Verdict.Port)},
			&expr.Redir{RegisterProtoMin: 1})
	default:
		return nil, errors.New("rule without a verdict")
	}
	return out, nil
}

// decodeRule maps expressions read back from the kernel to a rule. It recognises exactly the
// patterns encodeRule writes; anything else becomes a raw match or verdict, described.
func decodeRule(f rules.Family, exprs []expr.Any) rules.Rule {
	var r rules.Rule
	raw := func(e any) {
		r.Matches = append(r.Matches, rules.Match{Kind: rules.MatchRaw, Raw: fmt.Sprintf("%T%+v", e, e)})
	}
	for i := 0; i < len(exprs); i++ {
		next := func() expr.Any {
			if i+1 < len(exprs) {
				return exprs[i+1]
			}
			return nil
		}
		switch e := exprs[i].(type) {
		case *expr.Meta:
			cmp, ok := next().(*expr.Cmp)
			if !ok || e.Register != cmp.Register || (cmp.Op != expr.CmpOpEq && cmp.Op != expr.CmpOpNeq) {
				raw(e)
				continue
			}
			m := rules.Match{Negate: cmp.Op == expr.CmpOpNeq}
			switch {
			case e.Key == expr.MetaKeyL4PROTO && bytes.Equal(cmp.Data, []byte{unix.IPPROTO_TCP}):
				m.Kind = rules.MatchTCP
			case e.Key == expr.MetaKeyOIFNAME && bytes.Equal(cmp.Data, ifname("lo")):
				m.Kind = rules.MatchOutLo
			case (e.Key == expr.MetaKeySKUID || e.Key == expr.MetaKeySKGID) && len(cmp.Data) == 4:
				m.Kind, m.ID = rules.MatchUID, binary.NativeEndian.Uint32(cmp.Data)
				if e.Key == expr.MetaKeySKGID {
					m.Kind = rules.MatchGID
				}
			default:
				raw(e)
				continue
			}
			r.Matches = append(r.Matches, m)
			i++
		case *expr.Payload:
			m, used, ok := decodePayload(f, e, exprs[i+1:])
			if !ok {
				raw(e)
				continue
			}
			r.Matches = append(r.Matches, m)
			i += used
		case *expr.Immediate:
			redir, ok := next().(*expr.Redir)
			if !ok || len(e.Data) != 2 || redir.RegisterProtoMin != e.Register {
				raw(e)
				continue
			}
			r.Verdict = rules.Verdict{Kind: rules.VerdictRedirect, Port: binary.BigEndian.Uint16(e.Data)}
			i++
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictReturn:
				r.Verdict = rules.Verdict{Kind: rules.VerdictReturn}
			case expr.VerdictJump:
				r.Verdict = rules.Verdict{Kind: rules.VerdictJump, Chain: e.Chain}
			default:
				r.Verdict = rules.Verdict{Kind: rules.VerdictRaw, Raw: fmt.Sprintf("verdict %d %s", e.Kind, e.Chain)}
			}
		default:
			raw(e)
		}
	}
	return r
}

// decodePayload decodes a payload load followed by an optional bitwise mask and a compare:
// a TCP destination port or an address prefix. used counts the expressions after p consumed.
func decodePayload(f rules.Family, p *expr.Payload, rest []expr.Any) (rules.Match, int, bool) {
	var mask []byte
	used := 0
	if len(rest) > 0 {
		if bw, ok := rest[0].(*expr.Bitwise); ok {
			mask = bw.Mask
			rest = rest[1:]
			used++
		}
	}
	if len(rest) == 0 {
		return rules.Match{}, 0, false
	}
	cmp, ok := rest[0].(*expr.Cmp)
	if !ok || (cmp.Op != expr.CmpOpEq && cmp.Op != expr.CmpOpNeq) {
		return rules.Match{}, 0, false
	}
	used++
	m := rules.Match{Negate: cmp.Op == expr.CmpOpNeq}
	if p.Base == expr.PayloadBaseTransportHeader && p.Offset == tcpDportOffset && p.Len == 2 && mask == nil && len(cmp.Data) == 2 {
		m.Kind, m.Port = rules.MatchDstPort, binary.BigEndian.Uint16(cmp.Data)
		return m, used, true
	}
	if p.Base != expr.PayloadBaseNetworkHeader {
		return rules.Match{}, 0, false
	}
	for _, src := range []bool{true, false} {
		off, n := addrField(f, src)
		if p.Offset != off || p.Len != n || len(cmp.Data) != int(n) {
			continue
		}
		a, _ := netip.AddrFromSlice(cmp.Data)
		nbits := int(n * 8)
		if mask != nil {
			nbits = 0
			for _, x := range mask {
				nbits += bits.OnesCount8(x)
			}
		}
		m.Kind, m.Prefix = rules.MatchDst, netip.PrefixFrom(a, nbits)
		if src {
			m.Kind = rules.MatchSrc
		}
		return m, used, true
	}
	return rules.Match{}, 0, false
}
