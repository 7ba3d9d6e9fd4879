package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/cnirpc"
)

// rpcTimeout bounds reading a plugin's request and writing the answer.
const rpcTimeout = 10 * time.Second

// Decide implements cnirpc.Handler: the decision comes from s.Decider (the pod informer's cache,
// or the API server on a miss).
func (s *Server) Decide(ctx context.Context, req cnirpc.DecideRequest, warnings []string) (cnirpc.Decision, error) {
	s.warnOnce(warnings)
	if s.Decider == nil {
		return cnirpc.Decision{}, errors.New("this agent does not decide (no pod informer)")
	}
	d, err := s.Decider(ctx, req)
	if s.Metrics != nil {
		result := "skip"
		switch {
		case err != nil:
			result = "error"
		case d.Capture:
			result = "capture"
		}
		s.Metrics.Decisions.WithLabelValues(result).Inc()
	}
	if err != nil {
		s.log().Warn("plugin decision failed", "pod", req.Namespace+"/"+req.Name, "error", err)
	}
	return d, err
}

// Report implements cnirpc.Handler: the same as POST /v1/reports.
func (s *Server) Report(_ context.Context, r agentapi.Report, warnings []string) error {
	s.warnOnce(warnings)
	return s.applyReport(r)
}

var _ cnirpc.Handler = (*Server)(nil)

// warnOnce logs each distinct warning of the plugins once (e.g. an old conflist entry's
// kubeconfig field, which is ignored).
func (s *Server) warnOnce(warnings []string) {
	for _, w := range warnings {
		if _, seen := s.warned.LoadOrStore(w, true); !seen {
			s.log().Warn("CNI plugin configuration: "+w, "once", true)
		}
	}
}

// ServeUnix serves the unix socket: a connection whose first byte starts a cnirpc frame is the
// plugin speaking the framed protocol (served by s); any other is HTTP (served by h, the agent
// API for inspection on the node and for plugins of older releases). It returns when ctx ends.
func (s *Server) ServeUnix(ctx context.Context, l net.Listener, h http.Handler) error {
	httpConns := &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	srvErr := make(chan error, 1)
	go func() { srvErr <- Serve(ctx, httpConns, h) }()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			httpConns.Close()
			if ctx.Err() != nil {
				return <-srvErr
			}
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.dispatch(ctx, conn, httpConns)
		}()
	}
}

// dispatch reads the first byte of conn and hands it to the framed protocol or to HTTP.
func (s *Server) dispatch(ctx context.Context, conn net.Conn, httpConns *chanListener) {
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(rpcTimeout))
	first, err := br.Peek(1)
	if err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: conn, r: br}
	if cnirpc.IsFrameStart(first[0]) {
		if err := cnirpc.ServeConn(ctx, pc, s, rpcTimeout); err != nil {
			s.log().Debug("plugin connection", "error", err)
		}
		s.countRPC()
		return
	}
	select {
	case httpConns.conns <- pc:
	case <-httpConns.done:
		conn.Close()
	}
}

func (s *Server) countRPC() {
	if s.Metrics != nil {
		s.Metrics.APIRequests.WithLabelValues(ListenerUnix, "cnirpc", "-").Inc()
	}
}

// peekedConn reads what was peeked first.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// chanListener is a net.Listener fed with connections by ServeUnix.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
