package proxy

// Tests for each defect of the proxy-correctness issue that needs timing, several connections
// or a real peer (curl, Python's http.server) rather than one row of the corpus.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// readHead reads one request head (through the blank line) from br.
func readHeadLines(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// RFC 9112 9.3.1 / RFC 9110 9.2.2: a proxy MUST NOT automatically retry non-idempotent
// requests. A pooled connection that the app closes after reading the request head is the
// case: an idempotent request without a body is sent once more on a new connection (and
// counted), any other request gets 502 and reaches the app once.
func TestRetryOnlyIdempotent(t *testing.T) {
	tests := []struct {
		method, body string
		retried      bool
	}{
		{"GET", "", true}, {"HEAD", "", true}, {"DELETE", "", true}, {"PUT", "", true},
		{"POST", "", false}, {"PATCH", "", false}, {"POST", "data", false}, {"PUT", "data", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+"/"+tt.body, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string // request lines the app read
			conns := 0
			up := tcpServer(t, func(c *net.TCPConn) {
				mu.Lock()
				conns++
				first := conns == 1
				mu.Unlock()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					head, err := readHeadLines(br)
					if err != nil {
						return
					}
					mu.Lock()
					seen = append(seen, strings.SplitN(head, "\r\n", 2)[0])
					mu.Unlock()
					if first && n == 1 {
						return // the app drops the connection under the second request
					}
					if strings.Contains(head, "Content-Length: 4") {
						io.CopyN(io.Discard, br, 4)
					}
					io.WriteString(c, okReply)
				}
			})
			h := startProxy(t, up, nil)
			if got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.out) }, getB); err != nil || got != okReply {
				t.Fatalf("first request: %q %v", got, err)
			}
			req := fmt.Sprintf("%s /x HTTP/1.1\r\nHost: x\r\n", tt.method)
			if tt.body != "" {
				req += "Content-Length: 4\r\n\r\n" + tt.body
			} else {
				req += "\r\n"
			}
			got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.out) }, req)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			n := 0
			for _, l := range seen {
				if strings.HasPrefix(l, tt.method+" /x") {
					n++
				}
			}
			mu.Unlock()
			retries := testutil.ToFloat64(h.s.m.retriesBy[Outbound])
			want := okReply
			if tt.method == "HEAD" {
				want = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
			}
			if tt.retried {
				if got != want || n != 2 || retries != 1 {
					t.Errorf("got %q, the app saw it %d times, retries %v; want the answer, 2 and 1", got, n, retries)
				}
			} else if got != reply502 || n != 1 || retries != 0 {
				t.Errorf("got %q, the app saw it %d times, retries %v; want 502, 1 and 0", got, n, retries)
			}
		})
	}
}

// A pooled connection that the app closed while it was idle is noticed before it is used:
// no request is written to it, nothing is retried.
func TestClosedIdleUpstreamIsNotUsed(t *testing.T) {
	closed := make(chan struct{}, 8)
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := readHeadLines(br); err != nil {
			return
		}
		io.WriteString(c, okReply)
		c.Close()
		closed <- struct{}{}
	})
	h := startProxy(t, up, nil)
	for i := 0; i < 5; i++ {
		got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.out) }, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
		if err != nil || got != okReply {
			t.Fatalf("request %d: %q %v", i, got, err)
		}
		<-closed // the app has closed its end: the FIN is on its way or there
	}
	if r := testutil.ToFloat64(h.s.m.retriesBy[Outbound]); r != 0 {
		t.Errorf("retries = %v, want 0", r)
	}
}

// silentApp reads request heads and never answers.
func silentApp(t *testing.T) string {
	return tcpServer(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
	})
}

// RFC 9110 10.1.1: curl sends "Expect: 100-continue" and waits; an app that never answers
// 100 (Python's http.server, most hand-written servers) must still get the body.
func TestExpectContinueCurl(t *testing.T) {
	var got bytes.Buffer
	var mu sync.Mutex
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		mu.Lock()
		io.Copy(&got, req.Body)
		mu.Unlock()
		io.WriteString(c, okReply)
	})
	h := startProxy(t, up, func(c *Config) { c.ExpectContinueTimeout = 200 * time.Millisecond })
	file := filepath.Join(t.TempDir(), "body")
	body := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// curl would wait 60 s for 100 Continue: only the proxy's own wait can release the body.
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--expect100-timeout", "60", "-H", "Expect: 100-continue",
		"--data-binary", "@"+file, "http://"+h.in+"/upload").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if string(out) != "ok" || !bytes.Equal(got.Bytes(), body) {
		t.Errorf("curl got %q, the app got %d bytes, want ok and %d", out, got.Len(), len(body))
	}
	waitActive(t, h.s, 0)
}

// An app that never answers gets 504 after StreamIdleTimeout; every client connection is
// released (the active gauge returns to its baseline).
func TestSilentUpstreamTimesOut(t *testing.T) {
	h := startProxy(t, silentApp(t), func(c *Config) { c.StreamIdleTimeout = 200 * time.Millisecond })
	got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.in) }, getB)
	if err != nil {
		t.Fatal(err)
	}
	if want := "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	waitActive(t, h.s, 0)
}

// Ten clients that send "Expect: 100-continue" and then nothing cannot lock others out: the
// limit is per capture port, and each of them is released (100 Continue from the proxy, then
// 408 when the body does not come).
func TestExpectClientsDoNotLockOut(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	// Inbound goes to an app that reads and never answers, outbound to one that answers.
	silent := netip.MustParseAddrPort(silentApp(t))
	answering := netip.MustParseAddrPort(l.Addr().String())
	var outPort atomic.Int32
	h := startProxyDst(t, func(c *net.TCPConn) (netip.AddrPort, error) {
		if c.LocalAddr().(*net.TCPAddr).Port == int(outPort.Load()) {
			return answering, nil
		}
		return silent, nil
	}, func(c *Config) {
		c.MaxConnections = 10
		c.ExpectContinueTimeout = 50 * time.Millisecond
		c.StreamIdleTimeout = 500 * time.Millisecond
		outPort.Store(int32(c.OutboundPort))
	})
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp4", h.in)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n")
		conns = append(conns, c)
	}
	// Outbound is another port with a limit of its own.
	if got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.out) }, getB); err != nil || !strings.HasSuffix(got, "ok") {
		t.Fatalf("outbound during the inbound flood: %q %v", got, err)
	}
	for i, c := range conns {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(c)
		if want := continue1 + reply408; string(b) != want {
			t.Errorf("client %d got %q, want %q", i, b, want)
		}
	}
	waitActive(t, h.s, 0)
	// And the inbound port takes connections again.
	c, err := net.Dial("tcp4", h.in)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, getB)
	if b, _ := io.ReadAll(c); string(b) != "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" {
		t.Errorf("inbound after the flood: %q, want the silent app's 504", b)
	}
}

// A stock Python http.server app with the common do_HEAD = do_GET writes a body after every
// HEAD response: no other client may see it, in HTTP/1.0 or HTTP/1.1 mode.
func TestPythonHeadIsGet(t *testing.T) {
	for _, proto := range []string{"HTTP/1.0", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			script := `
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = sys.argv[1]
    def do_GET(self):
        body = b"hello from python"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
`
			cmd := exec.Command("python3", "-c", script, proto)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			var port int
			if _, err := fmt.Fscan(bufio.NewReader(stdout), &port); err != nil {
				t.Fatal(err)
			}
			h := startProxy(t, fmt.Sprintf("127.0.0.1:%d", port), nil)
			cl := client(h.out)
			for i := 0; i < 20; i++ {
				resp, err := cl.Head("http://x/")
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("HEAD %d: %v %v", i, resp, err)
				}
				resp.Body.Close()
				// A new client (no shared client-side connection): only the pool links them.
				got, err := get(client(h.out), "http://x/")
				if err != nil || got != "hello from python" {
					t.Fatalf("GET %d after HEAD: %q %v", i, got, err)
				}
			}
		})
	}
}

// A 2xx answer to CONNECT turns the connection into a tunnel (RFC 9110 9.3.6).
func TestConnectTunnel(t *testing.T) {
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		head, err := readHeadLines(br)
		if err != nil || !strings.HasPrefix(head, "CONNECT db:5432 HTTP/1.1\r\n") {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		io.Copy(c, br) // echo
		c.CloseWrite()
	})
	h := startProxy(t, up, nil)
	got, err := sendAll(func() (net.Conn, error) { return net.Dial("tcp4", h.out) },
		"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nping through the tunnel")
	if err != nil {
		t.Fatal(err)
	}
	if want := "HTTP/1.1 200 Connection established\r\n\r\nping through the tunnel"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A raw relay closes when no byte moved in either direction for TCPIdleTimeout, and stays
// open while bytes move in one direction only.
func TestRawRelayIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		cmd, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if cmd == "\x00stream\n" {
			// One byte every idle/4 for 3 idle periods: the client sends nothing meanwhile.
			tick := time.NewTicker(idle / 4)
			defer tick.Stop()
			for i := 0; i < 12; i++ {
				<-tick.C
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
			}
			c.Write([]byte("done\n"))
		}
		io.Copy(io.Discard, br)
	})
	h := startProxy(t, up, func(c *Config) { c.TCPIdleTimeout = idle })
	t.Run("one-way traffic keeps it open", func(t *testing.T) {
		c, err := net.Dial("tcp4", h.out)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "\x00stream\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "............done\n" {
			t.Fatalf("got %q %v", line, err)
		}
	})
	t.Run("idle both ways closes it", func(t *testing.T) {
		c, err := net.Dial("tcp4", h.out)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "\x00idle\n")
		start := time.Now()
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Fatalf("got %q %v, want the proxy to close", b, err)
		}
		if d := time.Since(start); d < idle {
			t.Errorf("closed after %s, before the idle timeout %s", d, idle)
		}
	})
	waitActive(t, h.s, 0)
}

// A client that opens a connection and sends nothing (a server-first protocol) is relayed
// raw, and the relay has an idle timeout too.
func TestSilentClientRawRelayTimesOut(t *testing.T) {
	up := tcpServer(t, func(c *net.TCPConn) {
		io.WriteString(c, "220 banner\r\n")
		io.Copy(io.Discard, c)
	})
	h := startProxy(t, up, func(c *Config) { c.PeekTimeout = 50 * time.Millisecond; c.TCPIdleTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp4", h.out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "220 banner\r\n" {
		t.Fatalf("got %q %v, want the banner, then the close", b, err)
	}
	waitActive(t, h.s, 0)
}

func TestApplyConcurrency(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	cur := runtime.GOMAXPROCS(0)
	n, source := ApplyConcurrency(1)
	switch {
	case cur < runtime.NumCPU():
		if n != cur || source != "CPU limit" {
			t.Errorf("under a CPU limit of %d: got %d (%s)", cur, n, source)
		}
	case cur > 1:
		if n != 1 || runtime.GOMAXPROCS(0) != 1 || source != "concurrency setting" {
			t.Errorf("got %d (%s), GOMAXPROCS %d; want 1", n, source, runtime.GOMAXPROCS(0))
		}
	}
}

// Each way an upstream connection is kept out of the pool is counted by its reason: bytes
// after the end of a response (leftover) and bytes that arrive while it is idle (unsolicited).
func TestDiscardReasons(t *testing.T) {
	idle := make(chan net.Conn, 1)
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			head, err := readHeadLines(br)
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(head, "GET /extra "):
				io.WriteString(c, okReply+"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
			case strings.HasPrefix(head, "GET /idle "):
				io.WriteString(c, okReply)
				idle <- c
			default:
				io.WriteString(c, okReply)
			}
		}
	})
	h := startProxy(t, up, nil)
	dial := func() (net.Conn, error) { return net.Dial("tcp4", h.out) }
	for _, path := range []string{"/extra", "/b"} {
		if got, err := sendAll(dial, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil || got != okReply {
			t.Fatalf("%s: %q %v", path, got, err)
		}
	}
	if got, err := sendAll(dial, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil || got != okReply {
		t.Fatalf("/idle: %q %v", got, err)
	}
	c := <-idle
	io.WriteString(c, reply408) // unsolicited, on the pooled connection
	c.Close()
	if got, err := sendAll(dial, getB); err != nil || got != okReply {
		t.Fatalf("after the unsolicited 408: %q %v", got, err)
	}
	leftover := testutil.ToFloat64(h.s.m.discardedBy[Outbound][discardLeftover])
	unsolicited := testutil.ToFloat64(h.s.m.discardedBy[Outbound][discardUnsolicited])
	if leftover != 1 || unsolicited != 1 {
		t.Errorf("discarded: leftover %v, unsolicited %v; want 1 and 1", leftover, unsolicited)
	}
}

// A client that stops reading its response is released after StreamIdleTimeout: the proxy's
// writes to it wait no longer than that.
func TestSlowReaderIsReleased(t *testing.T) {
	up := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := readHeadLines(br); err != nil {
			return
		}
		const size = 256 << 20
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		io.CopyN(c, zeroes{}, size) // ends when the proxy closes its upstream side
	})
	h := startProxy(t, up, func(c *Config) { c.StreamIdleTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp4", h.out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, getB) // and never read
	waitActive(t, h.s, 0)
}

type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
