// Package capture applies a rules.Ruleset inside the current network namespace, removes it and
// reads it back. The caller enters the pod's network namespace first (InNetns).
//
// Two backends implement the same semantics:
//   - "nftables" (also "auto"): native nftables over netlink (our transaction, nftbatch.go; rule
//     expressions and read-back through github.com/google/nftables), tables
//     contract.NFTablesTableName in families ip and ip6, replaced in one atomic transaction; no
//     host binaries needed.
//   - "iptables": iptables-restore / ip6tables-restore (nat table, --noflush) with the host's
//     variant (legacy or nft), detected from the host's own chains so that our earlier runs
//     cannot change the answer (see DetectVariant).
//
// Expected and Live return canonical listings that compare equal (rules.Diff) exactly when the
// installed rules are the ones Apply installs.
package capture

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
)

// Backend programs the redirect rules of one pod in the current network namespace.
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Apply installs rs atomically (all or nothing), replacing our previous rules: applying
	// the same ruleset twice leaves exactly one copy.
	Apply(rs rules.Ruleset) error
	// Remove removes only our rules. It is idempotent and succeeds when none exist.
	Remove() error
	// Expected is the canonical listing of what Apply(rs) installs.
	Expected(rs rules.Ruleset) []string
	// Live is the canonical listing of our rules read back from the kernel (empty when none).
	Live() ([]string, error)
}

// New returns the backend named backend: "auto" or "nftables" for native nftables, "iptables"
// for iptables-restore with the host's variant.
func New(backend string) (Backend, error) {
	switch backend {
	case contract.BackendAuto, contract.BackendNFTables:
		return newNFTables(), nil
	case contract.BackendIPTables:
		return NewIPTables(VariantAuto)
	}
	return nil, fmt.Errorf("capture backend %q: unknown (want %q, %q or %q)", backend,
		contract.BackendAuto, contract.BackendNFTables, contract.BackendIPTables)
}

// InNetns runs fn inside the network namespace at netnsPath, on a locked OS thread.
// fn must not start goroutines that expect to stay in that namespace.
func InNetns(netnsPath string, fn func() error) error {
	var fnErr error
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		fnErr = fn()
		return nil
	})
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", netnsPath, err)
	}
	if fnErr != nil {
		return fmt.Errorf("in netns %s: %w", netnsPath, fnErr)
	}
	return nil
}
