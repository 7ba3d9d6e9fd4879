package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidelane/sidelane/internal/proxy/httpcodec"
)

// timedConn is a TCP connection whose every read and write waits at most readIdle /
// writeIdle (zero: whatever deadline the caller set stands), and which counts the bytes it
// has moved. The proxy's buffered readers and writers sit on it, so that no read or write of a
// request or response can wait forever on a silent peer. A deadline is moved only when it
// would otherwise come more than a quarter of the idle time early (or must come sooner): on a
// busy connection most reads and writes set none, so a wait ends after between 3/4 of the
// idle time and all of it.
type timedConn struct {
	c                   *net.TCPConn
	readIdle, writeIdle time.Duration
	rd, wd              time.Time // the deadlines in force
	nread, nwritten     int64
}

// setReadDeadline sets the read deadline of the connection and remembers it: every read
// deadline of a connection read through a timedConn is set here.
func (t *timedConn) setReadDeadline(d time.Time) {
	t.rd = d
	t.c.SetReadDeadline(d)
}

func (t *timedConn) Read(p []byte) (int, error) {
	if t.readIdle > 0 {
		if want := time.Now().Add(t.readIdle); want.Before(t.rd) || want.Sub(t.rd) > t.readIdle/4 {
			t.setReadDeadline(want)
		}
	}
	n, err := t.c.Read(p)
	t.nread += int64(n)
	return n, err
}

func (t *timedConn) Write(p []byte) (int, error) {
	if t.writeIdle > 0 {
		if want := time.Now().Add(t.writeIdle); want.Before(t.wd) || want.Sub(t.wd) > t.writeIdle/4 {
			t.wd = want
			t.c.SetWriteDeadline(want)
		}
	}
	n, err := t.c.Write(p)
	t.nwritten += int64(n)
	return n, err
}

// clientConn is one accepted connection on a capture port.
type clientConn struct {
	s   *Server
	c   *net.TCPConn
	tc  timedConn
	dir Direction
	dst netip.AddrPort
	br  *bufio.Reader
	bw  *bufio.Writer

	idle atomic.Bool // waiting for the next request on a keep-alive connection
	// onDrain, when set, starts the graceful end of a connection that is not HTTP/1.x (an
	// HTTP/2 relay sends GOAWAY); drain calls it through wakeIfIdle.
	onDrain atomic.Pointer[func()]

	mu     sync.Mutex
	up     *net.TCPConn // upstream in use, closed by forceClose
	closed bool

	req      httpcodec.Request
	resp     httpcodec.Response
	reqHead  []byte
	respHead []byte
	logBuf   []byte // method, authority and path kept for the access log
}

func newClientConn(s *Server, c *net.TCPConn, dir Direction) *clientConn {
	cc := &clientConn{s: s, c: c, dir: dir}
	cc.tc = timedConn{c: c, writeIdle: s.cfg.StreamIdleTimeout}
	cc.br = readerPool.Get().(*bufio.Reader)
	cc.br.Reset(&cc.tc)
	cc.bw = writerPool.Get().(*bufio.Writer)
	cc.bw.Reset(&cc.tc)
	return cc
}

func (cc *clientConn) close() {
	cc.mu.Lock()
	cc.closed = true
	cc.mu.Unlock()
	cc.c.Close()
}

// release gives the buffers back once the connection is done.
func (cc *clientConn) release() {
	cc.br.Reset(nil)
	readerPool.Put(cc.br)
	cc.bw.Reset(nil)
	writerPool.Put(cc.bw)
	cc.br, cc.bw = nil, nil
}

// setUpstream records the upstream connection in use so that forceClose can reach it.
func (cc *clientConn) setUpstream(u *net.TCPConn) {
	cc.mu.Lock()
	cc.up = u
	closed := cc.closed
	cc.mu.Unlock()
	if closed && u != nil {
		u.Close()
	}
}

// wakeIfIdle gives an idle keep-alive connection a short grace to send one last request.
func (cc *clientConn) wakeIfIdle() {
	if f := cc.onDrain.Load(); f != nil {
		(*f)()
	}
	if cc.idle.Load() {
		cc.c.SetReadDeadline(time.Now().Add(drainIdleGrace))
	}
}

// forceClose ends the connection and its upstream (drain deadline).
func (cc *clientConn) forceClose() {
	cc.mu.Lock()
	cc.closed = true
	up := cc.up
	cc.mu.Unlock()
	cc.c.Close()
	if up != nil {
		up.Close()
	}
}

// verdict is what the first bytes of a connection say about its protocol.
type verdict uint8

const (
	undecided verdict = iota
	isHTTP1           // an HTTP/1.x request line, or something that claims to be one (400 if malformed)
	notHTTP1          // clearly no HTTP/1.x: relayed as raw TCP
)

// wellKnownMethods are the methods of RFC 9110 and PATCH: a first line that starts with one of
// them and a space claims to be HTTP, whatever follows.
var wellKnownMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// classify decides from the bytes a client sent first whether the connection is HTTP/1.x, by
// syntax rather than by a list of methods (RFC 9112 3): leading empty lines are skipped; a
// first line of the form token SP request-target SP HTTP-version is HTTP (any method that is a
// token); so is a line that starts with a well-known method and a space, or that ends in
// " HTTP/d.d", even when malformed (the parser answers 400). The HTTP/2 preface and anything
// whose first bytes cannot start a request line are not HTTP/1.x. final says that no more bytes
// will come for the decision (timeout, end of stream or the peek buffer is full): a prefix that
// could still become a request line is then HTTP, so that a client cannot slip past the
// parser by sending its request line slowly.
func classify(p []byte, final bool) verdict {
	i := 0
	for i < len(p) && (p[i] == '\n' || p[i] == '\r' && (i+1 == len(p) || p[i+1] == '\n')) {
		i++
	}
	p = p[i:]
	more := undecided
	if final {
		more = notHTTP1
	}
	if len(p) == 0 {
		return more
	}
	line := p
	complete := false
	if lf := indexLF(p); lf >= 0 {
		line, complete = p[:lf], true
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
	}
	// method
	m := 0
	for m < len(line) && httpcodec.IsTokenChar(line[m]) {
		m++
	}
	if m == len(line) && !complete {
		if m > 32 && !final {
			return notHTTP1 // no method is that long
		}
		if final && m > 0 {
			return isHTTP1
		}
		return more
	}
	if m == 0 || m == len(line) || line[m] != ' ' {
		return notHTTP1
	}
	for _, wk := range wellKnownMethods {
		if string(line[:m]) == wk {
			return isHTTP1
		}
	}
	rest := line[m+1:]
	// request-target: visible bytes up to the next space.
	t := 0
	for t < len(rest) && rest[t] > ' ' && rest[t] != 0x7f {
		t++
	}
	if !complete && t == len(rest) {
		if final {
			return isHTTP1
		}
		return more
	}
	if t == 0 || t == len(rest) || rest[t] != ' ' {
		return notHTTP1
	}
	version := rest[t+1:]
	const proto = "HTTP/"
	if !complete {
		n := min(len(version), len(proto))
		if string(version[:n]) != proto[:n] {
			return notHTTP1
		}
		if final {
			return isHTTP1
		}
		return more
	}
	if len(version) == 8 && string(version[:5]) == proto && isDigitByte(version[5]) && version[6] == '.' && isDigitByte(version[7]) {
		if string(line) == "PRI * HTTP/2.0" {
			return notHTTP1 // the HTTP/2 connection preface
		}
		return isHTTP1
	}
	return notHTTP1
}

func isDigitByte(c byte) bool { return '0' <= c && c <= '9' }

func indexLF(p []byte) int {
	for i, c := range p {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// detectHTTP waits up to PeekTimeout for the client's first line (see classify). A client that
// sends nothing (a server-first protocol: MySQL, SMTP) or bytes that are clearly no HTTP/1.x is
// relayed as raw TCP.
func (s *Server) detectHTTP(cc *clientConn) bool {
	cc.tc.setReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	defer cc.tc.setReadDeadline(time.Time{})
	for {
		// Wait for one byte more than is buffered, then look at all that is.
		_, err := cc.br.Peek(cc.br.Buffered() + 1)
		p, _ := cc.br.Peek(cc.br.Buffered())
		switch classify(p, err != nil) {
		case isHTTP1:
			return true
		case notHTTP1:
			return false
		}
		if err != nil {
			return false
		}
	}
}

// Responses the proxy answers itself.
var canned = map[int]string{
	400: "Bad Request", 408: "Request Timeout", 417: "Expectation Failed",
	431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway",
	504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

func cannedResponse(status int) string {
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status, canned[status])
}

// answer sends the client a response of the proxy's own that ends the connection, records
// the request in the log and metrics through e, and closes the client side gracefully: the
// proxy stops writing, then reads and drops what the client still sends for a moment, so that
// unread request bytes do not turn the close into a reset that destroys the answer.
func (cc *clientConn) answer(e *entry, status int, err error) {
	e.status = status
	if err != nil {
		e.err = err.Error()
	}
	cc.bw.Reset(&cc.tc)
	cc.c.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(cc.c, cannedResponse(status))
	lingerClose(cc.c)
}

// lingerClose half-closes c and discards what the peer still sends, for up to a second and
// 256 KiB, before the caller closes it.
func lingerClose(c *net.TCPConn) {
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c, 256<<10)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// serveHTTP proxies requests on one client connection until it closes.
func (s *Server) serveHTTP(cc *clientConn) {
	first := true
	var copyBuf *[]byte
	defer func() {
		if copyBuf != nil {
			copyPool.Put(copyBuf)
		}
	}()
	getBuf := func() []byte {
		if copyBuf == nil {
			copyBuf = copyPool.Get().(*[]byte)
		}
		return *copyBuf
	}
	for {
		cc.tc.readIdle = 0
		if !first && cc.br.Buffered() == 0 {
			// Idle keep-alive: wait for the next request's first byte.
			cc.idle.Store(true)
			d := s.cfg.IdleTimeout
			if s.draining.Load() {
				d = min(d, drainIdleGrace)
			}
			cc.tc.setReadDeadline(time.Now().Add(d))
			_, err := cc.br.Peek(1)
			cc.idle.Store(false)
			if err != nil {
				return
			}
		}
		cc.tc.setReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		var err error
		cc.reqHead, err = httpcodec.ReadRequest(cc.br, &cc.req, cc.reqHead, s.cfg.MaxHeaderBytes)
		if err != nil {
			s.requestError(cc, err)
			return
		}
		first = false
		// From here every read of the request body waits at most StreamIdleTimeout.
		cc.tc.readIdle = s.cfg.StreamIdleTimeout
		if !s.proxyRequest(cc, getBuf) {
			return
		}
	}
}

// requestError answers a request head that could not be read and logs it.
func (s *Server) requestError(cc *clientConn, err error) {
	var status int
	var pe *httpcodec.ParseError
	switch {
	case errors.Is(err, httpcodec.ErrHeaderTooLarge):
		status = 431
	case errors.As(err, &pe):
		status = pe.Status
	case isTimeout(err):
		// A client that started a head and stalled (slowloris), or opened a connection
		// and never sent a whole head.
		status = 408
	default:
		return // the client closed or went away between requests
	}
	e := entry{start: time.Now(), direction: cc.dir, dst: cc.dst}
	cc.answer(&e, status, err)
	s.m.request(cc.dir, nil, e.status, 0, 0, 0)
	if s.alog != nil {
		s.alog.write(&e)
	}
}

// clientError is an error reading the client's request body: malformed framing, a timeout,
// or the client gone.
type clientError struct{ err error }

func (e *clientError) Error() string { return "request body: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

// idempotent reports whether a request with this method may be sent again automatically
// (RFC 9110 9.2.2).
func idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// maxInterim bounds the 1xx responses the proxy relays before a final one.
const maxInterim = 16

const continue100 = "HTTP/1.1 100 Continue\r\n\r\n"

// proxyRequest forwards the request in cc.req and its response; it reports whether the
// client connection may carry another request.
func (s *Server) proxyRequest(cc *clientConn, getBuf func() []byte) (keep bool) {
	start := time.Now()
	req := &cc.req
	// The entry lives in the exchange, by value: the exchange's pointers reach the heap (the
	// connections), and an entry of its own would follow them there.
	x := exchange{s: s, cc: cc, req: req, resp: &cc.resp, getBuf: getBuf,
		bodySent: req.Framing == httpcodec.NoBody, upKeep: true}
	e := &x.e
	*e = entry{start: start, direction: cc.dir, dst: cc.dst}
	// Keep what the access log needs: the head buffer is reused for the next request.
	cc.logBuf = append(cc.logBuf[:0], req.Method...)
	cc.logBuf = append(cc.logBuf, req.Host...)
	cc.logBuf = append(cc.logBuf, req.Target...)
	nm, nh := len(req.Method), len(req.Host)
	e.method, e.authority, e.path = cc.logBuf[:nm], cc.logBuf[nm:nm+nh], cc.logBuf[nm+nh:]
	defer func() {
		e.duration = time.Since(start)
		s.m.request(cc.dir, e.method, e.status, e.reqBytes, e.respBytes, e.duration.Seconds())
		if s.alog != nil {
			s.alog.write(e)
		}
	}()

	if !x.send() {
		return false
	}
	defer x.release()
	if !x.interims() {
		return false
	}
	resp := x.resp
	e.status = resp.Status
	if resp.Status == 101 && !req.Upgrade {
		x.upKeep = false
		s.upstreamError(cc, e, errors.New("101 Switching Protocols to a request that asked for no upgrade"))
		return false
	}
	if resp.Status == 101 || string(req.Method) == "CONNECT" && resp.Status/100 == 2 {
		x.tunnel()
		return false
	}
	return x.respond()
}

// exchange is one request and its response between a client connection and an upstream
// connection: the state proxyRequest's steps share.
type exchange struct {
	s      *Server
	cc     *clientConn
	req    *httpcodec.Request
	resp   *httpcodec.Response
	getBuf func() []byte
	e      entry // the access-log entry and metrics of the request

	up       *upConn // the upstream connection, nil once given back
	upKeep   bool    // whether release pools up (else closes it)
	bodySent bool    // the request body (if any) is forwarded whole
	sent100  bool    // the client was sent a 100 Continue
}

// release gives the upstream connection back: to the pool when upKeep, else closed.
func (x *exchange) release() {
	if x.up == nil {
		return
	}
	x.cc.setUpstream(nil)
	if x.upKeep {
		x.s.pool.put(x.up)
	} else {
		x.up.close()
	}
	x.up = nil
}

// sendBody forwards the client's request body to the upstream; a failure to read the client
// is a *clientError, a failure to write the upstream an *httpcodec.WriteError.
func (x *exchange) sendBody() error {
	n, err := httpcodec.CopyBody(x.up.bw, x.cc.br, x.req.Framing, x.req.ContentLength, x.getBuf())
	x.e.reqBytes = n
	var we *httpcodec.WriteError
	if err != nil && !errors.As(err, &we) {
		return &clientError{err}
	}
	x.bodySent = err == nil
	return err
}

// fail answers the client for err, an error of the client's body or of the upstream.
func (x *exchange) fail(err error) {
	var ce *clientError
	if errors.As(err, &ce) {
		x.s.clientBodyError(x.cc, &x.e, ce.err)
	} else {
		x.s.upstreamError(x.cc, &x.e, err)
	}
}

// send writes the request to an upstream connection and reads the response's head into
// x.resp, retrying once on a new connection when that is safe. It returns false when the
// exchange is over (the client was answered, the upstream connection closed).
func (x *exchange) send() bool {
	s, cc, req := x.s, x.cc, x.req
	key := poolKey{dst: cc.dst, dir: cc.dir}
	hasBody := req.Framing != httpcodec.NoBody
	expect := req.ExpectContinue && hasBody
	for attempt := 0; ; attempt++ {
		up, err := s.upstream(key)
		if err != nil {
			cc.answer(&x.e, 502, err)
			return false
		}
		x.up = up
		cc.setUpstream(up.c)
		readBefore := up.tc.nread
		err = httpcodec.WriteRequestHead(up.bw, req)
		if err == nil && hasBody && !expect {
			err = x.sendBody()
		}
		if err == nil {
			err = up.bw.Flush()
		}
		if err == nil && expect {
			err = x.awaitContinue()
		}
		if err == nil {
			cc.respHead, err = httpcodec.ReadResponse(up.br, x.resp, cc.respHead, s.cfg.MaxHeaderBytes, req.Method)
		}
		if err == nil {
			return true
		}
		up.close()
		x.up = nil
		cc.setUpstream(nil)
		// A pooled connection that the app closed meanwhile fails before any byte of the
		// response: a request that is safe to repeat and whose body need not be replayed is
		// sent once more on a new connection. Anything else is never sent twice. (A request
		// without a body cannot fail on the client's side, so a retry is never a client error.)
		if attempt == 0 && up.reused && up.tc.nread == readBefore && !hasBody && idempotent(req.Method) &&
			!errors.Is(err, httpcodec.ErrMalformed) && !isTimeout(err) {
			s.m.retriesBy[cc.dir].Inc()
			continue
		}
		x.fail(err)
		return false
	}
}

// awaitContinue waits a moment for the app's 100 Continue (or final answer) to a request
// that expects it; an app that says nothing gets the body anyway, as curl and Go's client do
// after their own wait, and the client is sent the 100 itself.
func (x *exchange) awaitContinue() error {
	up, cc := x.up, x.cc
	up.tc.readIdle = x.s.cfg.ExpectContinueTimeout
	_, err := up.br.Peek(1)
	up.tc.readIdle = x.s.cfg.StreamIdleTimeout
	if !isTimeout(err) {
		return err
	}
	if _, werr := io.WriteString(cc.bw, continue100); werr == nil && cc.bw.Flush() == nil {
		x.sent100 = true
	}
	if err = x.sendBody(); err == nil {
		err = up.bw.Flush()
	}
	return err
}

// interims relays interim responses until the final one is in x.resp: 100 Continue releases
// a waiting request body; others pass through (an HTTP/1.0 client is sent none, RFC 9110
// 15.2). It returns false when the exchange is over.
func (x *exchange) interims() bool {
	s, cc, req, resp, up := x.s, x.cc, x.req, x.resp, x.up
	for n := 0; resp.IsInterim(); n++ {
		if n == maxInterim {
			x.upKeep = false
			s.upstreamError(cc, &x.e, fmt.Errorf("more than %d interim responses", maxInterim))
			return false
		}
		if req.Minor == 1 && !(resp.Status == 100 && x.sent100) {
			if httpcodec.WriteResponseHead(cc.bw, resp, httpcodec.ResponseMode{}) != nil || cc.bw.Flush() != nil {
				x.upKeep = false
				return false
			}
			x.sent100 = x.sent100 || resp.Status == 100
		}
		if resp.Status == 100 && !x.bodySent {
			err := x.sendBody()
			if err == nil {
				err = up.bw.Flush()
			}
			if err != nil {
				x.upKeep = false
				x.fail(err)
				return false
			}
		}
		var err error
		cc.respHead, err = httpcodec.ReadResponse(up.br, resp, cc.respHead, s.cfg.MaxHeaderBytes, req.Method)
		if err != nil {
			x.upKeep = false
			s.upstreamError(cc, &x.e, err)
			return false
		}
	}
	return true
}

// tunnel relays a protocol switch (WebSocket and the like) or a CONNECT tunnel: after the
// response head both sides are one tunnel, and the client connection ends with it.
func (x *exchange) tunnel() {
	x.upKeep = false
	cc, up := x.cc, x.up
	if httpcodec.WriteResponseHead(cc.bw, x.resp, httpcodec.ResponseMode{}) != nil || cc.bw.Flush() != nil {
		return
	}
	x.e.duration = time.Since(x.e.start)
	cc.setUpstream(up.c)
	relay(cc.c, cc.br, up.c, up.br, x.s.cfg.TCPIdleTimeout)
}

// respond forwards the final response's head and body to the client and decides whether each
// side's connection may carry another exchange; it reports the client side's.
func (x *exchange) respond() (keep bool) {
	s, cc, req, resp, up := x.s, x.cc, x.req, x.resp, x.up
	// The client's body was never asked for (final response without 100 Continue): the
	// connection's framing is lost, both sides close after this response.
	framingLost := !x.bodySent
	// An HTTP/1.0 client cannot read chunked framing: it gets the payload, ended by the close.
	dechunk := req.Minor == 0 && resp.Framing == httpcodec.Chunked
	keep = !req.Close && !framingLost && !dechunk && resp.Framing != httpcodec.UntilClose && !s.draining.Load()
	// A response that declares a body it may not have (HEAD, 204, 304 with Content-Length or
	// Transfer-Encoding) may be followed by that body anyway: such a connection is not reused.
	x.upKeep = !resp.Close && !framingLost && resp.Framing != httpcodec.UntilClose &&
		!(resp.Framing == httpcodec.NoBody && resp.DeclaresBody)
	mode := httpcodec.ResponseMode{Close: !keep, KeepAlive10: keep && req.Minor == 0, Dechunk: dechunk}
	written := cc.tc.nwritten
	if err := httpcodec.WriteResponseHead(cc.bw, resp, mode); err != nil {
		x.upKeep = false
		return false
	}
	var n int64
	var err error
	if dechunk {
		n, err = httpcodec.DecodeChunked(cc.bw, up.br, x.getBuf())
	} else {
		n, err = httpcodec.CopyBody(cc.bw, up.br, resp.Framing, resp.ContentLength, x.getBuf())
	}
	x.e.respBytes = n
	if err == nil {
		if x.upKeep && up.br.Buffered() > 0 {
			// Bytes after the end of the response: whatever they are, they answer no request.
			s.m.discardedBy[cc.dir][discardLeftover].Inc()
			x.upKeep = false
		}
		// The response is read whole: the upstream connection is free before the client
		// has the last bytes, so the client's next request can have it.
		x.release()
		if ferr := cc.bw.Flush(); ferr != nil {
			err = &httpcodec.WriteError{Err: ferr}
		}
	}
	if err != nil {
		x.upKeep = false
		var we *httpcodec.WriteError
		if cc.tc.nwritten == written && !errors.As(err, &we) {
			// The app's body failed before any byte of the response left the proxy: the
			// client gets a clean 502 instead of a head with a cut-off body.
			s.upstreamError(cc, &x.e, err)
			return false
		}
		// Part of the response is gone to the client: all that is left is to end the
		// connection, which the client sees as a cut-off body.
		x.e.err = err.Error()
		return false
	}
	if framingLost {
		// The client may be sending the body nobody asked for: read it away before the
		// close, so that the answer is not destroyed by a reset.
		lingerClose(cc.c)
	}
	return keep
}

// clientBodyError ends a request whose body could not be read from the client.
func (s *Server) clientBodyError(cc *clientConn, e *entry, err error) {
	var pe *httpcodec.ParseError
	switch {
	case errors.As(err, &pe):
		cc.answer(e, pe.Status, err)
	case isTimeout(err):
		cc.answer(e, 408, err)
	default:
		// The client went away in the middle of its body: nobody to answer.
		e.status, e.err = 499, err.Error()
	}
}

// upstreamError answers a request whose upstream failed before a response head reached the
// client: 504 when the app stayed silent, 502 otherwise.
func (s *Server) upstreamError(cc *clientConn, e *entry, err error) {
	status := 502
	if isTimeout(err) {
		status = 504
	}
	s.log.Warn("upstream", "direction", cc.dir.String(), "client", cc.c.RemoteAddr().String(), "original_dst", cc.dst.String(), "status", status, "err", err)
	cc.answer(e, status, err)
}

// upstream returns a pooled connection to key that is still clean (nothing arrived on it
// while it was idle, not even its end), or dials a new one.
func (s *Server) upstream(key poolKey) (*upConn, error) {
	for {
		up := s.pool.get(key)
		if up == nil {
			break
		}
		if up.clean() {
			return up, nil
		}
		s.m.discardedBy[key.dir][discardUnsolicited].Inc()
		up.close()
	}
	c, err := s.dial(key.dir, key.dst)
	if err != nil {
		return nil, err
	}
	return newUpConn(c, key, s.cfg.StreamIdleTimeout)
}

// serveRaw relays a non-HTTP connection to its original destination.
func (s *Server) serveRaw(cc *clientConn) {
	up, err := s.dial(cc.dir, cc.dst)
	if err != nil {
		s.log.Warn("dial", "direction", cc.dir.String(), "client", cc.c.RemoteAddr().String(), "original_dst", cc.dst.String(), "err", err)
		return
	}
	s.m.raw.Add(1)
	cc.setUpstream(up)
	defer cc.setUpstream(nil)
	relay(cc.c, cc.br, up, nil, s.cfg.TCPIdleTimeout)
}

// relay copies a→b and b→a until both directions end, passing each end of stream on as a
// half-close (CloseWrite), then closes both. Bytes already buffered in ar/br are sent first;
// after that the kernel moves the data (splice between TCP sockets). When no byte has moved
// in either direction for idle, both connections are closed.
func relay(a *net.TCPConn, ar *bufio.Reader, b *net.TCPConn, br *bufio.Reader, idle time.Duration) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		copyHalf(b, a, ar, idle, &last)
		close(done)
	}()
	copyHalf(a, b, br, idle, &last)
	<-done
	a.Close()
	b.Close()
}

// copyHalf copies src to dst until src ends or fails, then half-closes dst. Reads run in
// periods of idle/2; at the end of a period in which the relay as a whole has been quiet for
// idle, both sockets are closed. A write may take up to idle beyond its period: a write
// deadline that fell between a read and its write would drop the bytes read (the kernel pipe
// under splice), so a write that times out means the receiver took nothing for idle and ends
// the relay.
func copyHalf(dst, src *net.TCPConn, buffered *bufio.Reader, idle time.Duration, last *atomic.Int64) {
	defer dst.CloseWrite()
	if buffered != nil {
		if n := buffered.Buffered(); n > 0 {
			p, _ := buffered.Peek(n)
			dst.SetWriteDeadline(time.Now().Add(idle))
			if _, err := dst.Write(p); err != nil {
				src.CloseRead()
				return
			}
			buffered.Discard(n)
			last.Store(time.Now().UnixNano())
		}
	}
	period := idle / 2
	for {
		now := time.Now()
		src.SetReadDeadline(now.Add(period))
		writeDeadline := now.Add(period + idle)
		dst.SetWriteDeadline(writeDeadline)
		n, err := io.Copy(dst, src)
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		if err == nil {
			return // end of stream
		}
		if !isTimeout(err) {
			// The other side is gone: stop reading too so the peer sees the end.
			src.CloseRead()
			return
		}
		if !time.Now().Before(writeDeadline) || time.Since(time.Unix(0, last.Load())) >= idle {
			src.Close()
			dst.Close()
			return
		}
	}
}
