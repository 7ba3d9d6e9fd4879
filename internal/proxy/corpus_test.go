package proxy

// The conformance corpus: one table of hostile and sloppy exchanges, each stating the exact
// bytes the app must receive and the exact bytes each client must get. It runs in-process
// (TestCorpus) and, as root, through the real binary as uid 1337 behind the real capture rules
// (TestCorpusThroughRules in netns_test.go).

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

const (
	okReply    = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	reply400   = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	reply417   = "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	reply501   = "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	reply502   = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	reply505   = "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	getB       = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
	continue1  = "HTTP/1.1 100 Continue\r\n\r\n"
	reply408   = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	chunkedReq = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
)

// corpusStep is one client connection: it sends send, half-closes, and reads until the proxy
// closes. appIdle, when set, is what the app writes on each of its open connections (then
// closing them) before the step starts: an unsolicited answer on an idle pooled connection.
type corpusStep struct {
	send, want string
	appIdle    string
}

type corpusCase struct {
	name string
	// replies maps a request path to the raw bytes the app writes for it; okReply otherwise.
	replies map[string]string
	steps   []corpusStep
	// wantApp is every byte the app received, its connections in the order the requests came.
	wantApp string
}

var corpus = []corpusCase{
	// 1. An upstream connection goes back to the pool only when its response was fully and
	// validly framed and nothing else arrived: no client ever gets another's response.
	{name: "204 followed by a second response", replies: map[string]string{"/a": "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"},
		steps:   []corpusStep{{send: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", want: "HTTP/1.1 204 No Content\r\n\r\n"}, {send: getB, want: okReply}},
		wantApp: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + getB},
	{name: "304 with a body", replies: map[string]string{"/a": "HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nevil"},
		steps:   []corpusStep{{send: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", want: "HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n"}, {send: getB, want: okReply}},
		wantApp: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + getB},
	{name: "HEAD answered with a body", replies: map[string]string{"/h": "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"},
		steps:   []corpusStep{{send: "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", want: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"}, {send: getB, want: okReply}},
		wantApp: "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + getB},
	{name: "bytes after a Content-Length body", replies: map[string]string{"/a": okReply + "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"},
		steps:   []corpusStep{{send: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", want: okReply}, {send: getB, want: okReply}},
		wantApp: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + getB},
	{name: "unsolicited 408 on an idle connection",
		steps: []corpusStep{{send: getB, want: okReply},
			{appIdle: reply408, send: "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", want: okReply}},
		wantApp: getB + "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
	{name: "pipelined requests", steps: []corpusStep{{send: getB + "GET /b2 HTTP/1.1\r\nHost: x\r\n\r\n", want: okReply + okReply}},
		wantApp: getB + "GET /b2 HTTP/1.1\r\nHost: x\r\n\r\n"},

	// 3. Detection by syntax: no request reaches the app past the parser.
	{name: "CL.TE", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", want: reply400}}},
	{name: "TE.CL", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", want: reply400}}},
	{name: "CL.TE after an empty line", steps: []corpusStep{{send: "\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", want: reply400}}},
	{name: "CL.TE with PURGE", steps: []corpusStep{{send: "PURGE / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", want: reply400}}},
	{name: "PROPFIND is proxied", steps: []corpusStep{{send: "PROPFIND /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", want: okReply}},
		wantApp: "PROPFIND /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"},
	{name: "TE.TE: chunked then identity", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", want: reply501}}},
	{name: "TE.TE: xchunked", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", want: reply501}}},
	{name: "TE.TE: space before colon", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", want: reply400}}},
	{name: "TE.TE: folded", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n", want: reply400}}},
	{name: "TE.TE: vertical tab", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", want: reply400}}},
	{name: "same Content-Length twice", steps: []corpusStep{{send: "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", want: okReply}},
		wantApp: "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"},
	{name: "different Content-Lengths", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!", want: reply400}}},
	{name: "Content-Length list", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nhi", want: reply400}}},
	{name: "Content-Length sign", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nhi", want: reply400}}},

	// 4. Malformed framing is refused, sloppy but unambiguous framing is normalised.
	{name: "bare LF head is forwarded with CRLF", steps: []corpusStep{{send: "GET /b HTTP/1.1\nHost: x\nX-A: 1\n\n", want: okReply}},
		wantApp: "GET /b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"},
	{name: "bare CR in a header", steps: []corpusStep{{send: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n", want: reply400}}},
	{name: "NUL in a header", steps: []corpusStep{{send: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n", want: reply400}}},
	{name: "NUL in the target", steps: []corpusStep{{send: "GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", want: reply400}}},
	{name: "obs-fold", steps: []corpusStep{{send: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", want: reply400}}},
	{name: "chunked is re-framed, extensions dropped, trailers kept",
		steps:   []corpusStep{{send: chunkedReq + "2;ext=1\r\nhi\r\n00\r\nX-T: v\r\n\r\n", want: okReply}},
		wantApp: chunkedReq + "2\r\nhi\r\n0\r\nX-T: v\r\n\r\n"},
	{name: "chunk size overflow", steps: []corpusStep{{send: chunkedReq + "fffffffffffffffff1\r\nhi\r\n0\r\n\r\n", want: reply400}}},
	{name: "bare LF after a chunk extension (CVE-2025-22871)", steps: []corpusStep{{send: chunkedReq + "2;\nxx\r\n0\r\n\r\n", want: reply400}}},
	{name: "bare LF after a chunk size", steps: []corpusStep{{send: chunkedReq + "2\nxx\r\n0\r\n\r\n", want: reply400}}},
	{name: "bare CR in a chunk extension", steps: []corpusStep{{send: chunkedReq + "2;a\rb\r\nxx\r\n0\r\n\r\n", want: reply400}}},
	{name: "trailer with obs-fold", steps: []corpusStep{{send: chunkedReq + "0\r\nX-T: a\r\n b\r\n\r\n", want: reply400}}},
	{name: "trailer with NUL", steps: []corpusStep{{send: chunkedReq + "0\r\nX-T: a\x00\r\n\r\n", want: reply400}}},
	{name: "trailer without colon", steps: []corpusStep{{send: chunkedReq + "0\r\nX-T\r\n\r\n", want: reply400}}},
	{name: "last chunk ended by bare LF", steps: []corpusStep{{send: chunkedReq + "0\r\n\n", want: reply400}}},
	{name: "status line with a bare CR", replies: map[string]string{"/r": "HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok"},
		steps: []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: reply502}}, wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "status line with NUL", replies: map[string]string{"/r": "HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok"},
		steps: []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: reply502}}, wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "bare-LF chunked response", replies: map[string]string{"/r": "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n"},
		steps: []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: reply502}}, wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "bare-LF response head is normalised", replies: map[string]string{"/r": "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
		steps: []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: okReply}}, wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "response with Content-Length and chunked", replies: map[string]string{"/r": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		steps: []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: reply502}}, wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "response chunk extensions dropped", replies: map[string]string{"/r": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=\"y\"\r\nok\r\n0\r\n\r\n"},
		steps:   []corpusStep{{send: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", want: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}},
		wantApp: "GET /r HTTP/1.1\r\nHost: x\r\n\r\n"},

	// 2. Expect: 100-continue.
	{name: "Expect with an app that never says 100", steps: []corpusStep{{send: "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", want: continue1 + okReply}},
		wantApp: "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
	{name: "Expect in HTTP/1.0 is ignored", steps: []corpusStep{{send: "PUT /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", want: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"}},
		wantApp: "PUT /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
	{name: "unknown expectation", steps: []corpusStep{{send: "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello", want: reply417}}},

	// 6. The smaller ones.
	{name: "HTTP/1.0 with Transfer-Encoding", steps: []corpusStep{{send: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: reply400}}},
	{name: "fields named in Connection are removed", replies: map[string]string{"/b": "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nContent-Length: 2\r\n\r\nok"},
		steps:   []corpusStep{{send: "GET /b HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, TE\r\nX-Secret: 1\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n", want: okReply}},
		wantApp: getB},
	{name: "Connection may not name Content-Length", steps: []corpusStep{{send: "POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi", want: reply400}}},
	{name: "101 to a request without Upgrade", replies: map[string]string{"/u": "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\n"},
		steps: []corpusStep{{send: "GET /u HTTP/1.1\r\nHost: x\r\n\r\n", want: reply502}}, wantApp: "GET /u HTTP/1.1\r\nHost: x\r\n\r\n"},
	{name: "HTTP/1.2", steps: []corpusStep{{send: "GET / HTTP/1.2\r\nHost: x\r\n\r\n", want: reply505}}},
	{name: "space in the target", steps: []corpusStep{{send: "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", want: reply400}}},
	{name: "HTTP/1.0 client gets a chunked body without its framing", replies: map[string]string{"/c": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		steps:   []corpusStep{{send: "GET /c HTTP/1.0\r\n\r\n", want: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"}},
		wantApp: "GET /c HTTP/1.0\r\n\r\n"},
}

// corpusApp is a raw-byte recording app: it parses requests with net/http (everything the
// proxy forwards must be parseable), records every byte it reads, and answers each request
// with the raw reply for its path.
type corpusApp struct {
	l       net.Listener
	replies map[string]string
	wg      sync.WaitGroup
	mu      sync.Mutex
	got     bytes.Buffer
	conns   map[net.Conn]bool
}

type appRecorder struct{ a *corpusApp }

func (r appRecorder) Write(p []byte) (int, error) {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	return r.a.got.Write(p)
}

func newCorpusApp(l net.Listener, replies map[string]string) *corpusApp {
	a := &corpusApp{l: l, replies: replies, conns: map[net.Conn]bool{}}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns[c] = true
			a.mu.Unlock()
			a.wg.Add(1)
			go a.handle(c)
		}
	}()
	return a
}

func (a *corpusApp) handle(c net.Conn) {
	defer a.wg.Done()
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, appRecorder{a}))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		reply, ok := a.replies[req.URL.Path]
		if !ok {
			reply = okReply
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

// idleSend writes b on every open connection and closes it.
func (a *corpusApp) idleSend(b string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range a.conns {
		io.WriteString(c, b)
		c.Close()
		delete(a.conns, c)
	}
}

// finish stops the app, collecting for a moment whatever still arrives on open connections,
// and returns every byte it received.
func (a *corpusApp) finish() string {
	a.l.Close()
	a.mu.Lock()
	for c := range a.conns {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	}
	a.mu.Unlock()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.got.String()
}

// sendAll sends send on a new connection, half-closes it and returns all that comes back.
func sendAll(dial func() (net.Conn, error), send string) (string, error) {
	c, err := dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, send); err != nil {
		return "", err
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(c)
	return string(got), err
}

// runCorpus runs every case: listen opens the app's listener for a case and returns a dialer
// whose connections reach it through the proxy.
func runCorpus(t *testing.T, listen func(t *testing.T, i int) (net.Listener, func() (net.Conn, error))) {
	for i, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			l, dial := listen(t, i)
			app := newCorpusApp(l, tc.replies)
			for k, st := range tc.steps {
				if st.appIdle != "" {
					app.idleSend(st.appIdle)
				}
				got, err := sendAll(dial, st.send)
				if err != nil {
					t.Fatalf("step %d: %v (got %q)", k, err, got)
				}
				if got != st.want {
					t.Errorf("step %d: client got\n%q\nwant\n%q", k, got, st.want)
				}
			}
			if got := app.finish(); got != tc.wantApp {
				t.Errorf("app received\n%q\nwant\n%q", got, tc.wantApp)
			}
		})
	}
}

func TestCorpus(t *testing.T) {
	var mu sync.Mutex
	var dst net.Addr
	h := startProxyDst(t, func(*net.TCPConn) (netip.AddrPort, error) {
		mu.Lock()
		defer mu.Unlock()
		return netip.MustParseAddrPort(dst.String()), nil
	}, func(c *Config) { c.ExpectContinueTimeout = 100 * time.Millisecond })
	runCorpus(t, func(t *testing.T, i int) (net.Listener, func() (net.Conn, error)) {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		dst = l.Addr()
		mu.Unlock()
		return l, func() (net.Conn, error) { return net.Dial("tcp4", h.in) }
	})
	waitActive(t, h.s, 0)
}

// waitActive waits until the proxy's open client connections fall back to want.
func waitActive(t *testing.T, s *Server, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.m.active() != want {
		if time.Now().After(deadline) {
			t.Fatalf("active connections = %d, want %d", s.m.active(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
