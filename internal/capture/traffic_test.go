package capture

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

// pod is a "pod" netns joined by a veth to a "remote" netns, with the redirect rules of one
// backend, a recording proxy as uid 1337 and app servers on both sides.
type pod struct {
	path, remotePath string
}

// addresses of one family in the test topology.
type famAddrs struct {
	pod, remote, remote2, loopback string
}

var topo = map[rules.Family]famAddrs{
	rules.IPv4: {"10.250.0.1", "10.250.0.2", "10.250.0.3", "127.0.0.1"},
	rules.IPv6: {"fd00:250::1", "fd00:250::2", "fd00:250::3", "::1"},
}

// trafficSettings: defaults plus an excluded outbound port (9091), an excluded outbound
// destination (remote2) and an excluded inbound port (8083).
func trafficSettings() redirect.Settings {
	s := testSettings()
	s.ExcludeOutboundPorts = []uint16{9091}
	s.ExcludeOutboundCIDRs = []netip.Prefix{
		netip.MustParsePrefix(topo[rules.IPv4].remote2 + "/32"),
		netip.MustParsePrefix(topo[rules.IPv6].remote2 + "/128"),
	}
	s.ExcludeInboundPorts = append(s.ExcludeInboundPorts, 8083)
	return s
}

func newPod(t *testing.T) pod {
	t.Helper()
	pname, ppath := newNetns(t)
	rname, rpath := newNetns(t)
	run(t, "ip", "-n", pname, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", rname)
	for _, x := range []struct {
		ns    string
		addrs []string
	}{
		{pname, []string{topo[rules.IPv4].pod + "/24", topo[rules.IPv6].pod + "/64"}},
		{rname, []string{topo[rules.IPv4].remote + "/24", topo[rules.IPv4].remote2 + "/24", topo[rules.IPv6].remote + "/64", topo[rules.IPv6].remote2 + "/64"}},
	} {
		for _, a := range x.addrs {
			args := []string{"-n", x.ns, "addr", "add", a, "dev", "eth0"}
			if strings.Contains(a, ":") {
				args = append(args, "nodad")
			}
			run(t, "ip", args...)
		}
		run(t, "ip", "-n", x.ns, "link", "set", "eth0", "up")
	}
	return pod{path: ppath, remotePath: rpath}
}

// serve starts a server in netns path on every address, port: it answers
// "server=<name> peer=<client ip>" and closes.
func serve(t *testing.T, path string, port int, name string) {
	t.Helper()
	var ln net.Listener
	inNetns(t, path, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			fmt.Fprintf(c, "server=%s peer=%s\n", name, peer)
			c.Close()
		}
	}()
}

// dial connects from netns path (and address src, unless empty) to addr (sending send first, if any) and returns every line
// received until the server closes.
func dial(t *testing.T, path, src, addr, send string) []string {
	t.Helper()
	var c net.Conn
	d := net.Dialer{Timeout: 20 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	inNetns(t, path, func() (err error) {
		c, err = d.Dial("tcp", addr)
		return err
	})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// startRecordingProxy runs the recording proxy in the pod netns as uid/gid 1337.
func startRecordingProxy(t *testing.T, p pod) {
	t.Helper()
	// The test binary sits in a 0700 build directory: give uid 1337 a copy it can execute.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sidelane-proxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "recording-proxy")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), recordingProxyEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1337, Gid: 1337}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Started from a thread inside the pod netns, the child is born in it.
	inNetns(t, p.path, cmd.Start)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected first line %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("recording proxy: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("recording proxy not ready after 60s")
	}
}

func hostPort(a string, port int) string { return net.JoinHostPort(a, fmt.Sprint(port)) }

// TestTrafficClasses sends every traffic class of docs/design.md through the rules of each backend,
// over IPv4 and IPv6, and checks what the proxy saw and where the connection ended.
func TestTrafficClasses(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bc := range backendCases() {
		t.Run(bc.name, func(t *testing.T) {
			p := newPod(t)
			b := bc.new(t)
			rs := rules.Build(trafficSettings(), rules.IPv4, rules.IPv6)
			inNetns(t, p.path, func() error { return b.Apply(rs) })
			if d := rules.Diff(b.Expected(rs), live(t, p.path, b)); d != nil {
				t.Fatalf("rules differ after Apply:\n%s", strings.Join(d, "\n"))
			}
			for _, port := range []int{8080, 8081, 8082, 8083, 15021, 15090} {
				serve(t, p.path, port, fmt.Sprintf("pod%d", port))
			}
			for _, port := range []int{9090, 9091} {
				serve(t, p.remotePath, port, fmt.Sprintf("remote%d", port))
			}
			startRecordingProxy(t, p)

			for _, f := range rs.Families {
				a := topo[f]
				passthrough := "127.0.0.6"
				if f == rules.IPv6 {
					passthrough = "::6"
				}
				in := func(addr string) string { return "via=inbound orig=" + addr + " uid=1337" }
				out := func(addr string) string { return "via=outbound orig=" + addr + " uid=1337" }
				control := hostPort("127.0.0.1", 15000)
				for _, tc := range []struct {
					name       string
					from, addr string
					send       string
					want       []string
				}{
					{"1 remote to app: inbound capture", p.remotePath, hostPort(a.pod, 8080), "",
						[]string{in(hostPort(a.pod, 8080)), "server=pod8080 peer=" + passthrough}},
					{"2 app to remote: outbound capture", p.path, hostPort(a.remote, 9090), "",
						[]string{out(hostPort(a.remote, 9090)), "server=remote9090 peer=" + a.pod}},
					{"3 scrape 15090 from outside: not captured", p.remotePath, hostPort(a.pod, 15090), "",
						[]string{"server=pod15090 peer=" + a.remote}},
					{"3 health 15021 from outside: not captured", p.remotePath, hostPort(a.pod, 15021), "",
						[]string{"server=pod15021 peer=" + a.remote}},
					{"4 app to own pod ip: outbound then inbound", p.path, hostPort(a.pod, 8081), "",
						[]string{out(hostPort(a.pod, 8081)), in(hostPort(a.pod, 8081)), "server=pod8081 peer=" + passthrough}},
					{"5 proxy loopback: not captured", p.path, control, "dial " + hostPort(a.loopback, 8082) + "\n",
						[]string{"server=pod8082 peer=" + a.loopback}},
					{"6 proxy to remote: not captured", p.path, control, "dial " + hostPort(a.remote, 9090) + "\n",
						[]string{"server=remote9090 peer=" + a.pod}},
					{"app to localhost: not captured", p.path, hostPort(a.loopback, 8082), "",
						[]string{"server=pod8082 peer=" + a.loopback}},
					{"app to excluded port: not captured", p.path, hostPort(a.remote, 9091), "",
						[]string{"server=remote9091 peer=" + a.pod}},
					{"app to excluded cidr: not captured", p.path, hostPort(a.remote2, 9090), "",
						[]string{"server=remote9090 peer=" + a.pod}},
					{"remote to excluded inbound port: not captured", p.remotePath, hostPort(a.pod, 8083), "",
						[]string{"server=pod8083 peer=" + a.remote}},
				} {
					src := "" // the remote has two addresses: always use the first
					if tc.from == p.remotePath {
						src = a.remote
					}
					got := dial(t, tc.from, src, tc.addr, tc.send)
					if !slices.Equal(got, tc.want) {
						t.Errorf("%s %s (%s):\n got %q\nwant %q", f, tc.name, tc.addr, got, tc.want)
					}
				}
			}
		})
	}
}

// TestTrafficLists: with inbound ports and outbound CIDRs listed instead of "*", only the
// listed ones are captured (both backends, IPv4 and IPv6).
func TestTrafficLists(t *testing.T) {
	testenv.RequireRoot(t)
	s := redirect.Defaults()
	s.InboundAll, s.InboundPorts = false, []uint16{8080}
	s.OutboundAll = false
	s.OutboundCIDRs = []netip.Prefix{
		netip.MustParsePrefix(topo[rules.IPv4].remote + "/32"),
		netip.MustParsePrefix(topo[rules.IPv6].remote + "/128"),
	}
	for _, bc := range backendCases() {
		if bc.name == "iptables-legacy" {
			continue // same rules text as iptables-nft; keeps the test short
		}
		t.Run(bc.name, func(t *testing.T) {
			p := newPod(t)
			b := bc.new(t)
			rs := rules.Build(s, rules.IPv4, rules.IPv6)
			inNetns(t, p.path, func() error { return b.Apply(rs) })
			for _, port := range []int{8080, 8081} {
				serve(t, p.path, port, fmt.Sprintf("pod%d", port))
			}
			serve(t, p.remotePath, 9090, "remote9090")
			startRecordingProxy(t, p)
			for _, f := range rs.Families {
				a := topo[f]
				passthrough := "127.0.0.6"
				if f == rules.IPv6 {
					passthrough = "::6"
				}
				for _, tc := range []struct {
					name       string
					from, addr string
					want       []string
				}{
					{"listed inbound port: captured", p.remotePath, hostPort(a.pod, 8080),
						[]string{"via=inbound orig=" + hostPort(a.pod, 8080) + " uid=1337", "server=pod8080 peer=" + passthrough}},
					{"unlisted inbound port: not captured", p.remotePath, hostPort(a.pod, 8081),
						[]string{"server=pod8081 peer=" + a.remote}},
					{"listed outbound cidr: captured", p.path, hostPort(a.remote, 9090),
						[]string{"via=outbound orig=" + hostPort(a.remote, 9090) + " uid=1337", "server=remote9090 peer=" + a.pod}},
					{"unlisted outbound cidr: not captured", p.path, hostPort(a.remote2, 9090),
						[]string{"server=remote9090 peer=" + a.pod}},
					{"own pod ip, not listed: not captured", p.path, hostPort(a.pod, 8081),
						[]string{"server=pod8081 peer=" + a.pod}},
				} {
					src := ""
					if tc.from == p.remotePath {
						src = a.remote
					}
					if got := dial(t, tc.from, src, tc.addr, ""); !slices.Equal(got, tc.want) {
						t.Errorf("%s %s (%s):\n got %q\nwant %q", f, tc.name, tc.addr, got, tc.want)
					}
				}
			}
		})
	}
}
