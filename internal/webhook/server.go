package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/sidelane/sidelane/internal/inject"
)

// Options configure a Server.
type Options struct {
	// Listen is the HTTPS address of /inject, /healthz and /readyz (":9443").
	Listen string
	// MetricsListen is the plain-HTTP address of /metrics, /healthz and /readyz (":9090");
	// "" serves no metrics port.
	MetricsListen string

	// CertFile and KeyFile are the serving certificate, reloaded when they change.
	CertFile, KeyFile string
	// SelfSigned makes a CA and serving certificate for Service.Namespace.svc at start and keeps
	// the CA in the caBundle of the MutatingWebhookConfiguration WebhookConfig (needs Client).
	SelfSigned    bool
	Service       string
	Namespace     string
	WebhookConfig string

	// TemplateFile is the injection template, reloaded when it changes; Template is the base it
	// is read over (and the whole template when TemplateFile is "").
	TemplateFile string
	Template     inject.Template

	// Exclude are namespaces never injected (contract.DefaultExcludeNamespaces).
	Exclude []string
	// Client reaches the API server (namespace labels, caBundle). Namespaces overrides the
	// namespace lookup (default: APINamespaces over Client).
	Client     kubernetes.Interface
	Namespaces NamespaceLookup

	Log *slog.Logger
}

// Server is the injector: the webhook over HTTPS and its metrics over HTTP.
type Server struct {
	opts      Options
	log       *slog.Logger
	templates *TemplateStore
	certs     *CertReloader // nil when self-signed
	self      *SelfSigned   // nil unless self-signed
	registry  *prometheus.Registry
	handler   *Handler
	ready     atomic.Bool
}

// New checks opts, loads the template and the certificate (or makes one) and returns a Server
// that is not yet serving.
func New(opts Options) (*Server, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log, registry: prometheus.NewRegistry()}
	var err error
	if s.templates, err = NewTemplateStore(opts.TemplateFile, opts.Template, log); err != nil {
		return nil, err
	}
	switch {
	case opts.SelfSigned && (opts.CertFile != "" || opts.KeyFile != ""):
		return nil, errors.New("--self-signed and --tls-cert/--tls-key are exclusive")
	case opts.SelfSigned:
		if opts.Client == nil {
			return nil, errors.New("--self-signed needs access to the API server to patch the caBundle")
		}
		if opts.WebhookConfig == "" {
			return nil, errors.New("--self-signed needs --webhook-config (the MutatingWebhookConfiguration to patch)")
		}
		if s.self, err = NewSelfSigned(opts.Service, opts.Namespace, 365*24*time.Hour); err != nil {
			return nil, err
		}
	case opts.CertFile == "" || opts.KeyFile == "":
		return nil, errors.New("no serving certificate: give --tls-cert and --tls-key, or --self-signed")
	default:
		if s.certs, err = NewCertReloader(opts.CertFile, opts.KeyFile, log); err != nil {
			return nil, err
		}
	}
	ns := opts.Namespaces
	if ns == nil && opts.Client != nil {
		ns = &APINamespaces{Client: opts.Client}
	}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.handler = &Handler{
		Template:   s.templates.Get,
		Namespaces: ns,
		Exclude:    opts.Exclude,
		Metrics:    NewMetrics(s.registry),
		Log:        log,
	}
	return s, nil
}

// Gatherer is the server's Prometheus registry (what /metrics serves).
func (s *Server) Gatherer() prometheus.Gatherer { return s.registry }

// Templates is the server's template store.
func (s *Server) Templates() *TemplateStore { return s.templates }

// CAPEM is the self-signed CA (nil unless Options.SelfSigned).
func (s *Server) CAPEM() []byte {
	if s.self == nil {
		return nil
	}
	return s.self.CAPEM
}

// Ready reports whether the server can answer the API server: certificate and template
// loaded and, with --self-signed, the caBundle in place.
func (s *Server) Ready() bool { return s.ready.Load() }

// TLSConfig is the serving TLS configuration.
func (s *Server) TLSConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if s.self != nil {
		cert := s.self.Cert
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	} else {
		cfg.GetCertificate = s.certs.GetCertificate
	}
	return cfg
}

// Handler is the HTTPS mux: /inject, /healthz, /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/inject", s.handler)
	s.health(mux)
	return mux
}

// MetricsHandler is the plain-HTTP mux: /metrics, /healthz, /readyz.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.health(mux)
	return mux
}

func (s *Server) health(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: waiting for the caBundle of the webhook configuration", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}

// Run listens on Options.Listen (and MetricsListen) and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("webhook listener: %w", err)
	}
	var mln net.Listener
	if s.opts.MetricsListen != "" {
		if mln, err = net.Listen("tcp", s.opts.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
	}
	return s.Serve(ctx, ln, mln)
}

// Serve serves the webhook on ln (TLS is added here) and the metrics on mln (may be nil)
// until ctx ends, then shuts both down gracefully. It also watches the template and
// certificate files and, with --self-signed, keeps the caBundle.
func (s *Server) Serve(ctx context.Context, ln, mln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.templates.Watch(ctx); err != nil {
		s.log.Warn("template file not watched; re-read every poll interval only", "err", err)
		go pollOnly(ctx, func() {
			if err := s.templates.Reload(); err != nil {
				s.log.Error("template not reloaded; keeping the previous one", "err", err)
			}
		})
	}
	if s.certs != nil {
		if err := s.certs.Watch(ctx); err != nil {
			s.log.Warn("certificate files not watched; re-read every poll interval only", "err", err)
			go pollOnly(ctx, func() { _ = s.certs.Reload() })
		}
		s.ready.Store(true)
	} else {
		go KeepCABundle(ctx, s.opts.Client, s.opts.WebhookConfig, s.self.CAPEM, time.Minute, s.log, func() { s.ready.Store(true) })
	}

	servers := []*http.Server{{
		Handler:           s.Handler(),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}}
	listeners := []net.Listener{tls.NewListener(ln, servers[0].TLSConfig)}
	if mln != nil {
		servers = append(servers, &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, mln)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() {
			if err := srv.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	s.log.Info("serving", "webhook", ln.Addr().String(), "selfSigned", s.self != nil)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	return err
}

func pollOnly(ctx context.Context, reload func()) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			reload()
		}
	}
}
