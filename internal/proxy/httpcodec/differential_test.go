package httpcodec

// Differential testing against net/http's server: for any bytes, what the proxy accepts must be
// accepted by net/http with the same request line, Host and body (the framing), and what
// net/http accepts the proxy accepts too, except where the proxy is deliberately stricter for
// a reason RFC 9112/9110 gives (stricterRules).

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"testing"
	"time"
)

// stricterRules are the rules the proxy enforces where net/http is lenient, each for a reason
// given by the RFCs (see docs/proxy.md, "Conformance").
var stricterRules = map[string]string{
	RuleObsFold:          "RFC 9112 5.2: obs-fold is obsolete; a proxy may reject it",
	RuleLengthAndChunked: "RFC 9112 6.3: CL with TE ought to be handled as an error (smuggling)",
	RuleTEInHTTP10:       "RFC 9112 6.1: TE in HTTP/1.0 means the framing is faulty",
	RuleTarget:           "RFC 9112 3.2: no fragment, asterisk-form for OPTIONS only, authority-form for CONNECT only",
	RuleVersion:          "only HTTP/1.0 and HTTP/1.1 are proxied",
	RuleChunk:            "RFC 9112 7.1.1: chunk-ext grammar (net/http ignores extensions unparsed)",
	RuleTrailer:          "RFC 9110 6.5.1: framing and routing fields may not be trailers",
	RuleConnection:       "Connection may not name a framing field",
	RuleHost:             "RFC 3986 host characters",
	RuleFieldValue:       "RFC 9110 5.5: no CTL in field values",
	RuleBareCR:           "RFC 9112 2.2: a bare CR is invalid",
	RuleFieldName:        "RFC 9112 5.1: no whitespace before the colon",
	RuleContentLength:    "RFC 9110 8.6: Content-Length = 1*DIGIT",
	RuleRequestLine:      "RFC 9112 3: method SP request-target SP HTTP-version, none of them empty",
	RuleExpect:           "RFC 9110 10.1.1: an expectation other than 100-continue may be answered 417, in HTTP/1.0 too (net/http ignores Expect there)",
}

// memConn is a net.Conn that reads from fixed bytes and discards what is written.
type memConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	once   sync.Once
	closed chan struct{}
}

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *memConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	c    chan net.Conn
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{} }

// stdlibRequest is what net/http's server made of the first request in data.
type stdlibRequest struct {
	ok                   bool // the handler ran and read the whole body without error
	self                 bool // net/http answered 200 itself (OPTIONS *): no handler to compare
	method, target, host string
	body                 []byte
}

func serveStdlib(t *testing.T, data []byte) stdlibRequest {
	var got stdlibRequest
	var mu sync.Mutex
	first := true
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			mu.Lock()
			defer mu.Unlock()
			if !first {
				return
			}
			first = false
			got = stdlibRequest{ok: err == nil, method: r.Method, target: r.RequestURI, host: r.Host, body: body}
		}),
		ErrorLog: nil,
	}
	srv.SetKeepAlivesEnabled(true)
	c := &memConn{r: bytes.NewReader(data), closed: make(chan struct{})}
	l := &oneConnListener{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- c
	go srv.Serve(l)
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("net/http did not finish with %q", data)
	}
	close(l.done)
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if out := c.out.Bytes(); first && (bytes.HasPrefix(out, []byte("HTTP/1.1 200 OK\r\n")) || bytes.HasPrefix(out, []byte("HTTP/1.0 200 OK\r\n"))) {
		got = stdlibRequest{ok: true, self: true}
	}
	return got
}

// ours parses the first request in data the way the proxy does and returns the payload that
// reaches the app (decoded again from the proxy's re-framed chunked output).
func ours(data []byte) (*Request, []byte, error) {
	br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
	var req Request
	if _, err := ReadRequest(br, &req, nil, 64<<10); err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	var head bytes.Buffer
	hw := bufio.NewWriter(&head)
	if err := WriteRequestHead(hw, &req); err != nil {
		return nil, nil, err
	}
	hw.Flush()
	if _, err := CopyBody(bw, br, req.Framing, req.ContentLength, make([]byte, 512)); err != nil {
		return nil, nil, err
	}
	bw.Flush()
	// What goes upstream must itself be a request net/http reads the same way.
	var fwd Request
	if err := fwd.Parse(head.Bytes()); err != nil {
		return nil, nil, errors.New("forwarded head does not parse: " + err.Error())
	}
	if req.Framing == Chunked {
		payload, err := io.ReadAll(httputil.NewChunkedReader(&out))
		if err != nil {
			return nil, nil, errors.New("forwarded chunked body does not decode: " + err.Error())
		}
		return &req, payload, nil
	}
	return &req, out.Bytes(), nil
}

func checkDifferential(t *testing.T, data []byte) {
	var (
		req     *Request
		payload []byte
		err     error
	)
	done := make(chan struct{})
	go func() { req, payload, err = ours(data); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the codec did not finish with %q", data)
	}
	// RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line;
	// net/http does not, so it is shown the request without them.
	std := serveStdlib(t, bytes.TrimLeft(data, "\r\n"))
	var pe *ParseError
	switch {
	case err == nil:
		if !std.ok {
			t.Fatalf("the proxy accepts what net/http refuses: %q", data)
		}
		if std.self {
			return
		}
		// net/http takes the host of an absolute-form or authority-form target over the Host
		// header; the proxy forwards both as they came.
		originForm := len(req.Target) > 0 && req.Target[0] == '/'
		if string(req.Method) != std.method || string(req.Target) != std.target || originForm && string(req.Host) != std.host {
			t.Fatalf("request line differs: proxy %q %q host %q, net/http %q %q host %q\ninput %q",
				req.Method, req.Target, req.Host, std.method, std.target, std.host, data)
		}
		if !bytes.Equal(payload, std.body) {
			t.Fatalf("framing differs: proxy body %q, net/http body %q\ninput %q", payload, std.body, data)
		}
	case std.ok && errors.As(err, &pe):
		if _, ok := stricterRules[pe.Rule]; !ok {
			t.Fatalf("the proxy refuses (%v) what net/http accepts: %q", err, data)
		}
	case std.ok && !errors.Is(err, ErrHeaderTooLarge):
		t.Fatalf("the proxy fails (%v) where net/http accepts: %q", err, data)
	}
}

// FuzzDifferential: see the file comment. Its seeds are the smuggling shapes of the corpus.
func FuzzDifferential(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a?b=c HTTP/1.1\nHost: x\n\n",
		"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nhi",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nA: x\ry\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
		"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDifferential(t, data)
	})
}
