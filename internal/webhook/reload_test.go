package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/inject"
)

// configMapDir writes files the way the kubelet updates a ConfigMap or Secret volume: the
// data in a timestamped directory, ..data a symlink to it, each file a symlink through
// ..data; an update writes a new directory and renames a new ..data symlink over the old.
type configMapDir struct {
	dir string
	gen atomic.Int64
}

func newConfigMapDir(t *testing.T, files map[string]string) *configMapDir {
	t.Helper()
	c := &configMapDir{dir: t.TempDir()}
	c.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(c.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *configMapDir) path(name string) string { return filepath.Join(c.dir, name) }

func (c *configMapDir) update(t *testing.T, files map[string]string) {
	t.Helper()
	gen := fmt.Sprintf("..%d", c.gen.Add(1))
	if err := os.Mkdir(filepath.Join(c.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, gen, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(c.dir, old))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTemplateReload(t *testing.T) {
	cm := newConfigMapDir(t, map[string]string{"template.yaml": "image: r.test/proxy:v1\n"})
	base := inject.DefaultTemplate()
	s, err := NewTemplateStore(cm.path("template.yaml"), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Get().Image; got != "r.test/proxy:v1" {
		t.Fatalf("image %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Watch(ctx); err != nil {
		t.Fatal(err)
	}

	cm.update(t, map[string]string{"template.yaml": "image: r.test/proxy:v2\nnativeSidecar: false\n"})
	waitFor(t, "the new template", func() bool { return s.Get().Image == "r.test/proxy:v2" })
	if s.Get().NativeSidecar {
		t.Error("nativeSidecar not reloaded")
	}

	// A bad file keeps the previous template.
	failures := s.Failures.Load()
	cm.update(t, map[string]string{"template.yaml": "image: r.test/proxy:v3\nlogLevel: shouting\n"})
	waitFor(t, "the bad template to be rejected", func() bool { return s.Failures.Load() > failures })
	if got := s.Get(); got.Image != "r.test/proxy:v2" || got.LogLevel != base.LogLevel {
		t.Errorf("bad template replaced the good one: %+v", got)
	}

	cm.update(t, map[string]string{"template.yaml": "image: r.test/proxy:v4\n"})
	waitFor(t, "recovery after a bad template", func() bool { return s.Get().Image == "r.test/proxy:v4" })
	if !s.Get().NativeSidecar {
		t.Error("fields absent from the file must come from the base, not from the previous file")
	}
}

func TestTemplateStoreBadInitialFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "template.yaml")
	if err := os.WriteFile(p, []byte("imagePullPolicy: Sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewTemplateStore(p, inject.DefaultTemplate(), nil); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("error %v, want one naming %s", err, p)
	}
	if _, err := NewTemplateStore(filepath.Join(dir, "missing.yaml"), inject.DefaultTemplate(), nil); err == nil {
		t.Error("missing template file accepted")
	}
}

func pemPair(t *testing.T, s *SelfSigned) (certPEM, keyPEM string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(s.Cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Certificate[0]})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// servedSerial connects to addr and returns the serial of the certificate served.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test compares serials itself
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestCertificateReload(t *testing.T) {
	a, err := NewSelfSigned("sidelane-injector", "sidelane-system", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSelfSigned("sidelane-injector", "sidelane-system", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certA, keyA := pemPair(t, a)
	certB, keyB := pemPair(t, b)
	cm := newConfigMapDir(t, map[string]string{"tls.crt": certA, "tls.key": keyA})

	srv, err := New(Options{
		CertFile: cm.path("tls.crt"), KeyFile: cm.path("tls.key"),
		Template: inject.DefaultTemplate(), Exclude: contract.DefaultExcludeNamespaces,
		Namespaces: meshNamespaces,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	if got, want := servedSerial(t, addr), a.Cert.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serving serial %s, want %s", got, want)
	}
	// Rotation: the new pair is served without a restart.
	cm.update(t, map[string]string{"tls.crt": certB, "tls.key": keyB})
	want := b.Cert.Leaf.SerialNumber.String()
	waitFor(t, "the rotated certificate", func() bool { return servedSerial(t, addr) == want })

	// A mismatched pair (certificate rotated before its key) keeps the last good one.
	cm.update(t, map[string]string{"tls.crt": certA, "tls.key": keyB})
	if err := srv.certs.Reload(); err == nil {
		t.Error("mismatched pair loaded")
	}
	if got := servedSerial(t, addr); got != want {
		t.Errorf("after a bad rotation the serial is %s, want the previous %s", got, want)
	}
}

// serve runs srv on loopback until the test ends and returns the webhook address.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, mln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	metricsAddrs.Store(srv, mln.Addr().String())
	return ln.Addr().String()
}
