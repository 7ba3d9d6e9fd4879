package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, kubeconfig, wantHost, wantErr string
	}{
		{name: "kubeconfig", kubeconfig: good, wantHost: "https://10.0.0.1:6443"},
		{name: "missing kubeconfig", kubeconfig: filepath.Join(dir, "nope"), wantErr: filepath.Join(dir, "nope")},
		{name: "not in a cluster", kubeconfig: "", wantErr: "outside a cluster, give --kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kubeconfig == "" {
				t.Setenv("KUBERNETES_SERVICE_HOST", "")
				t.Setenv("KUBERNETES_SERVICE_PORT", "")
			}
			cfg, err := Config(tc.kubeconfig)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.Host != tc.wantHost {
				t.Fatalf("cfg %+v, %v; want host %s", cfg, err, tc.wantHost)
			}
			cs, err := New(tc.kubeconfig, "sidelane-test")
			if err != nil || cs == nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}
