package rules

import (
	"fmt"
	"net/netip"
)

// FamiliesFor is the project's one IP-family decision: the families of the ruleset of a pod whose
// sandbox interface has the addresses addrs. IPv4 is always included; IPv6 is added when one of
// the addresses is IPv6 (an IPv4-mapped IPv6 address counts as IPv4). Addresses that do not
// parse are ignored. The plugin passes the prevResult addresses of the sandbox interface
// (CNI_IFNAME) and reports them; the agent's inspection and repair pass the recorded ones, so
// both sides compute the same ruleset.
func FamiliesFor(addrs []string) []Family {
	fams := []Family{IPv4}
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil && a.Unmap().Is6() {
			return append(fams, IPv6)
		}
	}
	return fams
}

// ParseFamily parses the String form of a family ("ipv4", "ipv6").
func ParseFamily(s string) (Family, error) {
	switch s {
	case "ipv4":
		return IPv4, nil
	case "ipv6":
		return IPv6, nil
	}
	return 0, fmt.Errorf("unknown IP family %q (want \"ipv4\" or \"ipv6\")", s)
}
