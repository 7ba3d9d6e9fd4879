package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidelane/sidelane/internal/proxy/httpcodec"
)

// clientConn is one accepted connection on a capture port.
type clientConn struct {
	s   *Server
	c   *net.TCPConn
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
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	return &clientConn{s: s, c: c, dir: dir, br: br, bw: bw}
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

// httpMethods are the request-line prefixes that make a connection HTTP/1.x.
var httpMethods = []string{"GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// classify says whether p is certainly HTTP/1.x (1), certainly not (-1), or too short to tell (0).
func classify(p []byte) int {
	undecided := false
	for _, m := range httpMethods {
		n := min(len(p), len(m))
		if string(p[:n]) == m[:n] {
			if n == len(m) {
				return 1
			}
			undecided = true
		}
	}
	if undecided {
		return 0
	}
	return -1
}

// detectHTTP waits up to PeekTimeout for the client's first bytes. A client that sends
// nothing (a server-first protocol: MySQL, SMTP) or bytes that are no HTTP/1.x method is
// relayed as raw TCP.
func (s *Server) detectHTTP(cc *clientConn) bool {
	cc.c.SetReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	defer cc.c.SetReadDeadline(time.Time{})
	for want := 1; want <= 8; want++ {
		p, err := cc.br.Peek(want)
		if n := cc.br.Buffered(); n > want {
			p, _ = cc.br.Peek(min(n, 8))
		}
		switch classify(p) {
		case 1:
			return true
		case -1:
			return false
		}
		if err != nil {
			return false
		}
		if len(p) > want {
			want = len(p)
		}
	}
	return false
}

// Canned responses for requests the proxy answers itself.
const (
	resp400 = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	resp408 = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	resp431 = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	resp502 = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// serveHTTP proxies requests on one client connection until it closes.
func (s *Server) serveHTTP(cc *clientConn) {
	c := cc.c
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
		if !first && cc.br.Buffered() == 0 {
			// Idle keep-alive: wait for the next request's first byte.
			cc.idle.Store(true)
			d := s.cfg.IdleTimeout
			if s.draining.Load() {
				d = min(d, drainIdleGrace)
			}
			c.SetReadDeadline(time.Now().Add(d))
			_, err := cc.br.Peek(1)
			cc.idle.Store(false)
			if err != nil {
				return
			}
		}
		c.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		var err error
		cc.reqHead, err = httpcodec.ReadRequest(cc.br, &cc.req, cc.reqHead, s.cfg.MaxHeaderBytes)
		if err != nil {
			s.requestError(cc, err)
			return
		}
		first = false
		c.SetReadDeadline(time.Time{})
		if !s.proxyRequest(cc, getBuf) {
			return
		}
	}
}

// requestError answers a request head that could not be read and logs it.
func (s *Server) requestError(cc *clientConn, err error) {
	var status int
	var canned string
	switch {
	case errors.Is(err, httpcodec.ErrHeaderTooLarge):
		status, canned = 431, resp431
	case errors.Is(err, httpcodec.ErrMalformed):
		status, canned = 400, resp400
	case isTimeout(err):
		// A client that started a head and stalled (slowloris), or opened a connection
		// and never sent a whole head.
		status, canned = 408, resp408
	default:
		return // the client closed or went away between requests
	}
	cc.c.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(cc.c, canned)
	e := entry{start: time.Now(), direction: cc.dir, dst: cc.dst, status: status, err: err.Error()}
	s.m.request(cc.dir, nil, status, 0, 0, 0)
	if s.alog != nil {
		s.alog.write(&e)
	}
}

// proxyRequest forwards the request in cc.req and its response; it reports whether the
// client connection may carry another request.
func (s *Server) proxyRequest(cc *clientConn, getBuf func() []byte) (keep bool) {
	start := time.Now()
	req := &cc.req
	e := entry{start: start, direction: cc.dir, dst: cc.dst}
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
			s.alog.write(&e)
		}
	}()

	key := poolKey{dst: cc.dst, dir: cc.dir}
	reqHasBody := req.Framing != httpcodec.NoBody
	var up *upConn
	for attempt := 0; ; attempt++ {
		up = s.pool.get(key)
		if up == nil {
			uc, err := s.dial(cc.dir, cc.dst)
			if err != nil {
				e.status, e.err = 502, err.Error()
				io.WriteString(cc.c, resp502)
				return false
			}
			up = newUpConn(uc, key)
		}
		cc.setUpstream(up.c)
		err := s.sendRequest(cc, up, getBuf, &e)
		if err == nil {
			cc.respHead, err = httpcodec.ReadResponse(up.br, &cc.resp, cc.respHead, s.cfg.MaxHeaderBytes, req.Method)
		}
		if err == nil {
			break
		}
		// A pooled connection the upstream closed while it was idle fails before any
		// response byte; a request without a body is safe to send again on a new one.
		retry := up.reused && !reqHasBody && attempt == 0 && up.br.Buffered() == 0 && !errors.Is(err, httpcodec.ErrMalformed)
		up.close()
		cc.setUpstream(nil)
		if retry {
			continue
		}
		e.status, e.err = 502, err.Error()
		io.WriteString(cc.c, resp502)
		return false
	}
	upKeep := true
	defer func() {
		cc.setUpstream(nil)
		if upKeep {
			s.pool.put(up)
		} else {
			up.close()
		}
	}()

	resp := &cc.resp
	bodySent := !reqHasBody || !req.ExpectContinue
	// Interim responses: 100 Continue releases a waiting request body; others pass through.
	for resp.Status < 200 && resp.Status != 101 {
		if err := httpcodec.WriteResponseHead(cc.bw, resp, false); err != nil {
			upKeep = false
			return false
		}
		if err := cc.bw.Flush(); err != nil {
			upKeep = false
			return false
		}
		if resp.Status == 100 && !bodySent {
			n, err := httpcodec.CopyBody(up.bw, cc.br, req.Framing, req.ContentLength, getBuf())
			e.reqBytes += n
			if err == nil {
				err = up.bw.Flush()
			}
			if err != nil {
				e.status, e.err = 502, err.Error()
				upKeep = false
				return false
			}
			bodySent = true
		}
		var err error
		cc.respHead, err = httpcodec.ReadResponse(up.br, resp, cc.respHead, s.cfg.MaxHeaderBytes, req.Method)
		if err != nil {
			e.status, e.err = 502, err.Error()
			upKeep = false
			io.WriteString(cc.c, resp502)
			return false
		}
	}
	e.status = resp.Status

	if resp.Status == 101 {
		// Protocol switch (WebSocket and the like): from here on both sides are a tunnel.
		upKeep = false
		if err := httpcodec.WriteResponseHead(cc.bw, resp, false); err != nil {
			return false
		}
		if err := cc.bw.Flush(); err != nil {
			return false
		}
		e.duration = time.Since(start)
		cc.setUpstream(up.c)
		relay(cc.c, cc.br, up.c, up.br)
		return false
	}

	// The client's body was never asked for (final response without 100 Continue): the
	// connection's framing is lost, both sides close after this response.
	framingLost := !bodySent
	keep = !req.Close && !framingLost && resp.Framing != httpcodec.UntilClose && !s.draining.Load()
	upKeep = !resp.Close && !framingLost && resp.Framing != httpcodec.UntilClose
	if err := httpcodec.WriteResponseHead(cc.bw, resp, !keep); err != nil {
		upKeep = false
		return false
	}
	n, err := httpcodec.CopyBody(cc.bw, up.br, resp.Framing, resp.ContentLength, getBuf())
	e.respBytes = n
	if err == nil {
		err = cc.bw.Flush()
	}
	if err != nil {
		e.err = err.Error()
		upKeep = false
		return false
	}
	return keep
}

// sendRequest writes the request head and, unless the client waits for 100 Continue, its body.
func (s *Server) sendRequest(cc *clientConn, up *upConn, getBuf func() []byte, e *entry) error {
	req := &cc.req
	if err := httpcodec.WriteRequestHead(up.bw, req); err != nil {
		return err
	}
	if req.Framing != httpcodec.NoBody && !req.ExpectContinue {
		n, err := httpcodec.CopyBody(up.bw, cc.br, req.Framing, req.ContentLength, getBuf())
		e.reqBytes = n
		if err != nil {
			return err
		}
	}
	return up.bw.Flush()
}

// serveRaw relays a non-HTTP connection to its original destination.
func (s *Server) serveRaw(cc *clientConn) {
	up, err := s.dial(cc.dir, cc.dst)
	if err != nil {
		s.logf("warn", "sidelane-proxy: %s %s -> %s: %v", cc.dir, cc.c.RemoteAddr(), cc.dst, err)
		return
	}
	s.m.raw.Add(1)
	cc.setUpstream(up)
	defer cc.setUpstream(nil)
	relay(cc.c, cc.br, up, nil)
}

// relay copies a→b and b→a until both directions end, passing each end of stream on as a
// half-close (CloseWrite), then closes both. Bytes already buffered in ar/br are sent first;
// after that the kernel moves the data (splice between TCP sockets).
func relay(a *net.TCPConn, ar *bufio.Reader, b *net.TCPConn, br *bufio.Reader) {
	done := make(chan struct{})
	go func() {
		copyHalf(b, a, ar)
		close(done)
	}()
	copyHalf(a, b, br)
	<-done
	a.Close()
	b.Close()
}

func copyHalf(dst, src *net.TCPConn, buffered *bufio.Reader) {
	defer dst.CloseWrite()
	if buffered != nil {
		if n := buffered.Buffered(); n > 0 {
			p, _ := buffered.Peek(n)
			if _, err := dst.Write(p); err != nil {
				src.CloseRead()
				return
			}
			buffered.Discard(n)
		}
	}
	if _, err := io.Copy(dst, src); err != nil {
		// The other side is gone: stop reading too so the peer sees the end.
		src.CloseRead()
	}
}
