package capture

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
)

// Variant is an iptables variant.
type Variant string

// The iptables variants. VariantAuto detects the host's variant (DetectVariant).
const (
	VariantAuto   Variant = ""
	VariantNFT    Variant = "nft"
	VariantLegacy Variant = "legacy"
)

// IPTables is the iptables backend: iptables-restore / ip6tables-restore of the nat table with
// --noflush, touching only our SIDELANE_ chains and the jumps to them.
type IPTables struct {
	variant Variant
	exec    execer
	// passthrough adds ::6 to lo for IPv6 rulesets (nil in unit tests, which never touch the host).
	passthrough func(rules.Ruleset) error
	// breakApply appends an invalid rule to every restore input (tests of atomicity).
	breakApply bool
}

var _ Backend = (*IPTables)(nil)

// NewIPTables returns the iptables backend of variant v. With VariantAuto the host's variant
// is detected now, in the calling thread's network namespace: call it from the host's
// namespace, before entering the pod's.
func NewIPTables(v Variant) (*IPTables, error) {
	b, err := newIPTables(v, osExec{})
	if err != nil {
		return nil, err
	}
	b.passthrough = ensurePassthroughAddress
	return b, nil
}

func newIPTables(v Variant, ex execer) (*IPTables, error) {
	switch v {
	case VariantNFT, VariantLegacy:
	case VariantAuto:
		var err error
		if v, err = detectVariant(ex); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("iptables variant %q: unknown (want %q or %q)", v, VariantNFT, VariantLegacy)
	}
	return &IPTables{variant: v, exec: ex}, nil
}

// Name is "iptables".
func (b *IPTables) Name() string { return contract.BackendIPTables }

// Variant is the iptables variant the backend uses.
func (b *IPTables) Variant() Variant { return b.variant }

// DetectVariant returns the host's iptables variant. It looks, in the calling thread's network
// namespace (the host's), for the chains kubelet and kube-proxy create (KUBE-IPTABLES-HINT,
// KUBE-KUBELET-CANARY in the mangle table, then any KUBE-* chain), in both variants; our own
// SIDELANE_ chains are ignored and live in pods' namespaces anyway, so our earlier runs cannot
// change the answer. Without such chains it falls back to `iptables --version`.
func DetectVariant() (Variant, error) { return detectVariant(osExec{}) }

func detectVariant(ex execer) (Variant, error) {
	// Saves are run lazily and at most once each. The kubelet hint lives in the small mangle
	// table; iptables-nft-save -t mangle reads only that. The legacy save is run without -t:
	// naming a table would make the kernel load that legacy table into the host's namespace.
	cache := map[string]string{}
	save := func(name string, args ...string) string {
		key := strings.Join(append([]string{name}, args...), " ")
		if out, ok := cache[key]; ok {
			return out
		}
		out, err := ex.Run("", name, args...)
		if err != nil {
			out = "" // a missing variant has no chains
		}
		cache[key] = out
		return out
	}
	hasChain := func(out string, match func(name string) bool) bool {
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, ":") {
				continue
			}
			name, _, _ := strings.Cut(l[1:], " ")
			if strings.HasPrefix(name, contract.IPTablesChainPrefix) {
				continue
			}
			if match(name) {
				return true
			}
		}
		return false
	}
	hint := func(n string) bool { return n == "KUBE-IPTABLES-HINT" || n == "KUBE-KUBELET-CANARY" }
	kube := func(n string) bool { return strings.HasPrefix(n, "KUBE-") }
	// kubelet writes the hint into the variant it uses (and prefers nft since kubernetes
	// 1.25): the nft side wins when both have it.
	if hasChain(save("iptables-nft-save", "-t", "mangle"), hint) {
		return VariantNFT, nil
	}
	if hasChain(save("iptables-legacy-save"), hint) {
		return VariantLegacy, nil
	}
	nftKube, legacyKube := hasChain(save("iptables-nft-save"), kube), hasChain(save("iptables-legacy-save"), kube)
	switch {
	case nftKube:
		return VariantNFT, nil
	case legacyKube:
		return VariantLegacy, nil
	}
	out, err := ex.Run("", "iptables", "--version")
	if err != nil {
		return "", fmt.Errorf("detect iptables variant: no kubernetes chains found and %w", err)
	}
	switch {
	case strings.Contains(out, "nf_tables"):
		return VariantNFT, nil
	case strings.Contains(out, "legacy"):
		return VariantLegacy, nil
	}
	return "", fmt.Errorf("detect iptables variant: unrecognised `iptables --version` output %q", strings.TrimSpace(out))
}

func (b *IPTables) bin(f rules.Family, tool string) string {
	p := "iptables"
	if f == rules.IPv6 {
		p = "ip6tables"
	}
	return p + "-" + string(b.variant) + "-" + tool
}

// state is what of ours a family's nat table holds, as iptables-save prints it.
type state struct {
	chains []string // our chains
	jumps  []string // "-A PREROUTING ... -j SIDELANE_X" lines
	lines  []string // canonical listing: declarations and rules of ours
}

func (s state) empty() bool { return len(s.chains) == 0 && len(s.jumps) == 0 }

func (b *IPTables) state(f rules.Family) (state, error) {
	out, err := b.exec.Run("", b.bin(f, "save"), "-t", "nat")
	if err != nil {
		return state{}, fmt.Errorf("read %s nat table: %w", f, err)
	}
	return parseSave(out), nil
}

// parseSave extracts our chains and rules from iptables-save output of the nat table.
func parseSave(out string) state {
	var s state
	var decls, rls []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, ":"+contract.IPTablesChainPrefix):
			name, _, _ := strings.Cut(l[1:], " ")
			s.chains = append(s.chains, name)
			decls = append(decls, ":"+name+" - [0:0]")
		case strings.HasPrefix(l, "-A "+contract.IPTablesChainPrefix):
			rls = append(rls, l)
		case strings.HasPrefix(l, "-A ") && (strings.Contains(l, " -j "+contract.IPTablesChainPrefix) || strings.Contains(l, " -g "+contract.IPTablesChainPrefix)):
			s.jumps = append(s.jumps, l)
			rls = append(rls, l)
		}
	}
	s.lines = canonicalIPTables(decls, rls)
	return s
}

// canonicalIPTables orders a listing independently of how a variant orders chains: the
// declarations sorted, then the rules of PREROUTING, OUTPUT and our chains by name, each
// chain's rules in their order.
func canonicalIPTables(decls, rls []string) []string {
	decls = slices.Clone(decls)
	slices.Sort(decls)
	rank := func(l string) string {
		chain, _, _ := strings.Cut(strings.TrimPrefix(l, "-A "), " ")
		switch chain {
		case "PREROUTING":
			return "0"
		case "OUTPUT":
			return "1"
		}
		return "2" + chain
	}
	rls = slices.Clone(rls)
	slices.SortStableFunc(rls, func(a, b string) int { return strings.Compare(rank(a), rank(b)) })
	return append(decls, rls...)
}

func familyPrefix(f rules.Family) string { return f.String() + " " }

// Expected is the canonical listing of what Apply(rs) installs: per family, "ipv4 " or
// "ipv6 " followed by a line as iptables-save prints it.
func (b *IPTables) Expected(rs rules.Ruleset) []string {
	var out []string
	for _, f := range rs.Families {
		for _, l := range canonicalIPTables(rs.IPTablesDeclarations(), rs.IPTablesRules(f)) {
			out = append(out, familyPrefix(f)+l)
		}
	}
	return out
}

// Live reads our chains and rules back with iptables-save / ip6tables-save.
func (b *IPTables) Live() ([]string, error) {
	var out []string
	for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
		s, err := b.state(f)
		if err != nil {
			return nil, err
		}
		for _, l := range s.lines {
			out = append(out, familyPrefix(f)+l)
		}
	}
	return out, nil
}

func (b *IPTables) restore(f rules.Family, input string) error {
	args := []string{"--noflush"}
	if b.variant == VariantLegacy {
		args = append(args, "--wait=30")
	}
	if _, err := b.exec.Run(input, b.bin(f, "restore"), args...); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	return nil
}

// Apply installs rs with one iptables-restore per family (each atomic). Our rules of a family
// rs does not cover are removed. If the second family fails after the first succeeded, our
// rules are removed from both, so that nothing half-applied is left. For IPv6, lo first gets
// the passthrough address ::6.
func (b *IPTables) Apply(rs rules.Ruleset) error {
	if b.passthrough != nil {
		if err := b.passthrough(rs); err != nil {
			return fmt.Errorf("iptables apply (nothing changed): %w", err)
		}
	}
	applied := false
	for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
		var err error
		if rs.Has(f) {
			err = b.applyFamily(rs, f)
		} else {
			err = b.removeFamily(f)
		}
		if err != nil {
			err = fmt.Errorf("iptables apply: %w", err)
			if applied {
				if rerr := b.Remove(); rerr != nil {
					err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
				}
			}
			return err
		}
		applied = true
	}
	return nil
}

func (b *IPTables) applyFamily(rs rules.Ruleset, f rules.Family) error {
	s, err := b.state(f)
	if err != nil {
		return err
	}
	input := rs.IPTablesRestoreReplacing(f, s.jumps)
	// Chains of ours that this ruleset does not declare (left by another version) go too.
	var stale []string
	for _, c := range s.chains {
		if !slices.Contains(rs.IPTablesChains(), c) {
			stale = append(stale, ":"+c+" - [0:0]\n-X "+c+"\n")
		}
	}
	if len(stale) > 0 {
		input = strings.Replace(input, "\nCOMMIT\n", "\n"+strings.Join(stale, "")+"COMMIT\n", 1)
	}
	if b.breakApply {
		input = strings.Replace(input, "\nCOMMIT\n", "\n-A "+contract.IPTablesChainPrefix+"MISSING -j RETURN\nCOMMIT\n", 1)
	}
	return b.restore(f, input)
}

// Remove deletes our jumps and chains from both families' nat tables; it does nothing where
// there are none.
func (b *IPTables) Remove() error {
	var errs []error
	for _, f := range []rules.Family{rules.IPv4, rules.IPv6} {
		if err := b.removeFamily(f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("iptables remove: %w", err)
	}
	return nil
}

func (b *IPTables) removeFamily(f rules.Family) error {
	s, err := b.state(f)
	if err != nil {
		return err
	}
	if s.empty() {
		return nil
	}
	var in strings.Builder
	in.WriteString("*nat\n")
	for _, j := range s.jumps {
		in.WriteString("-D " + strings.TrimPrefix(j, "-A ") + "\n")
	}
	for _, c := range s.chains {
		in.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range s.chains {
		in.WriteString("-X " + c + "\n")
	}
	in.WriteString("COMMIT\n")
	return b.restore(f, in.String())
}
