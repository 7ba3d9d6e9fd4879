package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sidelane/sidelane/internal/dirwatch"
	"github.com/sidelane/sidelane/internal/inject"
)

// PollInterval is how often watched files are re-read even without a file-system event (a
// fallback: fsnotify events can be lost, e.g. when a directory is replaced).
var PollInterval = time.Minute

// watchFiles calls reload after any change in the directories of paths, until ctx ends.
// Kubernetes updates a mounted ConfigMap or Secret by swapping a symlink (..data) in the mount
// directory, so the directory is watched, not the file (package dirwatch). Events are coalesced
// over 100 ms.
func watchFiles(ctx context.Context, log *slog.Logger, paths []string, reload func()) error {
	var dirs []string
	for _, p := range paths {
		dirs = append(dirs, filepath.Dir(p))
	}
	triggers, err := dirwatch.Watch(ctx, dirs, dirwatch.Options{
		Poll:     PollInterval,
		Debounce: 100 * time.Millisecond,
		Ignore:   func(ev fsnotify.Event) bool { return ev.Op == fsnotify.Chmod },
		Log:      log,
	})
	if err != nil {
		return err
	}
	go func() {
		for range triggers { // a change, a poll, or events lost: look again
			reload()
		}
	}()
	return nil
}

// TemplateStore holds the current injection template, read from a file and reloaded when
// the file changes. A file that does not parse leaves the previous template in place.
type TemplateStore struct {
	path string
	base inject.Template
	log  *slog.Logger

	mu   sync.Mutex // serialises reloads
	last []byte
	cur  atomic.Pointer[inject.Template]
	// Reloads counts loads that changed the template, Failures reloads that failed.
	Reloads, Failures atomic.Int64
}

// NewTemplateStore loads the template file at path over base (base alone when path is "").
// A bad initial file is an error.
func NewTemplateStore(path string, base inject.Template, log *slog.Logger) (*TemplateStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &TemplateStore{path: path, base: base, log: log}
	if path == "" {
		if err := base.Validate(); err != nil {
			return nil, err
		}
		s.cur.Store(&base)
		return s, nil
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Get returns the current template.
func (s *TemplateStore) Get() inject.Template { return *s.cur.Load() }

// Reload re-reads the file; on error the current template is kept and the error returned.
func (s *TemplateStore) Reload() error {
	if s.path == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		s.Failures.Add(1)
		return fmt.Errorf("template: %w", err)
	}
	if s.cur.Load() != nil && bytes.Equal(data, s.last) {
		return nil
	}
	t, err := inject.ParseTemplate(data, s.base)
	if err != nil {
		s.Failures.Add(1)
		return fmt.Errorf("%s: %w", s.path, err)
	}
	s.last = data
	s.cur.Store(&t)
	s.Reloads.Add(1)
	s.log.Info("template loaded", "file", s.path, "image", t.Image, "nativeSidecar", t.NativeSidecar)
	return nil
}

// Watch reloads the template whenever its directory changes, until ctx ends; errors are
// logged and the previous template kept.
func (s *TemplateStore) Watch(ctx context.Context) error {
	if s.path == "" {
		return nil
	}
	return watchFiles(ctx, s.log, []string{s.path}, func() {
		if err := s.Reload(); err != nil {
			s.log.Error("template not reloaded; keeping the previous one", "err", err)
		}
	})
}

// CertReloader serves a certificate and key from files and reloads them when they change
// (certificate rotation by cert-manager or a Secret update). A pair that does not load (for
// example the certificate written before its key) leaves the previous one in place.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu  sync.Mutex
	cur atomic.Pointer[tls.Certificate]
}

// NewCertReloader loads the pair once; a bad pair is an error.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the pair; on error the current certificate is kept.
func (c *CertReloader) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("loading serving certificate %s / %s: %w", c.certFile, c.keyFile, err)
	}
	if old := c.cur.Load(); old != nil && len(old.Certificate) > 0 && bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return nil
	}
	c.cur.Store(&cert)
	if cert.Leaf != nil {
		c.log.Info("serving certificate loaded", "file", c.certFile, "notAfter", cert.Leaf.NotAfter, "serial", cert.Leaf.SerialNumber)
	}
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Watch reloads the pair whenever its directories change, until ctx ends.
func (c *CertReloader) Watch(ctx context.Context) error {
	return watchFiles(ctx, c.log, []string{c.certFile, c.keyFile}, func() {
		if err := c.Reload(); err != nil {
			c.log.Error("serving certificate not reloaded; keeping the previous one", "err", err)
		}
	})
}
