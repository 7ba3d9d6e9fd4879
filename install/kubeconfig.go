package install

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/sidelane/sidelane/internal/atomicfile"
)

// kubeconfigWriter writes the plugin's kubeconfig and keeps its token copy fresh.
type kubeconfigWriter struct {
	src KubeconfigSource
	// now is replaceable in tests.
	now func() time.Time
}

func newKubeconfigWriter(cfg Config) *kubeconfigWriter {
	return &kubeconfigWriter{src: *cfg.Kubeconfig, now: time.Now}
}

// server returns the API server URL of the kubeconfig.
func (k *kubeconfigWriter) server() (string, error) {
	if k.src.Server != "" {
		return k.src.Server, nil
	}
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("kubeconfig: no API server URL configured and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set")
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// render builds the kubeconfig: the CA embedded, the token read from HostTokenPath (so that a
// rotated token is used without rewriting the kubeconfig).
func (k *kubeconfigWriter) render() ([]byte, error) {
	server, err := k.server()
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(k.src.CAFile)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: reading CA file: %w", err)
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("kubeconfig: CA file %s holds no PEM certificate", k.src.CAFile)
	}
	c := clientcmdapi.NewConfig()
	c.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	c.AuthInfos["sidelane-cni"] = &clientcmdapi.AuthInfo{TokenFile: k.src.HostTokenPath}
	c.Contexts["sidelane-cni"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "sidelane-cni"}
	c.CurrentContext = "sidelane-cni"
	b, err := clientcmd.Write(*c)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: encoding: %w", err)
	}
	return b, nil
}

// writeKubeconfig writes the kubeconfig (0600, atomically) unless it already has that content.
func (k *kubeconfigWriter) writeKubeconfig() error {
	b, err := k.render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(k.src.Path), 0o755); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	return writeIfChanged(k.src.Path, b, 0o600)
}

// refresh copies or mints the token, writes it and the kubeconfig, and returns when the token
// must be refreshed next (zero for source A, which is driven by file events and resyncs).
func (k *kubeconfigWriter) refresh(ctx context.Context) (time.Time, error) {
	next, _, err := k.refreshChanged(ctx)
	return next, err
}

// refreshChanged is refresh that also reports whether the token copy changed.
func (k *kubeconfigWriter) refreshChanged(ctx context.Context) (time.Time, bool, error) {
	var token []byte
	var next time.Time
	if k.src.TokenFile != "" {
		b, err := os.ReadFile(k.src.TokenFile)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("kubeconfig: reading token file: %w", err)
		}
		token = bytes.TrimSpace(b)
	} else {
		issued := k.now()
		t, expiry, err := k.src.MintToken(ctx)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("kubeconfig: requesting a token for the plugin: %w", err)
		}
		token = []byte(strings.TrimSpace(t))
		life := expiry.Sub(issued)
		if life <= 0 {
			return time.Time{}, false, fmt.Errorf("kubeconfig: minted token already expired at %s", expiry.Format(time.RFC3339))
		}
		next = issued.Add(life * 8 / 10)
	}
	if len(token) == 0 {
		return time.Time{}, false, fmt.Errorf("kubeconfig: the token is empty")
	}
	if err := os.MkdirAll(filepath.Dir(k.src.HostTokenPath), 0o755); err != nil {
		return time.Time{}, false, fmt.Errorf("kubeconfig: %w", err)
	}
	// Token first: the kubeconfig must never point at a missing token file.
	cur, _ := os.ReadFile(k.src.HostTokenPath)
	changed := !bytes.Equal(cur, token)
	if err := writeIfChanged(k.src.HostTokenPath, token, 0o600); err != nil {
		return time.Time{}, false, err
	}
	if err := k.writeKubeconfig(); err != nil {
		return time.Time{}, false, err
	}
	return next, changed, nil
}

// writeIfChanged writes data atomically unless path already holds exactly data with mode.
func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return nil
		}
	}
	return atomicfile.Write(path, data, mode)
}
