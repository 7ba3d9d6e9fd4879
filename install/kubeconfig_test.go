package install

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// writeCA writes the PEM of a throwaway test certificate and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	return writePEM(t, srv)
}

func writePEM(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeToken writes a token file the way the kubelet projects one (in a directory of its own)
// and returns its path.
func writeToken(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// apiServer is a TLS server that answers /version only for the one bearer token it accepts.
type apiServer struct {
	*httptest.Server
	mu     sync.Mutex
	token  string
	denied atomic.Int64
}

func newAPIServer(t *testing.T, token string) *apiServer {
	a := &apiServer{token: token}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		ok := r.Header.Get("Authorization") == "Bearer "+a.token
		a.mu.Unlock()
		if !ok {
			a.denied.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"major":"1","minor":"33","gitVersion":"v1.33.13"}`)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *apiServer) accept(tok string) {
	a.mu.Lock()
	a.token = tok
	a.mu.Unlock()
}

// clientFrom loads the kubeconfig the way the plugin does (client-go, tokenFile).
func clientFrom(t *testing.T, path string) *kubernetes.Clientset {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("loading kubeconfig %s: %v", path, err)
	}
	rc.Timeout = 10 * time.Second
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
}

// testWatcher is a running Watcher that stops at the end of the test (or at stop).
type testWatcher struct {
	*Watcher
	stop func(t *testing.T)
}

func runWatcher(t *testing.T, cfg Config) testWatcher {
	t.Helper()
	w, err := NewWatcher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func(t *testing.T) {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(func() { stop(t) })
	return testWatcher{Watcher: w, stop: stop}
}

func TestKubeconfigTokenFileRotation(t *testing.T) {
	srv := newAPIServer(t, "token-one")
	e := newEnv(t)
	e.cfg.ResyncInterval = time.Hour // only file events may drive the copy
	copyDir(t, filepath.Join("testdata", "calico", "in"), e.conf)
	tokenFile := writeToken(t, "token-one\n")
	e.cfg.Kubeconfig = &KubeconfigSource{Server: srv.URL, CAFile: writePEM(t, srv.Server), TokenFile: tokenFile}
	w := runWatcher(t, e.cfg)
	eventually(t, "watcher ready", 30*time.Second, w.Ready)

	kc := filepath.Join(e.conf, "sidelane-kubeconfig")
	for _, p := range []string{kc, filepath.Join(e.conf, DefaultTokenFile)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	if _, err := clientFrom(t, kc).Discovery().ServerVersion(); err != nil {
		t.Fatalf("request with the first token: %v", err)
	}

	// Rotation, the way the kubelet does it: new content replaces the file atomically; the API
	// server accepts only the new token from now on.
	tmp := tokenFile + ".new"
	os.WriteFile(tmp, []byte("token-two\n"), 0o600)
	if err := os.Rename(tmp, tokenFile); err != nil {
		t.Fatal(err)
	}
	srv.accept("token-two")
	// A new plugin process (what the runtime execs per pod) succeeds once the copy is made.
	eventually(t, "fresh client works after rotation", 30*time.Second, func() error {
		_, err := clientFrom(t, kc).Discovery().ServerVersion()
		return err
	})
	// (A long-lived client-go client re-reads tokenFile about every 50s; the kubelet rotates
	// at 80% of the token's lifetime, so the old token stays valid meanwhile. The plugin is a
	// new process for every pod and always reads the current copy.)
	eventually(t, "token refresh counted", 30*time.Second, func() error {
		if s := w.Stats(); s.TokenRefreshes < 2 || s.TokenErrors != 0 {
			return fmt.Errorf("token stats %+v, want >= 2 refreshes and no errors", s)
		}
		return nil
	})
	b, _ := os.ReadFile(kc)
	if strings.Contains(string(b), "token-two") || !strings.Contains(string(b), "tokenFile") {
		t.Errorf("kubeconfig must reference the token file, not embed the token:\n%s", b)
	}
}

func TestKubeconfigMintedTokenRefresh(t *testing.T) {
	srv := newAPIServer(t, "")
	e := newEnv(t)
	copyDir(t, filepath.Join("testdata", "calico", "in"), e.conf)
	var minted atomic.Int64
	mint := func(ctx context.Context) (string, time.Time, error) {
		n := minted.Add(1)
		tok := fmt.Sprintf("minted-%d", n)
		srv.accept(tok) // the API server only knows the newest token
		return tok, time.Now().Add(2 * time.Second), nil
	}
	e.cfg.Kubeconfig = &KubeconfigSource{Server: srv.URL, CAFile: writePEM(t, srv.Server), MintToken: mint}
	w := runWatcher(t, e.cfg)
	eventually(t, "watcher ready", 30*time.Second, w.Ready)
	kc := filepath.Join(e.conf, "sidelane-kubeconfig")
	// Lifetime 2s: refreshed at ~1.6s, so several tokens are minted; each time the plugin's
	// next request uses the newest one.
	eventually(t, "three tokens minted", 60*time.Second, func() error {
		if n := minted.Load(); n < 3 {
			return fmt.Errorf("%d minted", n)
		}
		return nil
	})
	eventually(t, "request with the newest minted token", 30*time.Second, func() error {
		_, err := clientFrom(t, kc).Discovery().ServerVersion()
		return err
	})
}

func TestKubeconfigServerFromEnv(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	k := &kubeconfigWriter{src: KubeconfigSource{}}
	s, err := k.server()
	if err != nil || s != "https://[fd00::1]:443" {
		t.Fatalf("server = %q, %v", s, err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := k.server(); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Fatalf("want an error naming KUBERNETES_SERVICE_HOST, got %v", err)
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
