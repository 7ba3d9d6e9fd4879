package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is an access-log sink safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			panic(fmt.Sprintf("access-log line %q: %v", l, err))
		}
		out = append(out, m)
	}
	return out
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// loadCount counts the answered calls of a load test (the drain tests) and says when the
// n-th is answered, so that the test waits for its load as an event.
type loadCount struct {
	atomic.Int64
	n       int64
	reached chan struct{}
}

func newLoadCount(n int64) *loadCount { return &loadCount{n: n, reached: make(chan struct{})} }

// answered counts one answered call.
func (c *loadCount) answered() {
	if c.Add(1) == c.n {
		close(c.reached)
	}
}

// wait returns once n calls are answered; it fails the test after timeout.
func (c *loadCount) wait(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.reached:
	case <-time.After(timeout):
		t.Fatalf("no load: %d of %d calls answered in %v", c.Load(), c.n, timeout)
	}
}

// harness is an in-process proxy whose "original destination" is fixed to upstream (no
// REDIRECT rules in unit tests; the privileged tests use real ones).
type harness struct {
	s      *Server
	log    *syncBuffer
	in     string        // inbound capture address
	out    string        // outbound capture address
	done   chan struct{} // closed when Run returns
	err    error
	cancel context.CancelFunc
}

func startProxy(t testing.TB, upstream string, mod func(*Config)) *harness {
	t.Helper()
	dst := netip.MustParseAddrPort(upstream)
	return startProxyDst(t, func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }, mod)
}

func startProxyDst(t testing.TB, dstFn func(*net.TCPConn) (netip.AddrPort, error), mod func(*Config)) *harness {
	t.Helper()
	// freePort's port may be taken by another process before the proxy listens on it (the
	// machine runs other tests): the proxy then fails at once, and another pair is tried.
	for attempt := 1; ; attempt++ {
		h, err := tryStartProxy(t, dstFn, mod)
		if err == nil {
			return h
		}
		if attempt == 5 {
			t.Fatal(err)
		}
	}
}

func tryStartProxy(t testing.TB, dstFn func(*net.TCPConn) (netip.AddrPort, error), mod func(*Config)) (*harness, error) {
	t.Helper()
	cfg := Defaults()
	cfg.InboundPort, cfg.OutboundPort = freePort(t), freePort(t)
	cfg.AdminAddr, cfg.HealthAddr, cfg.PrometheusAddr = "off", "off", "off"
	cfg.DrainTimeout = 10 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	h := &harness{log: &syncBuffer{}, done: make(chan struct{})}
	s, err := New(cfg, h.log, NewLogger(io.Discard, cfg.LogLevel))
	if err != nil {
		t.Fatal(err)
	}
	s.originalDst = dstFn
	h.s = s
	h.in = fmt.Sprintf("127.0.0.1:%d", cfg.InboundPort)
	h.out = fmt.Sprintf("127.0.0.1:%d", cfg.OutboundPort)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.err = s.Run(ctx); close(h.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		select {
		case <-h.done:
			return nil, fmt.Errorf("proxy stopped before it was ready: %v", h.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return h, nil
}

// client returns an HTTP client whose connections all go to addr.
func client(addr string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		ExpectContinueTimeout: 10 * time.Second,
		MaxIdleConnsPerHost:   8,
	}}
}

func upstreamAddr(u *httptest.Server) string {
	return u.Listener.Addr().String()
}

func TestHTTPProxying(t *testing.T) {
	var mu sync.Mutex
	var peers []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		peers = append(peers, r.RemoteAddr)
		mu.Unlock()
		switch r.URL.Path {
		case "/echo":
			// Read the whole body first: Go's HTTP/1 server stops reading a request body
			// once the response starts.
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		case "/stream":
			fl := w.(http.Flusher)
			for i := 0; i < 5; i++ {
				fmt.Fprintf(w, "part%d,", i)
				fl.Flush()
			}
		case "/status":
			w.WriteHeader(http.StatusTeapot)
		default:
			io.WriteString(w, "hello "+r.Host)
		}
	}))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), nil)

	tests := []struct {
		name      string
		addr      string
		method    string
		path      string
		body      io.Reader
		chunked   bool
		expect    bool
		close     bool
		want      string
		status    int
		direction string
	}{
		{name: "get inbound", addr: h.in, method: "GET", path: "/", want: "hello svc.test", status: 200, direction: "inbound"},
		{name: "get outbound", addr: h.out, method: "GET", path: "/", want: "hello svc.test", status: 200, direction: "outbound"},
		{name: "post length", addr: h.out, method: "POST", path: "/echo", body: strings.NewReader("payload"), want: "payload", status: 200, direction: "outbound"},
		{name: "post chunked", addr: h.out, method: "POST", path: "/echo", body: strings.NewReader(strings.Repeat("x", 100000)), chunked: true, want: strings.Repeat("x", 100000), status: 200, direction: "outbound"},
		{name: "expect continue", addr: h.in, method: "PUT", path: "/echo", body: strings.NewReader("after-continue"), expect: true, want: "after-continue", status: 200, direction: "inbound"},
		{name: "streamed chunked response", addr: h.in, method: "GET", path: "/stream", want: "part0,part1,part2,part3,part4,", status: 200, direction: "inbound"},
		{name: "status passes", addr: h.in, method: "DELETE", path: "/status", status: 418, direction: "inbound"},
		{name: "client closes", addr: h.out, method: "GET", path: "/", close: true, want: "hello svc.test", status: 200, direction: "outbound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.log.lines())
			req, _ := http.NewRequest(tt.method, "http://svc.test"+tt.path, tt.body)
			if tt.body != nil && tt.chunked {
				req.ContentLength = -1
			}
			if tt.expect {
				req.Header.Set("Expect", "100-continue")
			}
			req.Close = tt.close
			resp, err := client(tt.addr).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || string(got) != tt.want {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, clipStr(string(got)), tt.status, clipStr(tt.want))
			}
			line := waitLogLine(t, h.log, before)
			if line["direction"] != tt.direction || line["method"] != tt.method || line["path"] != tt.path ||
				line["authority"] != "svc.test" || line["status"] != float64(tt.status) || line["original_dst"] != upstreamAddr(up) {
				t.Errorf("access log %v", line)
			}
			if line["response_bytes"] != float64(len(tt.want)) {
				t.Errorf("response_bytes %v, want %d", line["response_bytes"], len(tt.want))
			}
		})
	}
	// Inbound forwarding comes from 127.0.0.6.
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(peers[0], "127.0.0.6:") {
		t.Errorf("inbound request came from %s, want 127.0.0.6", peers[0])
	}
	if strings.HasPrefix(peers[1], "127.0.0.6:") {
		t.Errorf("outbound request came from %s", peers[1])
	}
}

func clipStr(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// waitLogLine waits for the access log to have more than n lines and returns line n.
func waitLogLine(t *testing.T, l *syncBuffer, n int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if lines := l.lines(); len(lines) > n {
			return lines[n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access-log line %d", n+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rawExchange(t *testing.T, addr, send string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, send)
	got, _ := io.ReadAll(c)
	return string(got)
}

func TestBadRequests(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), func(c *Config) {
		c.MaxHeaderBytes = 2048
		c.HeaderTimeout = 300 * time.Millisecond
	})
	tests := []struct {
		name, send, wantPrefix string
	}{
		{"malformed", "GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n", "HTTP/1.1 400 "},
		{"smuggling", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 "},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nBig: " + strings.Repeat("a", 4000) + "\r\n\r\n", "HTTP/1.1 431 "},
		{"slow headers", "GET / HTTP/1.1\r\nHost: x\r\n", "HTTP/1.1 408 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rawExchange(t, h.out, tt.send); !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("got %q, want %q...", got, tt.wantPrefix)
			}
		})
	}
	// The proxy still serves after all that.
	if got := rawExchange(t, h.out, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("after bad requests: %q", got)
	}
}

func TestUpstreamDown(t *testing.T) {
	h := startProxy(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), nil)
	if got := rawExchange(t, h.out, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 502 ") {
		t.Errorf("got %q, want 502", got)
	}
}

// tcpServer runs handle for every connection accepted on a loopback port.
func tcpServer(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

func TestRawRelay(t *testing.T) {
	tests := []struct {
		name   string
		server func(*net.TCPConn)
		send   string
		want   string
	}{
		{
			// Server-first (MySQL, SMTP): the client says nothing until the banner comes.
			name: "server first",
			server: func(c *net.TCPConn) {
				io.WriteString(c, "220 banner\r\n")
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "echo "+line)
			},
			send: "", want: "220 banner\r\necho QUIT\r\n",
		},
		{
			// Half-close: the server answers only after the client's end of stream.
			name: "half close",
			server: func(c *net.TCPConn) {
				all, _ := io.ReadAll(c)
				io.WriteString(c, "got "+string(all))
			},
			send: "\x16\x03\x01binary TLS-ish data", want: "got \x16\x03\x01binary TLS-ish data",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startProxy(t, tcpServer(t, tt.server), nil)
			c, err := net.Dial("tcp", h.out)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			tc := c.(*net.TCPConn)
			if tt.send == "" {
				br := bufio.NewReader(tc)
				banner, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				io.WriteString(tc, "QUIT\r\n")
				rest, _ := io.ReadAll(br)
				if got := banner + string(rest); got != tt.want {
					t.Fatalf("got %q, want %q", got, tt.want)
				}
				return
			}
			io.WriteString(tc, tt.send)
			tc.CloseWrite()
			got, _ := io.ReadAll(tc)
			if string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUpgradeTunnel(t *testing.T) {
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br)
	})
	h := startProxy(t, up, nil)
	c, err := net.Dial("tcp", h.in)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("status %q", status)
	}
	for {
		line, _ := br.ReadString('\n')
		if line == "\r\n" || line == "" {
			break
		}
	}
	io.WriteString(c, "-more")
	buf := make([]byte, len("early-more"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "early-more" {
		t.Fatalf("echo %q %v", buf, err)
	}
}

func TestRefusals(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()

	t.Run("loop", func(t *testing.T) {
		h := startProxyDst(t, func(c *net.TCPConn) (netip.AddrPort, error) { return c.LocalAddr().(*net.TCPAddr).AddrPort(), nil }, nil)
		if got := rawExchange(t, h.out, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "" {
			t.Errorf("looping connection got %q, want it closed", got)
		}
		if h.s.Stats().Refused != 1 {
			t.Errorf("refused = %d", h.s.Stats().Refused)
		}
	})
	t.Run("connection limit", func(t *testing.T) {
		h := startProxy(t, upstreamAddr(up), func(c *Config) { c.MaxConnections = 1 })
		first, err := net.Dial("tcp", h.out)
		if err != nil {
			t.Fatalf("%v (stats %+v)", err, h.s.Stats())
		}
		defer first.Close()
		io.WriteString(first, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		first.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(first)
		if status, _ := br.ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("first connection: %q", status)
		}
		// The first connection is still open: a second one is over the limit and is reset
		// (which the dial itself may already report).
		second, err := net.Dial("tcp", h.out)
		if err == nil {
			defer second.Close()
			second.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(second, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if got, _ := io.ReadAll(second); len(got) != 0 {
				t.Errorf("second connection got %q, want it closed", got)
			}
		}
		if h.s.Stats().Refused != 1 {
			t.Errorf("refused = %d, want 1", h.s.Stats().Refused)
		}
	})
}

func TestPooledUpstreamClosedIsRetried(t *testing.T) {
	// An upstream that closes every connection after one response, without saying so. Each
	// next request starts after that close: the pooled connection is dead, and the client
	// still gets its answer (the connection is discarded, or the request retried on a new one).
	closed := make(chan struct{}, 1)
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close()
		closed <- struct{}{}
	})
	h := startProxy(t, up, nil)
	cl := client(h.out)
	for i := 0; i < 5; i++ {
		resp, err := cl.Get("http://x/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		select {
		case <-closed: // the upstream closed the connection the proxy pooled: the case under test
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream did not close its connection")
		}
	}
}

func TestDrainFinishesInFlight(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		io.WriteString(w, "done")
	}))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), nil)
	result := make(chan string, 1)
	go func() {
		resp, err := client(h.in).Get("http://x/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s close=%v", resp.StatusCode, b, resp.Close)
	}()
	select {
	case <-arrived: // the request is in flight through the proxy
	case <-time.After(10 * time.Second):
		t.Fatal("request never reached the app")
	}
	h.s.Drain()
	for deadline := time.Now().Add(10 * time.Second); h.s.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("the proxy still reports ready 10 s after Drain")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// No new connections once draining.
	if c, err := net.DialTimeout("tcp", h.in, time.Second); err == nil {
		c.Close()
		t.Error("a draining proxy accepted a connection")
	}
	close(release)
	if got := <-result; got != "200 done close=true" {
		t.Errorf("in-flight request: %s", got)
	}
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}

func TestBindFlagsEnvironment(t *testing.T) {
	t.Setenv("SIDELANE_PROXY_INBOUND_PORT", "16006")
	t.Setenv("SIDELANE_PROXY_IDLE_TIMEOUT", "7s")
	cfg := Defaults()
	fs := newFlagSet()
	if err := BindFlags(fs, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-outbound-port", "16001"}); err != nil {
		t.Fatal(err)
	}
	if cfg.InboundPort != 16006 || cfg.OutboundPort != 16001 || cfg.IdleTimeout != 7*time.Second {
		t.Errorf("config %+v", cfg)
	}
	t.Setenv("SIDELANE_PROXY_MAX_CONNECTIONS", "many")
	cfg = Defaults()
	if err := BindFlags(newFlagSet(), &cfg); err == nil || !strings.Contains(err.Error(), "SIDELANE_PROXY_MAX_CONNECTIONS") {
		t.Errorf("bad environment value: err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad port", func(c *Config) { c.InboundPort = 70000 }, "inbound-port 70000"},
		{"same ports", func(c *Config) { c.OutboundPort = c.InboundPort }, "both"},
		{"no connections", func(c *Config) { c.MaxConnections = 0 }, "max-connections"},
		{"zero timeout", func(c *Config) { c.PeekTimeout = 0 }, "peek-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		in    string
		final bool
		want  verdict
	}{
		{"GET ", false, isHTTP1},
		{"GE", false, undecided},
		{"GE", true, isHTTP1},
		{"P", false, undecided},
		{"", false, undecided},
		{"", true, notHTTP1},
		{"OPTIONS", false, undecided},
		// Any token is a method: RFC 9112 3.
		{"PURGE / HTTP/1.1\r\n", false, isHTTP1},
		{"PROPFIND /x HTTP/1.1\n", false, isHTTP1},
		{"PURGE / HT", false, undecided},
		{"PURGE / HT", true, isHTTP1}, // a slow request line still meets the parser
		{"PURGE /", true, isHTTP1},
		// Leading empty lines are skipped (RFC 9112 2.2).
		{"\r\nPURGE / HTTP/1.1\r\n", false, isHTTP1},
		{"\r\n\r\nGET", true, isHTTP1},
		{"\r\n", false, undecided},
		{"\r\n", true, notHTTP1},
		// Claims to be HTTP, malformed: the parser answers 400 or 505.
		{"GET /a b HTTP/1.1\r\n", false, isHTTP1},
		{"GET /\r\n", false, isHTTP1},
		{"FOO / HTTP/3.0\r\n", false, isHTTP1},
		// Not HTTP/1.x.
		{"PRI * HTTP/2.0\r\n", false, notHTTP1},
		{"\x16\x03\x01", false, notHTTP1},
		{"get key\r\n", false, notHTTP1},     // memcached
		{"set k 0 0 5\r\n", false, notHTTP1}, // memcached
		{"*1\r\n$4\r\nPING\r\n", false, notHTTP1},
		{"PING\r\n", false, notHTTP1},
		{"SSH-2.0-OpenSSH\r\n", false, notHTTP1},
		{"FOO /x BAR\r\n", false, notHTTP1},
		{"FOO /x HTTP/x\r\n", false, notHTTP1},
		{"\x00\x00", false, notHTTP1},
	}
	for _, tt := range tests {
		if got := classify([]byte(tt.in), tt.final); got != tt.want {
			t.Errorf("classify(%q, final=%v) = %d, want %d", tt.in, tt.final, got, tt.want)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"plain", "quo\"te\\", "ctl\x00\x1f\x7f", "ünïcode", "bad\xff"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, []byte(s)), &got); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }

func TestIdleTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", h.in)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	// Kept alive, then closed by the proxy once idle for longer than IdleTimeout.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF", err)
	}
}

func TestAdminHealthAndMetrics(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), nil)
	if _, err := client(h.out).Get("http://x/"); err != nil {
		t.Fatal(err)
	}
	// Requests are counted once answered: wait for it.
	for deadline := time.Now().Add(10 * time.Second); h.s.Stats().HTTPRequests == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	call := func(hd http.Handler, method, path string) (int, string) {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}
	tests := []struct {
		name     string
		h        http.Handler
		method   string
		path     string
		code     int
		contains string
	}{
		{"ready", h.s.healthHandler(), "GET", "/healthz/ready", 200, "ready"},
		{"stats", h.s.adminHandler(), "GET", "/stats", 200, `"httpRequests": 1`},
		{"config", h.s.adminHandler(), "GET", "/config", 200, `"inboundSourceIPv4": "127.0.0.6"`},
		{"drain needs POST", h.s.adminHandler(), "GET", "/drain", 405, ""},
		{"metrics", h.s.promMux(), "GET", "/stats/prometheus", 200,
			`sidelane_proxy_requests_total{code="200",direction="outbound",grpc_status="",method="GET"} 1`},
		{"metric names", h.s.promMux(), "GET", "/stats/prometheus", 200, `sidelane_proxy_connections_total{direction="outbound"} 1`},
		{"duration histogram", h.s.promMux(), "GET", "/stats/prometheus", 200, `sidelane_proxy_request_duration_seconds_count{direction="outbound"} 1`},
		{"response bytes", h.s.promMux(), "GET", "/stats/prometheus", 200, `sidelane_proxy_response_bytes_total{direction="outbound"} 2`},
		{"drain", h.s.adminHandler(), "POST", "/drain", 202, "draining"},
		{"not ready while draining", h.s.healthHandler(), "GET", "/healthz/ready", 503, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(tt.h, tt.method, tt.path)
			if tt.name == "not ready while draining" {
				for deadline := time.Now().Add(10 * time.Second); code != tt.code && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
					code, body = call(tt.h, tt.method, tt.path)
				}
			}
			if code != tt.code || !strings.Contains(body, tt.contains) {
				t.Errorf("%s %s: %d %q, want %d containing %q", tt.method, tt.path, code, body, tt.code, tt.contains)
			}
		})
	}
}

func TestExpectContinueRefused(t *testing.T) {
	// The upstream answers at once without asking for the body (no 100 Continue).
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusExpectationFailed)
	}))
	defer up.Close()
	h := startProxy(t, upstreamAddr(up), nil)
	c, err := net.Dial("tcp", h.in)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	// The body was never sent, so the connection's framing is unknown: the proxy says so and closes.
	if resp.StatusCode != http.StatusExpectationFailed || !resp.Close {
		t.Errorf("got %d close=%v, want 417 with Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
}

// Main's exit codes: 2 for a command line it cannot parse, 1 for a configuration it refuses
// (naming the setting), 0 after a drain.
func TestMainExitCodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // drain at once
	var stderr bytes.Buffer
	if code := Main(ctx, []string{"-no-such-flag"}, io.Discard, &stderr); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	stderr.Reset()
	if code := Main(ctx, []string{"-log-level", "loud"}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "log-level") {
		t.Errorf("bad log level: exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("SIDELANE_PROXY_MAX_CONNECTIONS", "many")
	stderr.Reset()
	if code := Main(ctx, nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "SIDELANE_PROXY_MAX_CONNECTIONS") {
		t.Errorf("bad environment: exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("SIDELANE_PROXY_MAX_CONNECTIONS", "10")
	// The capture ports are fixed numbers that Main binds on every address: a port found free
	// may be taken by a parallel test's socket before Main binds it, and then another pair is
	// tried (a few times at most).
	for attempt := 1; ; attempt++ {
		stderr.Reset()
		args := []string{"-inbound-port", strconv.Itoa(freePort(t)), "-outbound-port", strconv.Itoa(freePort(t)),
			"-admin-addr", "off", "-health-addr", "off", "-prometheus-addr", "off"}
		code := Main(ctx, args, io.Discard, &stderr)
		if code == 1 && strings.Contains(stderr.String(), "address already in use") && attempt < 5 {
			continue
		}
		if code != 0 {
			t.Errorf("drain: exit %d, stderr %q", code, stderr.String())
		}
		break
	}
}
