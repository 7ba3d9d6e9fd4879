package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST (SOL_IPV6): both 80.
const soOriginalDst = 80

// OriginalDst returns the destination a redirected connection was addressed to before the
// REDIRECT rule rewrote it (netfilter's conntrack record).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v4 := local != nil && local.IP.To4() != nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		buf  [unix.SizeofSockaddrInet6]byte
		serr error
	)
	err = rc.Control(func(fd uintptr) {
		level := unix.SOL_IPV6
		size := uint32(unix.SizeofSockaddrInet6)
		if v4 {
			level, size = unix.SOL_IP, unix.SizeofSockaddrInet4
		}
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (SO_ORIGINAL_DST) of %s: %w", c.RemoteAddr(), err)
	}
	// sockaddr_in / sockaddr_in6: family (host order), port (network order), then the address.
	port := binary.BigEndian.Uint16(buf[2:4])
	if v4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), port), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(buf[8:24])), port), nil
}

// freebindControl sets IP_FREEBIND / IPV6_FREEBIND on a dialing socket so that it can use a
// source address (::6) that is not configured on any interface. Neither needs a capability.
func freebindControl(network, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
