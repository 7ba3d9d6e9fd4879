package capture

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The recording proxy is this test binary re-executed with recordingProxyEnv=1, inside the pod
// netns and as uid/gid 1337 (SysProcAttr.Credential): a tiny stand-in for sidelane-proxy.
//   - 15001 (outbound) and 15006 (inbound), IPv4 and IPv6: read the original destination with
//     SO_ORIGINAL_DST, write "via=<direction> orig=<addr> uid=<uid>" to the client, connect
//     to the original destination (inbound: from 127.0.0.6 / ::6) and copy its answer back.
//   - 127.0.0.1:15000 (control): read "dial <addr>", connect to addr as the proxy, copy back.
//
// It prints "ready" on stdout once every listener is up.
const recordingProxyEnv = "SIDELANE_TEST_RECORDING_PROXY"

func TestMain(m *testing.M) {
	if os.Getenv(recordingProxyEnv) == "1" {
		runRecordingProxy()
		return
	}
	os.Exit(m.Run())
}

func runRecordingProxy() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "recording proxy:", err)
		os.Exit(3)
	}
	if os.Getuid() != 1337 || os.Getgid() != 1337 {
		fail(fmt.Errorf("runs as uid %d gid %d, want 1337", os.Getuid(), os.Getgid()))
	}
	type lst struct {
		network, addr, dir string
	}
	var wg sync.WaitGroup
	for _, l := range []lst{
		{"tcp4", "0.0.0.0:15001", "outbound"}, {"tcp6", "[::]:15001", "outbound"},
		{"tcp4", "0.0.0.0:15006", "inbound"}, {"tcp6", "[::]:15006", "inbound"},
		{"tcp4", "127.0.0.1:15000", "control"},
	} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			fail(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go handleProxyConn(c.(*net.TCPConn), l.dir)
			}
		}()
	}
	fmt.Println("ready")
	wg.Wait()
}

func handleProxyConn(c *net.TCPConn, dir string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if dir == "control" {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		forward(c, strings.TrimPrefix(strings.TrimSpace(line), "dial "), nil)
		return
	}
	orig, err := originalDst(c)
	if err != nil {
		fmt.Fprintf(c, "error=%v\n", err)
		return
	}
	fmt.Fprintf(c, "via=%s orig=%s uid=%d\n", dir, orig, os.Getuid())
	var local net.Addr
	if dir == "inbound" {
		src := "127.0.0.6"
		if orig.Addr().Is6() {
			src = "::6"
		}
		local = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	forward(c, orig.String(), local)
}

func forward(c net.Conn, addr string, local net.Addr) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: local}
	up, err := d.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintf(c, "error=%v\n", err)
		return
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.Copy(c, up)
}

// originalDst reads the destination a connection had before REDIRECT.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local := c.LocalAddr().(*net.TCPAddr)
	var ap netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			// sockaddr_in fits the 16 bytes of an IPv6Mreq.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				serr = err
				return
			}
			port := binary.BigEndian.Uint16(m.Multiaddr[2:4])
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port)
			return
		}
		// sockaddr_in6 fits the Addr of an IPv6MTUInfo.
		mi, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		port := uint16(mi.Addr.Port>>8 | mi.Addr.Port<<8)
		ap = netip.AddrPortFrom(netip.AddrFrom16(mi.Addr.Addr), port)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	return ap, nil
}
