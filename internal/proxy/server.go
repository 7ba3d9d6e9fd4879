package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sidelane/sidelane/internal/contract"
)

// drainIdleGrace is how long an idle keep-alive client may still send one last request
// (answered with "Connection: close") after a drain starts; it closes the race between a
// client reusing its connection and the proxy closing it.
const drainIdleGrace = time.Second

// Server is one proxy instance.
type Server struct {
	cfg  Config
	m    *metrics
	alog *accessLog
	pool *pool
	log  *slog.Logger // the proxy's own messages (NewLogger filters them by cfg.LogLevel)

	// originalDst finds a connection's original destination (tests replace it).
	originalDst func(*net.TCPConn) (netip.AddrPort, error)
	localAddrs  map[netip.Addr]bool

	dialInbound4, dialInbound6, dialOutbound net.Dialer

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*clientConn]struct{}
	wg        sync.WaitGroup

	ready    atomic.Bool
	draining atomic.Bool
	drainReq chan struct{}
	drainOne sync.Once
}

// New returns a proxy for cfg; the access log goes to accessLog (stdout in the binary), the
// proxy's own messages to logger.
func New(cfg Config, accessLog io.Writer, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src4, err := netip.ParseAddr(cfg.InboundSourceIPv4)
	if err != nil || !src4.Is4() {
		return nil, fmt.Errorf("inbound-source-ipv4 %q: not an IPv4 address", cfg.InboundSourceIPv4)
	}
	src6, err := netip.ParseAddr(cfg.InboundSourceIPv6)
	if err != nil || !src6.Is6() || src6.Is4In6() {
		return nil, fmt.Errorf("inbound-source-ipv6 %q: not an IPv6 address", cfg.InboundSourceIPv6)
	}
	s := &Server{
		cfg:         cfg,
		m:           newMetrics(),
		log:         logger,
		originalDst: OriginalDst,
		localAddrs:  map[netip.Addr]bool{},
		conns:       map[*clientConn]struct{}{},
		drainReq:    make(chan struct{}),
	}
	if cfg.AccessLog {
		s.alog = newAccessLog(accessLog)
	}
	s.pool = newPool(cfg.MaxIdlePerDest, cfg.UpstreamIdle)
	s.dialOutbound = net.Dialer{Timeout: cfg.DialTimeout}
	s.dialInbound4 = net.Dialer{Timeout: cfg.DialTimeout, LocalAddr: &net.TCPAddr{IP: src4.AsSlice()}}
	s.dialInbound6 = net.Dialer{Timeout: cfg.DialTimeout, LocalAddr: &net.TCPAddr{IP: src6.AsSlice()}, Control: freebindControl}
	return s, nil
}

// Handler returns the Prometheus handler (also served on PrometheusAddr).
func (s *Server) promHandler() http.Handler {
	return promhttp.HandlerFor(s.m.registry, promhttp.HandlerOpts{})
}

// Drain starts a graceful drain (as SIGTERM does): Run stops accepting, lets in-flight work
// finish within DrainTimeout, and returns.
func (s *Server) Drain() { s.drainOne.Do(func() { close(s.drainReq) }) }

// Ready reports whether both capture listeners are up and the proxy is not draining.
func (s *Server) Ready() bool { return s.ready.Load() && !s.draining.Load() }

// listenCapture listens on port for IPv4 and, where the network namespace has IPv6, IPv6.
func listenCapture(port int) ([]net.Listener, error) {
	l4, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, fmt.Errorf("capture port %d: %w", port, err)
	}
	l6, err := net.Listen("tcp6", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		// No IPv6 in this network namespace: IPv4 only.
		return []net.Listener{l4}, nil
	}
	return []net.Listener{l4, l6}, nil
}

// Run serves until ctx is done or Drain is called, then drains and returns.
func (s *Server) Run(ctx context.Context) error {
	s.collectLocalAddrs()
	var servers []*http.Server
	defer func() {
		for _, hs := range servers {
			hs.Close()
		}
		if s.alog != nil {
			s.alog.Close()
		}
		s.pool.closeAll()
	}()
	for _, side := range []struct {
		addr string
		h    http.Handler
	}{
		{s.cfg.HealthAddr, s.healthHandler()},
		{s.cfg.PrometheusAddr, s.promMux()},
		{s.cfg.AdminAddr, s.adminHandler()},
	} {
		if side.addr == "" || side.addr == "off" {
			continue
		}
		l, err := net.Listen("tcp", side.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", side.addr, err)
		}
		hs := &http.Server{Handler: side.h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, hs)
		go hs.Serve(l)
	}
	for _, p := range []struct {
		port int
		dir  Direction
	}{{s.cfg.InboundPort, Inbound}, {s.cfg.OutboundPort, Outbound}} {
		ls, err := listenCapture(p.port)
		if err != nil {
			s.closeListeners()
			return err
		}
		s.mu.Lock()
		s.listeners = append(s.listeners, ls...)
		s.mu.Unlock()
		for _, l := range ls {
			go s.acceptLoop(l.(*net.TCPListener), p.dir)
		}
	}
	s.ready.Store(true)
	stopJanitor := s.pool.janitor()
	defer stopJanitor()
	s.log.Info("ready", "inbound", s.cfg.InboundPort, "outbound", s.cfg.OutboundPort)

	select {
	case <-ctx.Done():
	case <-s.drainReq:
	}
	s.drain()
	return nil
}

func (s *Server) collectLocalAddrs() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			s.localAddrs[p.Addr()] = true
		}
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		l.Close()
	}
	s.listeners = nil
}

// drain stops accepting, wakes idle keep-alive connections, waits for in-flight work up to
// DrainTimeout and then closes whatever is left.
func (s *Server) drain() {
	s.draining.Store(true)
	s.closeListeners()
	s.log.Info("draining", "timeout", s.cfg.DrainTimeout.String())
	s.mu.Lock()
	for cc := range s.conns {
		cc.wakeIfIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.log.Info("drained")
	case <-time.After(s.cfg.DrainTimeout):
		s.mu.Lock()
		n := len(s.conns)
		for cc := range s.conns {
			cc.forceClose()
		}
		s.mu.Unlock()
		s.log.Warn("drain deadline: connections closed", "connections", n)
		<-done
	}
}

func (s *Server) acceptLoop(l *net.TCPListener, dir Direction) {
	var backoff time.Duration
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of spinning.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			s.log.Error("accept", "err", err, "retry_in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.m.connBy[dir].Inc()
		// The limit is per capture port: a flood of inbound connections cannot lock the
		// app's own outbound traffic out, nor the reverse.
		if s.m.activeBy[dir].Add(1) > int64(s.cfg.MaxConnections) {
			s.m.activeBy[dir].Add(-1)
			s.m.refused.Add(1)
			c.SetLinger(0)
			c.Close()
			continue
		}
		cc := newClientConn(s, c, dir)
		s.mu.Lock()
		if s.draining.Load() {
			s.mu.Unlock()
			s.m.activeBy[dir].Add(-1)
			c.Close()
			continue
		}
		s.conns[cc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(cc)
	}
}

func (s *Server) serve(cc *clientConn) {
	defer func() {
		cc.close()
		s.mu.Lock()
		delete(s.conns, cc)
		s.mu.Unlock()
		s.m.activeBy[cc.dir].Add(-1)
		cc.release()
		s.wg.Done()
	}()
	dst, err := s.originalDst(cc.c)
	if err != nil {
		s.m.refused.Add(1)
		s.log.Warn("no original destination", "direction", cc.dir.String(), "client", cc.c.RemoteAddr().String(), "err", err)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if s.isLoop(cc.c, dst) {
		s.m.refused.Add(1)
		s.log.Warn("refused: it would loop back into the proxy", "direction", cc.dir.String(), "client", cc.c.RemoteAddr().String(), "original_dst", dst.String())
		return
	}
	cc.dst = dst
	if s.detectHTTP(cc) {
		s.serveHTTP(cc)
		return
	}
	s.serveNonHTTP(cc)
}

// isLoop reports whether a connection was not redirected (its original destination is the
// capture port itself) or is addressed to one of the proxy's own capture ports on this pod.
func (s *Server) isLoop(c *net.TCPConn, dst netip.AddrPort) bool {
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		if local := la.AddrPort(); netip.AddrPortFrom(local.Addr().Unmap(), local.Port()) == dst {
			return true
		}
	}
	p := int(dst.Port())
	if p != s.cfg.InboundPort && p != s.cfg.OutboundPort {
		return false
	}
	a := dst.Addr()
	return a.IsLoopback() || a.IsUnspecified() || s.localAddrs[a]
}

// dial connects to dst for a connection of direction dir: inbound from the passthrough
// source address (127.0.0.6 / ::6), outbound from the proxy's own address.
func (s *Server) dial(dir Direction, dst netip.AddrPort) (*net.TCPConn, error) {
	d := &s.dialOutbound
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	if dir == Inbound {
		if network == "tcp6" {
			d = &s.dialInbound6
		} else {
			d = &s.dialInbound4
		}
	}
	c, err := d.Dial(network, dst.String())
	if err != nil {
		return nil, err
	}
	s.m.upstream.Add(1)
	return c.(*net.TCPConn), nil
}

func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+contract.HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

func (s *Server) promMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+contract.PrometheusPath, s.promHandler())
	return mux
}

// Stats is the admin /stats document.
type Stats struct {
	Ready             bool  `json:"ready"`
	Draining          bool  `json:"draining"`
	ActiveConnections int64 `json:"activeConnections"`
	HTTPRequests      int64 `json:"httpRequests"`
	RawConnections    int64 `json:"rawConnections"`
	Refused           int64 `json:"refusedConnections"`
	UpstreamDials     int64 `json:"upstreamDials"`
	IdleUpstreams     int   `json:"idleUpstreams"`
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{
		Ready:             s.Ready(),
		Draining:          s.draining.Load(),
		ActiveConnections: s.m.active(),
		HTTPRequests:      s.m.http.Load(),
		RawConnections:    s.m.raw.Load(),
		Refused:           s.m.refused.Load(),
		UpstreamDials:     s.m.upstream.Load(),
		IdleUpstreams:     s.pool.idle(),
	}
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	}
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Stats()) })
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.cfg) })
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, _ *http.Request) {
		s.Drain()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "draining\n")
	})
	return mux
}

// NewLogger returns the logger of the proxy's own messages: JSON lines on w, at level (one of
// LogLevels) and above.
func NewLogger(w io.Writer, level string) *slog.Logger {
	lvl := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[level]
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
}
