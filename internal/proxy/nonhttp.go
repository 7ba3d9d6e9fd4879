package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidelane/sidelane/internal/proxy/h2relay"
	"github.com/sidelane/sidelane/internal/proxy/tlssniff"
)

// What a connection that is not HTTP/1.x turns out to be.
type nonHTTPKind uint8

const (
	kindRaw nonHTTPKind = iota
	kindH2              // HTTP/2 with prior knowledge (h2c, what gRPC uses in cleartext)
	kindTLS             // a TLS ClientHello: relayed raw, SNI and ALPN recorded
)

// serveNonHTTP takes a connection that detectHTTP did not claim: HTTP/2 goes to the
// stream-aware relay, TLS is recorded by its ClientHello and relayed raw, anything else is
// relayed raw.
func (s *Server) serveNonHTTP(cc *clientConn) {
	kind, hello := s.sniff(cc)
	switch kind {
	case kindH2:
		s.serveH2(cc)
		return
	case kindTLS:
		s.recordTLS(cc, hello)
	}
	s.serveRaw(cc)
}

// sniff looks at the client's first bytes, which protocol detection left buffered, without
// consuming them, waiting at most PeekTimeout for more of them. For TLS it returns the peeked ClientHello record (or as
// much of it as the buffer holds).
func (s *Server) sniff(cc *clientConn) (nonHTTPKind, []byte) {
	if cc.br.Buffered() == 0 {
		// Protocol detection already waited PeekTimeout and got nothing: a server-first
		// protocol, relayed at once.
		return kindRaw, nil
	}
	cc.tc.setReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	defer cc.tc.setReadDeadline(time.Time{})
	p, _ := cc.br.Peek(1)
	if len(p) == 0 {
		return kindRaw, nil
	}
	switch p[0] {
	case h2relay.PrefacePrefix[0]:
		p, _ = cc.br.Peek(len(h2relay.PrefacePrefix))
		if string(p) == h2relay.PrefacePrefix {
			return kindH2, nil
		}
	case 0x16:
		p, _ = cc.br.Peek(tlssniff.RecordHeaderLen)
		n, err := tlssniff.RecordLen(p)
		if err != nil {
			return kindRaw, nil
		}
		p, _ = cc.br.Peek(min(n, cc.br.Size()))
		return kindTLS, p
	}
	return kindRaw, nil
}

// recordTLS logs the ClientHello's SNI and ALPN and counts the connection.
func (s *Server) recordTLS(cc *clientConn, p []byte) {
	h, err := tlssniff.Parse(p)
	s.m.tlsConnection(cc.dir, h.ALPN)
	if s.alog != nil {
		e := tlsEntry{start: time.Now(), direction: cc.dir, dst: cc.dst, hello: h}
		if err != nil {
			e.err = err.Error()
		}
		s.alog.writeTLS(&e)
	}
}

// serveH2 relays an HTTP/2 connection stream-aware (package h2relay).
func (s *Server) serveH2(cc *clientConn) {
	lim := h2relay.Limits{
		MaxHeaderListSize: uint32(s.cfg.MaxHeaderBytes),
		PrefaceTimeout:    s.cfg.HeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
	}
	r := h2relay.New(cc.c, cc.br, lim, func(st *h2relay.Stream) { s.h2Stream(cc, st) })
	drain := r.Drain
	cc.onDrain.Store(&drain)
	if s.draining.Load() {
		r.Drain() // the drain began while this connection was being sniffed
	}
	err := r.Serve(func() (net.Conn, error) {
		up, err := s.dial(cc.dir, cc.dst)
		if err != nil {
			return nil, err
		}
		cc.setUpstream(up)
		return up, nil
	})
	cc.setUpstream(nil)
	if err != nil {
		s.log.Warn("http2", "direction", cc.dir.String(), "client", cc.c.RemoteAddr().String(), "original_dst", cc.dst.String(), "err", err)
	}
}

// h2Stream records one finished HTTP/2 stream in the access log and the request metrics.
func (s *Server) h2Stream(cc *clientConn, st *h2relay.Stream) {
	e := entry{start: st.Start, direction: cc.dir, dst: cc.dst, method: []byte(st.Method),
		authority: []byte(st.Authority), path: []byte(st.Path), status: st.Status,
		reqBytes: st.ReqBytes, respBytes: st.RespBytes, duration: st.Duration, err: st.Err,
		proto: "HTTP/2", grpcStatus: st.GRPCStatus, grpcMessage: st.GRPCMessage}
	s.m.stream(cc.dir, e.method, st.Status, grpcStatusLabel(st.GRPCStatus), st.ReqBytes, st.RespBytes, st.Duration.Seconds())
	if s.alog != nil {
		s.alog.write(&e)
	}
}

// grpcStatusLabel bounds the grpc_status label: the codes of the gRPC spec (0-16), "other"
// for anything else, "" when the stream carried none.
func grpcStatusLabel(v string) string {
	if v == "" {
		return ""
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 16 && strconv.Itoa(n) == v {
		return v
	}
	return "other"
}

// tlsALPNLabels are the alpn label values: the client's first offered protocol when it is a
// common one, "other" when not, "none" without an ALPN extension.
var tlsALPNLabels = []string{"h2", "http/1.1", "http/1.0", "grpc-exp", "other", "none"}

func alpnLabel(offered []string) string {
	if len(offered) == 0 {
		return "none"
	}
	for _, l := range tlsALPNLabels[:4] {
		if offered[0] == l {
			return l
		}
	}
	return "other"
}

// nonHTTPMetrics are the series for HTTP/2 streams and TLS connections.
type nonHTTPMetrics struct {
	tls   *prometheus.CounterVec
	cache sync.Map // streamKey -> prometheus.Counter (requests_total children)
}

type streamKey struct {
	d     Direction
	mi    int
	code  int
	grpcS string
}

func (m *metrics) registerNonHTTP() {
	m.nonHTTP.tls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_tls_connections_total",
		Help: "TLS connections relayed, by the first ALPN protocol the client offered.",
	}, []string{"direction", "alpn"})
	m.registry.MustRegister(m.nonHTTP.tls)
}

func (m *metrics) tlsConnection(d Direction, offered []string) {
	m.nonHTTP.tls.WithLabelValues(d.String(), alpnLabel(offered)).Inc()
}

// stream counts one HTTP/2 stream in the request series, as request does for HTTP/1.x.
func (m *metrics) stream(d Direction, method []byte, code int, grpcStatus string, reqBytes, respBytes int64, seconds float64) {
	if code < 0 || code >= 600 {
		code = 0
	}
	k := streamKey{d: d, mi: methodIndex(method), code: code, grpcS: grpcStatus}
	c, ok := m.nonHTTP.cache.Load(k)
	if !ok {
		c, _ = m.nonHTTP.cache.LoadOrStore(k, m.requests.WithLabelValues(d.String(), methodNames[k.mi], strconv.Itoa(code), grpcStatus))
	}
	c.(prometheus.Counter).Inc()
	m.exchanged(d, reqBytes, respBytes, seconds)
}

// tlsEntry is the access-log line of a TLS connection (one per connection, at its start).
type tlsEntry struct {
	start     time.Time
	direction Direction
	dst       netip.AddrPort
	hello     tlssniff.Hello
	err       string
}

func (l *accessLog) writeTLS(e *tlsEntry) {
	l.mu.Lock()
	b := appendLineStart(l.line[:0], e.start, e.direction, e.dst)
	b = append(b, `","protocol":"TLS","tls_sni":`...)
	b = appendJSONString(b, []byte(e.hello.ServerName))
	b = append(b, `,"tls_alpn":`...)
	b = appendJSONString(b, []byte(strings.Join(e.hello.ALPN, ",")))
	l.endLine(b, e.err)
}
