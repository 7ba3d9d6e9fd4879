package proxy

// Privileged tests: the real sidelane-proxy binary, run as uid/gid 1337 in a pod network
// namespace with the project's own capture rules (package capture), with a "remote" peer
// namespace on the other end of a veth pair. Every traffic class of docs/design.md is checked
// through the proxy's Prometheus metrics and its access log.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

// proxyBinary is the sidelane-proxy built by TestMain (root only).
var proxyBinary string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "sidelane-proxy-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			os.Chmod(dir, 0o755) // the proxy runs as uid 1337
			proxyBinary = filepath.Join(dir, "sidelane-proxy")
			out, err := exec.Command("go", "build", "-o", proxyBinary, "github.com/sidelane/sidelane/proxy").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build sidelane-proxy: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

const (
	podIPv4  = "10.77.0.2"
	peerIPv4 = "10.77.0.1"
	podIPv6  = "fd77::2"
	peerIPv6 = "fd77::1"
	appPort  = 8080 // HTTP app in the pod and in the peer
	rawPort  = 9000 // non-HTTP app in the pod (reply after half-close)
	// Ports excluded by annotation in the test pod.
	exclInPort  = 8081
	exclOutPort = 8082
)

func runCmd(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// netnsPair creates the pod and peer namespaces joined by a veth pair, IPv4 and IPv6.
func netnsPair(t *testing.T) (pod, peer string) {
	t.Helper()
	id := randHex(3)
	podName, peerName := "sl-pxpod-"+id, "sl-pxpeer-"+id
	for _, n := range []string{podName, peerName} {
		runCmd(t, "ip", "netns", "add", n)
		n := n
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
		runCmd(t, "ip", "-n", n, "link", "set", "lo", "up")
	}
	vp, vr := "slp"+id, "slr"+id
	runCmd(t, "ip", "link", "add", vp, "netns", podName, "type", "veth", "peer", "name", vr, "netns", peerName)
	for _, c := range [][]string{
		{"-n", podName, "addr", "add", podIPv4 + "/24", "dev", vp},
		{"-n", podName, "addr", "add", podIPv6 + "/64", "dev", vp, "nodad"},
		{"-n", podName, "link", "set", vp, "up"},
		{"-n", peerName, "addr", "add", peerIPv4 + "/24", "dev", vr},
		{"-n", peerName, "addr", "add", peerIPv6 + "/64", "dev", vr, "nodad"},
		{"-n", peerName, "link", "set", vr, "up"},
	} {
		runCmd(t, "ip", c...)
	}
	return "/run/netns/" + podName, "/run/netns/" + peerName
}

// listenIn listens on addr inside the namespace at path.
func listenIn(t *testing.T, path, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := capture.InNetns(path, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dialIn connects from inside the namespace at path.
func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	var c net.Conn
	err := capture.InNetns(path, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// clientIn is an HTTP client whose connections start in the namespace at path.
func clientIn(path string, keepAlive bool) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return dialIn(ctx, path, addr) },
		DisableKeepAlives: !keepAlive,
	}}
}

// appHandler answers as the application "name" and tells who connected.
func appHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s", name, r.RemoteAddr)
	})
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(d)
		io.WriteString(w, "slow done")
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(c, &msg) != nil || websocket.Message.Send(c, msg) != nil {
				return
			}
		}
	}))
	return mux
}

// serveIn serves h on port for IPv4 and IPv6 inside the namespace at path.
func serveIn(t *testing.T, path string, port int, h http.Handler) {
	t.Helper()
	for _, nw := range []struct{ network, addr string }{{"tcp4", "0.0.0.0"}, {"tcp6", "[::]"}} {
		l := listenIn(t, path, nw.network, fmt.Sprintf("%s:%d", nw.addr, port))
		srv := &http.Server{Handler: h}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
	}
}

// proxyProc is the running proxy binary.
type proxyProc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{}
	err    error
}

// sigtermAndWait sends the proxy SIGTERM and waits for it to exit (40 s at most).
func (p *proxyProc) sigtermAndWait(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(40 * time.Second):
		t.Fatal("proxy did not exit after SIGTERM")
	}
}

// startProxyIn starts the proxy binary as uid/gid 1337 in the namespace at path and waits
// for its readiness endpoint.
func startProxyIn(t *testing.T, pod, peer string, args ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(proxyBinary, append([]string{"-drain-timeout", "20s"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: contract.ProxyUID, Gid: contract.ProxyGID},
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := capture.InNetns(pod, p.cmd.Start); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", p.stderr.b.String())
		}
	})
	cl := clientIn(peer, false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := cl.Get(fmt.Sprintf("http://%s:%d%s", podIPv4, contract.HealthPort, contract.HealthPath))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("proxy exited: %v\n%s", p.err, p.stderr.b.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counts are the proxy's counters by direction.
type counts struct{ connIn, connOut, reqIn, reqOut float64 }

// scrape reads the proxy's Prometheus endpoint (from the peer: class 3, never captured).
func scrape(t *testing.T, peer string) counts {
	t.Helper()
	resp, err := clientIn(peer, false).Get(fmt.Sprintf("http://%s:%d%s", podIPv4, contract.PrometheusPort, contract.PrometheusPath))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c counts
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		in := strings.Contains(line, `direction="inbound"`)
		switch {
		case strings.HasPrefix(line, "sidelane_proxy_connections_total{"):
			if in {
				c.connIn += v
			} else {
				c.connOut += v
			}
		case strings.HasPrefix(line, "sidelane_proxy_requests_total{"):
			if in {
				c.reqIn += v
			} else {
				c.reqOut += v
			}
		}
	}
	return c
}

func get(cl *http.Client, url string) (string, error) {
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return string(b), err
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

func TestTrafficClasses(t *testing.T) {
	testenv.RequireRoot(t)
	for _, backend := range []string{contract.BackendAuto, contract.BackendIPTables} {
		t.Run(backend, func(t *testing.T) { testTrafficClasses(t, backend) })
	}
}

func testTrafficClasses(t *testing.T, backend string) {
	pod, peer := netnsPair(t)
	settings, err := redirect.FromAnnotations(map[string]string{
		contract.AnnotationExcludeInboundPorts:  strconv.Itoa(exclInPort),
		contract.AnnotationExcludeOutboundPorts: strconv.Itoa(exclOutPort),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The backend is created in the host's namespace (iptables variant detection), then
	// applied in the pod's.
	b, err := capture.New(backend)
	if err != nil {
		t.Fatal(err)
	}
	err = capture.InNetns(pod, func() error { return b.Apply(rules.Build(settings, rules.IPv4, rules.IPv6)) })
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{appPort, exclInPort} {
		serveIn(t, pod, port, appHandler("pod-app"))
	}
	for _, port := range []int{appPort, exclOutPort} {
		serveIn(t, peer, port, appHandler("remote"))
	}
	raw := listenIn(t, pod, "tcp", fmt.Sprintf(":%d", rawPort))
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				all, _ := io.ReadAll(c)
				fmt.Fprintf(c, "raw got %d bytes: %s", len(all), all)
			}()
		}
	}()
	p := startProxyIn(t, pod, peer)
	fromPeer, fromPod := clientIn(peer, false), clientIn(pod, false)

	tests := []struct {
		name          string
		do            func() (string, error)
		wantBody      string // substring of the answer
		wantIn        float64
		wantOut       float64
		wantLogDst    string // original_dst of the access-log lines, when counted
		wantRemoteSrc string // the address the app saw, prefix
	}{
		{name: "1 remote to pod app", do: func() (string, error) { return get(fromPeer, "http://"+hostPort(podIPv4, appPort)+"/") },
			wantBody: "pod-app", wantIn: 1, wantLogDst: hostPort(podIPv4, appPort), wantRemoteSrc: "from 127.0.0.6:"},
		{name: "1 remote to pod app IPv6", do: func() (string, error) { return get(fromPeer, "http://"+hostPort(podIPv6, appPort)+"/") },
			wantBody: "pod-app", wantIn: 1, wantLogDst: hostPort(podIPv6, appPort), wantRemoteSrc: "from [::6]:"},
		{name: "2 pod app to remote", do: func() (string, error) { return get(fromPod, "http://"+hostPort(peerIPv4, appPort)+"/") },
			wantBody: "remote", wantOut: 1, wantLogDst: hostPort(peerIPv4, appPort), wantRemoteSrc: "from " + podIPv4},
		{name: "2 pod app to remote IPv6", do: func() (string, error) { return get(fromPod, "http://"+hostPort(peerIPv6, appPort)+"/") },
			wantBody: "remote", wantOut: 1, wantLogDst: hostPort(peerIPv6, appPort), wantRemoteSrc: "from [" + podIPv6 + "]"},
		{name: "3 scrape and health from outside", do: func() (string, error) {
			if _, err := get(fromPeer, fmt.Sprintf("http://%s:%d%s", podIPv4, contract.HealthPort, contract.HealthPath)); err != nil {
				return "", err
			}
			return get(fromPeer, fmt.Sprintf("http://%s%s", hostPort(podIPv6, contract.PrometheusPort), contract.PrometheusPath))
		}, wantBody: "sidelane_proxy_connections_total"},
		{name: "4 pod app to own pod IP", do: func() (string, error) { return get(fromPod, "http://"+hostPort(podIPv4, appPort)+"/") },
			wantBody: "pod-app", wantIn: 1, wantOut: 1, wantLogDst: hostPort(podIPv4, appPort), wantRemoteSrc: "from 127.0.0.6:"},
		{name: "4 pod app to own pod IP IPv6", do: func() (string, error) { return get(fromPod, "http://"+hostPort(podIPv6, appPort)+"/") },
			wantBody: "pod-app", wantIn: 1, wantOut: 1, wantLogDst: hostPort(podIPv6, appPort), wantRemoteSrc: "from [::6]:"},
		{name: "5 proxy uid to loopback", do: func() (string, error) { return curlAsProxy(pod, "http://"+hostPort("127.0.0.1", appPort)+"/") },
			wantBody: "pod-app from 127.0.0.1"},
		{name: "6 proxy uid to remote", do: func() (string, error) { return curlAsProxy(pod, "http://"+hostPort(peerIPv4, appPort)+"/") },
			wantBody: "remote from " + podIPv4},
		{name: "6 proxy uid to remote IPv6", do: func() (string, error) { return curlAsProxy(pod, "http://"+hostPort(peerIPv6, appPort)+"/") },
			wantBody: "remote from [" + podIPv6 + "]"},
		{name: "app to 127.0.0.1", do: func() (string, error) { return get(fromPod, "http://"+hostPort("127.0.0.1", appPort)+"/") },
			wantBody: "pod-app from 127.0.0.1"},
		{name: "app to ::1", do: func() (string, error) { return get(fromPod, "http://"+hostPort("::1", appPort)+"/") },
			wantBody: "pod-app from [::1]"},
		{name: "excluded inbound port", do: func() (string, error) { return get(fromPeer, "http://"+hostPort(podIPv4, exclInPort)+"/") },
			wantBody: "pod-app from " + peerIPv4},
		{name: "excluded outbound port", do: func() (string, error) { return get(fromPod, "http://"+hostPort(peerIPv6, exclOutPort)+"/") },
			wantBody: "remote from [" + podIPv6 + "]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := scrape(t, peer)
			logBefore := len(p.stdout.lines())
			body, err := tt.do()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(body, tt.wantBody) || !strings.Contains(body, tt.wantRemoteSrc) {
				t.Fatalf("answer %q, want %q and %q", clipStr(body), tt.wantBody, tt.wantRemoteSrc)
			}
			// Connections are counted at accept, before any answer: an uncounted one is
			// already visible. Requests are counted once answered: poll for them.
			var after counts
			deadline := time.Now().Add(15 * time.Second)
			for {
				after = scrape(t, peer)
				if after.reqIn-before.reqIn >= tt.wantIn && after.reqOut-before.reqOut >= tt.wantOut || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			got := counts{after.connIn - before.connIn, after.connOut - before.connOut, after.reqIn - before.reqIn, after.reqOut - before.reqOut}
			if want := (counts{tt.wantIn, tt.wantOut, tt.wantIn, tt.wantOut}); got != want {
				t.Fatalf("counted %+v, want %+v", got, want)
			}
			wantLines := int(tt.wantIn + tt.wantOut)
			var lines []map[string]any
			for deadline := time.Now().Add(10 * time.Second); ; {
				lines = p.stdout.lines()[logBefore:]
				if len(lines) >= wantLines || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if len(lines) != wantLines {
				t.Fatalf("access log: %d new lines, want %d: %v", len(lines), wantLines, lines)
			}
			dirs := map[string]int{}
			for _, l := range lines {
				dirs[l["direction"].(string)]++
				if l["original_dst"] != tt.wantLogDst || l["method"] != "GET" || l["path"] != "/" || l["status"] != float64(200) {
					t.Errorf("access log line %v", l)
				}
			}
			if dirs["inbound"] != int(tt.wantIn) || dirs["outbound"] != int(tt.wantOut) {
				t.Errorf("access log directions %v", dirs)
			}
		})
	}

	t.Run("raw TCP with half-close", func(t *testing.T) {
		before := scrape(t, peer)
		c, err := dialIn(context.Background(), peer, hostPort(podIPv4, rawPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		msg := "\x00\x01binary protocol \xff payload"
		io.WriteString(c, msg)
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if want := fmt.Sprintf("raw got %d bytes: %s", len(msg), msg); string(got) != want || err != nil {
			t.Fatalf("got %q (%v), want %q", got, err, want)
		}
		after := scrape(t, peer)
		if after.connIn-before.connIn != 1 || after.reqIn != before.reqIn {
			t.Errorf("raw connection counted %+v -> %+v, want one inbound connection and no request", before, after)
		}
	})

	t.Run("websocket echo", func(t *testing.T) {
		c, err := dialIn(context.Background(), peer, hostPort(podIPv4, appPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		cfg, err := websocket.NewConfig("ws://"+hostPort(podIPv4, appPort)+"/ws", "http://"+hostPort(peerIPv4, 1))
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.NewClient(cfg, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{"hello", strings.Repeat("w", 70000), "bye"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("echo %q (%v), want %q", clipStr(got), err, clipStr(msg))
			}
		}
	})

	t.Run("1 GiB streamed body, bounded memory", func(t *testing.T) {
		const size = 1 << 30
		body := io.LimitReader(zeroReader{}, size)
		req, _ := http.NewRequest("POST", "http://"+hostPort(podIPv4, appPort)+"/sink", body)
		req.ContentLength = -1 // chunked, streamed
		resp, err := clientIn(peer, false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != strconv.Itoa(size) {
			t.Fatalf("app received %q bytes, want %d", got, size)
		}
		hwm := peakRSS(t, p.cmd.Process.Pid)
		t.Logf("proxy peak RSS after 1 GiB: %.1f MB", float64(hwm)/(1<<20))
		if hwm > 100<<20 {
			t.Errorf("proxy peak RSS %d bytes, want < 100 MB", hwm)
		}
	})

	t.Run("SIGTERM under load loses nothing", func(t *testing.T) {
		testSIGTERMUnderLoad(t, p, peer)
	})
}

// curlAsProxy fetches url with curl running as the proxy's uid/gid in the namespace at path:
// the proxy's own traffic, which the rules must not capture.
func curlAsProxy(path, url string) (string, error) {
	cmd := exec.Command("curl", "-sS", "--max-time", "30", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: contract.ProxyUID, Gid: contract.ProxyGID}}
	var out []byte
	err := capture.InNetns(path, func() error {
		var err error
		out, err = cmd.Output()
		return err
	})
	return string(out), err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// peakRSS reads VmHWM of pid.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// testSIGTERMUnderLoad runs keep-alive clients against the proxy, sends SIGTERM and checks
// that every request the proxy accepted was answered; only new connections may be refused.
func testSIGTERMUnderLoad(t *testing.T, p *proxyProc, peer string) {
	var refused atomic.Int64
	ok := newLoadCount(200)
	var lostMu sync.Mutex
	var lost []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// A long request in flight when SIGTERM arrives must finish too.
	slow := make(chan error, 1)
	go func() {
		_, err := get(clientIn(peer, false), "http://"+hostPort(podIPv4, appPort)+"/slow?d=2s")
		slow <- err
	}()
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clientIn(peer, true)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+hostPort(podIPv4, appPort)+"/", nil)
				// The transport re-sends only a request the server provably never started, as any
				// HTTP client may; anything else that fails after the dial counts as lost.
				resp, err := cl.Transport.RoundTrip(req)
				if err != nil {
					var op *net.OpError
					if errors.As(err, &op) && op.Op == "dial" {
						refused.Add(1) // never accepted: the proxy stopped listening
						time.Sleep(10 * time.Millisecond)
						continue
					}
					lostMu.Lock()
					lost = append(lost, err.Error())
					lostMu.Unlock()
					continue
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					lostMu.Lock()
					lost = append(lost, fmt.Sprintf("status %d, %v", resp.StatusCode, err))
					lostMu.Unlock()
					continue
				}
				ok.answered()
			}
		}()
	}
	// Load first, then SIGTERM.
	ok.wait(t, 30*time.Second)
	atSignal := ok.Load()
	p.sigtermAndWait(t)
	close(stop)
	wg.Wait()
	if err := <-slow; err != nil {
		t.Errorf("request in flight at SIGTERM: %v", err)
	}
	if p.err != nil {
		t.Errorf("proxy exit: %v", p.err)
	}
	t.Logf("%d requests answered (%d before SIGTERM), %d connections refused after, %d lost", ok.Load(), atSignal, refused.Load(), len(lost))
	if len(lost) > 0 {
		t.Errorf("%d requests lost, e.g. %v", len(lost), lost[:min(len(lost), 5)])
	}
}

// TestCorpusThroughRules runs the conformance corpus (corpus_test.go) through the real binary
// as uid 1337 behind the real capture rules: each case's app listens in the pod, each client
// connects from the peer to the pod's address (inbound capture), and the exact bytes on both
// sides are checked. Afterwards the proxy's active-connection gauge is back at zero.
func TestCorpusThroughRules(t *testing.T) {
	testenv.RequireRoot(t)
	pod, peer := netnsPair(t)
	b, err := capture.New(contract.BackendAuto)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := redirect.FromAnnotations(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := capture.InNetns(pod, func() error { return b.Apply(rules.Build(settings, rules.IPv4, rules.IPv6)) }); err != nil {
		t.Fatal(err)
	}
	p := startProxyIn(t, pod, peer, "-expect-continue-timeout", "100ms")
	runCorpus(t, func(t *testing.T, i int) (net.Listener, func() (net.Conn, error)) {
		port := 20000 + i
		l := listenIn(t, pod, "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return l, func() (net.Conn, error) {
			return dialIn(context.Background(), peer, hostPort(podIPv4, port))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		active := scrapeValue(t, peer, `sidelane_proxy_active_connections{direction="inbound"}`)
		if active == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("active inbound connections = %v after the corpus, want 0\n%s", active, p.stderr.b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrapeValue returns the value of one series from the proxy's Prometheus endpoint.
func scrapeValue(t *testing.T, peer, series string) float64 {
	t.Helper()
	resp, err := clientIn(peer, false).Get(fmt.Sprintf("http://%s:%d%s", podIPv4, contract.PrometheusPort, contract.PrometheusPath))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
