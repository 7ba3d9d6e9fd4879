// Package server is the node agent's API (docs/design.md "Node agent API"): on the unix socket
// the CNI plugin's framed protocol (package cnirpc: decisions at ADD, reports) beside the HTTP
// API (the pod list, a pod's rules, metrics, health, and POST /v1/reports for plugins of older
// releases), told apart by the first byte of each connection (ServeUnix). The HTTP routes are
// also served on TCP, where every request except the health probes needs a Kubernetes bearer
// token that may do what the request does (package auth). The unix socket is trusted: only
// root on the node can reach it.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sidelane/sidelane/internal/agent/auth"
	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/metrics"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/cnirpc"
)

// maxReport bounds a report's body.
const maxReport = 1 << 20

// Server holds what the handlers need.
type Server struct {
	Node           string
	Store          *record.Store
	Engine         inspect.Engine
	DefaultBackend string
	// Ready returns nil when the agent is ready (plugin installed, no conflist fight, informer
	// synced).
	Ready   func() error
	Metrics *metrics.Metrics
	// OnReport, when set, is called after a report was recorded.
	OnReport func(agentapi.Report)
	// Decider answers the plugin's Decide requests (podwatch.Watcher.Decide).
	Decider func(ctx context.Context, req cnirpc.DecideRequest) (cnirpc.Decision, error)
	Log     *slog.Logger

	warned sync.Map // warnings of plugins already logged
}

// Listener names (metric label).
const (
	ListenerUnix = "unix"
	ListenerTCP  = "tcp"
)

// UnixHandler serves every route, reports included, without authentication.
func (s *Server) UnixHandler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux, ListenerUnix, nil)
	mux.Handle("POST "+agentapi.PathReports, s.count(ListenerUnix, "reports", http.HandlerFunc(s.report)))
	return mux
}

// TCPHandler serves the read routes; all but the health probes require a token authorized by a.
func (s *Server) TCPHandler(a *auth.Authorizer) http.Handler {
	mux := http.NewServeMux()
	s.routes(mux, ListenerTCP, a)
	return mux
}

func (s *Server) routes(mux *http.ServeMux, listener string, a *auth.Authorizer) {
	guard := func(route string, attrs func(*http.Request) auth.Attributes, h http.HandlerFunc) http.Handler {
		var hh http.Handler = h
		if a != nil {
			hh = s.authorize(a, attrs, h)
		}
		return s.count(listener, route, hh)
	}
	mux.Handle("GET "+agentapi.PathPods, guard("pods", func(*http.Request) auth.Attributes {
		return auth.Attributes{Verb: "list", Resource: "pods"}
	}, s.pods))
	mux.Handle("GET /v1/pods/{namespace}/{name}/rules", guard("rules", func(r *http.Request) auth.Attributes {
		return auth.Attributes{Verb: "get", Resource: "pods", Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	}, s.rules))
	if s.Metrics != nil {
		mux.Handle("GET "+agentapi.PathMetrics, guard("metrics", func(*http.Request) auth.Attributes {
			return auth.Attributes{Verb: "get", Path: agentapi.PathMetrics}
		}, s.Metrics.Handler().ServeHTTP))
	}
	// Health probes carry no credentials (kubelet) and say only ok or not.
	mux.Handle("GET "+agentapi.PathHealthz, s.count(listener, "healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})))
	mux.Handle("GET "+agentapi.PathReadyz, s.count(listener, "readyz", http.HandlerFunc(s.readyz)))
	mux.Handle("/", s.count(listener, "other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})))
}

func (s *Server) authorize(a *auth.Authorizer, attrs func(*http.Request) auth.Attributes, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := a.Authorize(r.Context(), auth.BearerToken(r), attrs(r))
		if d.Status != http.StatusOK {
			s.log().Info("API request refused", "path", r.URL.Path, "status", d.Status, "user", d.User, "reason", d.Reason)
			if d.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sidelane-agent"`)
			}
			writeError(w, d.Status, d.Reason)
			return
		}
		h.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) count(listener, route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if s.Metrics != nil {
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			s.Metrics.APIRequests.WithLabelValues(listener, route, strconv.Itoa(code)).Inc()
		}
	})
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	var rep agentapi.Report
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReport))
	if err := dec.Decode(&rep); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("report: invalid JSON: %v", err))
		return
	}
	// One JSON object and nothing after it.
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "report: data after the JSON object")
		return
	}
	if err := s.applyReport(rep); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// applyReport records a plugin report (HTTP or framed protocol).
func (s *Server) applyReport(rep agentapi.Report) error {
	if err := s.Store.ApplyReport(rep); err != nil {
		return err
	}
	if s.Metrics != nil {
		s.Metrics.Reports.WithLabelValues(rep.Event, rep.State).Inc()
		if rep.Event == agentapi.EventAdd && rep.Duration > 0 {
			s.Metrics.AddDuration.Observe(rep.Duration.Seconds())
		}
	}
	s.log().Info("plugin report", "event", rep.Event, "pod", rep.Namespace+"/"+rep.Name, "state", rep.State, "reason", rep.Reason)
	if s.OnReport != nil {
		s.OnReport(rep)
	}
	return nil
}

func (s *Server) pods(w http.ResponseWriter, _ *http.Request) {
	recs := s.Store.List()
	list := agentapi.PodList{Node: s.Node, Items: make([]agentapi.PodRecord, 0, len(recs))}
	for _, r := range recs {
		list.Items = append(list.Items, r.PodRecord)
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) rules(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	rec, ok := s.Store.Get(ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("pod %s/%s: not in the record of node %s", ns, name, s.Node))
		return
	}
	writeJSON(w, http.StatusOK, inspect.View(s.Engine, rec, s.DefaultBackend))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.Ready != nil {
		if err := s.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	io.WriteString(w, "ok\n")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, agentapi.Error{Error: msg})
}

// ListenUnix listens on socket, creating its directory with mode 0700 and replacing a stale
// socket file; the socket itself is 0600.
func ListenUnix(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("agent socket dir: %w", err)
	}
	if err := os.Chmod(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("agent socket dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale agent socket: %w", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	return l, nil
}

// Serve serves h on l until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", l.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return nil
	}
}
