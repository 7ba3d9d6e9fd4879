package podinfo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"app","uid":"u-1",
 "labels":{"app":"web"},"annotations":{"sidelane.io/status":"{}"}},
 "spec":{"initContainers":[{"name":"setup","image":"x"},{"name":"sidelane-proxy","image":"p","restartPolicy":"Always"}],
  "containers":[{"name":"app","image":"a"}]},
 "status":{"podIPs":[{"ip":"10.0.0.7"},{"ip":"fd00::7"}]}}`

func TestGet(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer secret-token" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/v1/namespaces/app/pods/web":
			if n == 1 { // the first attempt meets a transient failure
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":503,"reason":"ServiceUnavailable"}`)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, podJSON)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound","message":"pods not found"}`)
		}
	}))
	defer srv.Close()
	c, err := NewClient(writeKubeconfig(t, srv.URL), Options{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.Get(context.Background(), "app", "web")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "web" || pod.Namespace != "app" || pod.UID != "u-1" || pod.Labels["app"] != "web" ||
		pod.Annotations["sidelane.io/status"] != "{}" ||
		!slices.Equal(pod.Containers, []string{"app"}) || !slices.Equal(pod.NativeSidecars, []string{"sidelane-proxy"}) ||
		!slices.Equal(pod.PodIPs, []string{"10.0.0.7", "fd00::7"}) {
		t.Errorf("pod = %+v", pod)
	}
	if calls.Load() != 2 {
		t.Errorf("%d calls, want 2 (one retry)", calls.Load())
	}

	calls.Store(10)
	_, err = c.Get(context.Background(), "app", "gone")
	if err == nil || !strings.Contains(err.Error(), "app/gone not found") {
		t.Errorf("missing pod: %v", err)
	}
	if calls.Load() != 11 {
		t.Errorf("not found was retried: %d calls", calls.Load()-10)
	}
}

func TestGetUnreachable(t *testing.T) {
	// A listener closed at once: connection refused on a loopback port we owned.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := NewClient(writeKubeconfig(t, "https://"+addr), Options{Attempts: 3, Backoff: time.Millisecond, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(context.Background(), "app", "web")
	if err == nil || !strings.Contains(err.Error(), "unreachable after 3 attempts") || !strings.Contains(err.Error(), addr) {
		t.Errorf("err = %v", err)
	}
}

func TestKubeconfigErrors(t *testing.T) {
	if _, err := NewClient("/nonexistent/kc", Options{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/kc") {
		t.Errorf("NewClient: %v", err)
	}
	if err := CheckKubeconfig("/nonexistent/kc"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kc") {
		t.Errorf("CheckKubeconfig: %v", err)
	}
	if err := CheckKubeconfig(writeKubeconfig(t, "https://127.0.0.1:1")); err != nil {
		t.Errorf("CheckKubeconfig of a good file: %v", err)
	}
}

func TestDecodePod(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Pod
	}{
		{name: "plain init container is no sidecar",
			in:   `{"spec":{"initContainers":[{"name":"sidelane-proxy"},{"name":"native","restartPolicy":"Always"}]}}`,
			want: Pod{NativeSidecars: []string{"native"}}},
		{name: "fields not read are skipped",
			in:   `{"metadata":{"name":"a","namespace":"b","uid":"u","managedFields":[{"x":1}]},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}]}],"volumes":[{}]},"status":{"phase":"Pending","podIPs":[{"ip":"10.0.0.1"}]}}`,
			want: Pod{Name: "a", Namespace: "b", UID: "u", Containers: []string{"c"}, PodIPs: []string{"10.0.0.1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodePod([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decodePod = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestGetFailures: each answer gives its error, retried only when it may pass.
func TestGetFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pod      string // the name asked for
		status   int
		body     string
		wantErr  string
		wantCall int32
	}{
		{name: "forbidden", pod: "web", status: 403, body: `{"kind":"Status","reason":"Forbidden","message":"pods \"web\" is forbidden"}`,
			wantErr: "not allowed (check the plugin's kubeconfig and RBAC): HTTP 403 Forbidden (Forbidden): pods \"web\" is forbidden", wantCall: 1},
		{name: "unauthorized", pod: "web", status: 401, body: `Unauthorized`, wantErr: "not allowed", wantCall: 1},
		{name: "too many requests", pod: "web", status: 429, body: `{"kind":"Status","reason":"TooManyRequests"}`,
			wantErr: "unreachable after 3 attempts: HTTP 429 Too Many Requests (TooManyRequests)", wantCall: 3},
		{name: "server error", pod: "web", status: 500, body: `boom`, wantErr: "HTTP 500 Internal Server Error: boom", wantCall: 3},
		{name: "garbage pod", pod: "web", status: 200, body: `{"metadata":`, wantErr: "decode the pod", wantCall: 1},
		{name: "path in the name", pod: "../../secrets", wantErr: `"../../secrets" is not a namespace or pod name`, wantCall: 0},
		{name: "empty name", pod: "", wantErr: `"" is not a namespace or pod name`, wantCall: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			c, err := NewClient(writeKubeconfig(t, srv.URL), Options{Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Get(context.Background(), "app", tc.pod)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if calls.Load() != tc.wantCall {
				t.Errorf("%d calls, want %d", calls.Load(), tc.wantCall)
			}
		})
	}
}

// TestGetServerPathPrefix: a kubeconfig server URL with a path (an API server behind a proxy)
// keeps its prefix.
func TestGetServerPathPrefix(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/k8s/api/v1/namespaces/app/pods/web" || r.Header.Get("Accept") != "application/json" {
			http.Error(w, "wrong request "+r.URL.Path, http.StatusNotFound)
			return
		}
		fmt.Fprint(w, podJSON)
	}))
	defer srv.Close()
	c, err := NewClient(writeKubeconfig(t, srv.URL+"/k8s"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.Get(context.Background(), "app", "web"); err != nil || p.UID != "u-1" {
		t.Errorf("Get = %+v, %v", p, err)
	}
}
