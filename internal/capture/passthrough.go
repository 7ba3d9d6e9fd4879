package capture

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
)

// ensurePassthroughAddress gives lo the IPv6 inbound passthrough address (::6/128) when the
// ruleset covers IPv6. The proxy forwards inbound traffic to the application from ::6, which,
// unlike 127.0.0.6 inside 127.0.0.0/8, is not a local address by default; the proxy has no
// capabilities to add it, so the rules' installer does. It is left in place by Remove
// (harmless, and possibly in use by open connections).
func ensurePassthroughAddress(rs rules.Ruleset) error {
	if !rs.Has(rules.IPv6) {
		return nil
	}
	// lo is always interface 1 of a network namespace (LOOPBACK_IFINDEX).
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}}
	// NODAD: otherwise the address stays tentative (unusable: the proxy's bind fails) until
	// duplicate address detection has run, asynchronously.
	addr := &netlink.Addr{
		IPNet: &net.IPNet{IP: net.ParseIP(contract.InboundPassthroughIPv6), Mask: net.CIDRMask(128, 128)},
		Flags: unix.IFA_F_NODAD,
	}
	if err := netlink.AddrReplace(lo, addr); err != nil {
		return fmt.Errorf("add %s to lo: %w", addr.IPNet, err)
	}
	return nil
}
