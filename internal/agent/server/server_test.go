package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sidelane/sidelane/internal/agent/auth"
	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/metrics"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/agentapi/unixhttp"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// fakeCluster answers TokenReviews (tokens "alice" and "bob" are valid) and
// SubjectAccessReviews (alice may get pods in ns "team" and list pods; bob may nothing).
func fakeCluster(reviews *atomic.Int32) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case "alice", "bob":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: tr.Spec.Token}}
		default:
			tr.Status = authnv1.TokenReviewStatus{Authenticated: false, Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		nra := sar.Spec.NonResourceAttributes
		allowed := sar.Spec.User == "alice" && ((ra != nil && ra.Resource == "pods" && ((ra.Verb == "get" && ra.Namespace == "team") || (ra.Verb == "list" && ra.Namespace == ""))) ||
			(nra != nil && nra.Path == "/metrics" && nra.Verb == "get"))
		sar.Status = authzv1.SubjectAccessReviewStatus{Allowed: allowed}
		if !allowed {
			sar.Status.Reason = "no RBAC rule"
		}
		return true, sar, nil
	})
	return cs
}

// newServer has two captured pods: team/web (dual stack, rules in place) and other/db (its
// live rules redirect inbound to 9999 instead of 15006), on a capture.Fake.
func newServer(t *testing.T) (*Server, *capture.Fake) {
	t.Helper()
	st, err := record.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	webNS, dbNS := filepath.Join(dir, "web"), filepath.Join(dir, "db")
	for _, p := range []string{webNS, dbNS} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := redirect.Defaults()
	for _, rep := range []agentapi.Report{
		{Event: "ADD", Namespace: "team", Name: "web", UID: "u1", ContainerID: "c1", Netns: webNS, State: "captured", Backend: "nftables", Settings: &s, PodIPs: []string{"10.1.0.5", "fd00::5"}},
		{Event: "ADD", Namespace: "other", Name: "db", UID: "u2", ContainerID: "c2", Netns: dbNS, State: "captured", Backend: "nftables", Settings: &s},
	} {
		if err := st.ApplyReport(rep); err != nil {
			t.Fatal(err)
		}
	}
	fake := capture.NewFake()
	other := s
	other.InboundCapturePort = 9999
	fake.SetLive(webNS, nftLines(t, s, rules.IPv4, rules.IPv6))
	fake.SetLive(dbNS, nftLines(t, other, rules.IPv4))
	m := metrics.New(func() map[string]int { return map[string]int{"captured": 2} }, nil)
	return &Server{Node: "node-1", Store: st, Engine: &inspect.Capture{Fake: fake}, Metrics: m, Ready: func() error { return nil }}, fake
}

// nftLines is the real nftables rendering of settings s in families fams.
func nftLines(t *testing.T, s redirect.Settings, fams ...rules.Family) []string {
	t.Helper()
	b, err := capture.NewFake().New("nftables")
	if err != nil {
		t.Fatal(err)
	}
	return b.Expected(rules.Build(s, fams...))
}

func do(t *testing.T, h http.Handler, method, path, token string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestTCPAuth(t *testing.T) {
	srv, _ := newServer(t)
	var reviews atomic.Int32
	h := srv.TCPHandler(auth.New(fakeCluster(&reviews), time.Minute))
	for _, tc := range []struct {
		name, path, token string
		want              int
		wantBody          string
	}{
		{"no token", "/v1/pods", "", 401, "bearer token is required"},
		{"bad token", "/v1/pods", "mallory", 401, "invalid bearer token"},
		{"bad token rules", "/v1/pods/team/web/rules", "mallory", 401, "not authenticated"},
		{"unauthorized list", "/v1/pods", "bob", 403, `bob\" may not list pods`},
		{"unauthorized get", "/v1/pods/team/web/rules", "bob", 403, "may not get pods in namespace team named web"},
		{"other namespace", "/v1/pods/other/db/rules", "alice", 403, "may not get pods in namespace other"},
		{"authorized list", "/v1/pods", "alice", 200, `"node": "node-1"`},
		{"authorized rules", "/v1/pods/team/web/rules", "alice", 200, `"inSync": true`},
		{"metrics unauthorized", "/metrics", "bob", 403, "may not get /metrics"},
		{"metrics authorized", "/metrics", "alice", 200, "sidelane_agent_pods"},
		{"healthz needs no token", "/healthz", "", 200, "ok"},
		{"readyz needs no token", "/readyz", "", 200, "ok"},
		{"reports not on tcp", "/v1/reports", "alice", 404, "no route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.path == "/v1/reports" {
				method = http.MethodPost
			}
			rec := do(t, h, method, tc.path, tc.token, nil)
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("%s %s as %q: %d %s, want %d containing %q", method, tc.path, tc.token, rec.Code, rec.Body, tc.want, tc.wantBody)
			}
		})
	}
	// Answers are cached: asking again costs no review.
	before := reviews.Load()
	for range 5 {
		if rec := do(t, h, "GET", "/v1/pods", "alice", nil); rec.Code != 200 {
			t.Fatalf("cached answer: %d", rec.Code)
		}
		if rec := do(t, h, "GET", "/v1/pods", "bob", nil); rec.Code != 403 {
			t.Fatalf("cached refusal: %d", rec.Code)
		}
	}
	if after := reviews.Load(); after != before {
		t.Errorf("%d token reviews for cached answers, want 0", after-before)
	}
}

func TestUnixRoutes(t *testing.T) {
	srv, _ := newServer(t)
	var got []agentapi.Report
	srv.OnReport = func(r agentapi.Report) { got = append(got, r) }
	h := srv.UnixHandler()

	// Reports are recorded.
	body, _ := json.Marshal(agentapi.Report{Event: "ADD", Namespace: "team", Name: "new", ContainerID: "c9", Netns: "/ns/new", State: "failed",
		Reason: "annotation redirect.sidelane.io/inbound-ports: invalid value", Duration: 3 * time.Millisecond})
	if rec := do(t, h, "POST", "/v1/reports", "", body); rec.Code != http.StatusNoContent {
		t.Fatalf("report: %d %s", rec.Code, rec.Body)
	}
	if len(got) != 1 || got[0].Name != "new" {
		t.Errorf("OnReport saw %+v", got)
	}
	for _, bad := range []struct{ body, want string }{{"{", "invalid JSON"}, {`{"event":"ADD","namespace":"a","name":"b","state":"nope"}`, `unknown state \"nope\"`},
		{`{"event":"ADD","namespace":"a","name":"b","state":"skipped"}garbage`, "data after the JSON object"},
		{`{"event":"ADD","namespace":"a","name":"b","state":"skipped"} {}`, "data after the JSON object"},
		{`{"event":"ADD","namespace":"a","name":"b/c","state":"skipped"}`, "not a pod name"}} {
		if rec := do(t, h, "POST", "/v1/reports", "", []byte(bad.body)); rec.Code != 400 || !strings.Contains(rec.Body.String(), bad.want) {
			t.Errorf("bad report %s: %d %s", bad.body, rec.Code, rec.Body)
		}
	}

	// The pod list has every record.
	rec := do(t, h, "GET", "/v1/pods", "", nil)
	var list agentapi.PodList
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || rec.Code != 200 {
		t.Fatalf("pods: %d %s %v", rec.Code, rec.Body, err)
	}
	if list.Node != "node-1" || len(list.Items) != 3 || list.Items[1].Name != "new" || list.Items[1].State != "failed" {
		t.Errorf("pod list %+v", list)
	}

	// Rules: in sync (both families, because the pod has an IPv6 address), drifted, unknown.
	defaults, other := redirect.Defaults(), redirect.Defaults()
	other.InboundCapturePort = 9999
	dual, v4, v4Other := nftLines(t, defaults, rules.IPv4, rules.IPv6), nftLines(t, defaults, rules.IPv4), nftLines(t, other, rules.IPv4)
	var dbDiff []string // the lines that name the port: 9999 live, 15006 expected
	for _, l := range v4Other {
		if !slices.Contains(v4, l) {
			dbDiff = append(dbDiff, "+"+l)
		}
	}
	for _, l := range v4 {
		if !slices.Contains(v4Other, l) {
			dbDiff = append(dbDiff, "-"+l)
		}
	}
	if len(dbDiff) != 2 || !strings.Contains(dbDiff[0], ":9999") || !strings.Contains(dbDiff[1], ":15006") {
		t.Fatalf("the renderings of port 15006 and 9999 differ in %q, want one line each", dbDiff)
	}
	for _, tc := range []struct {
		path     string
		code     int
		inSync   bool
		diff     []string
		liveErr  string
		expected int
	}{
		{path: "/v1/pods/team/web/rules", code: 200, inSync: true, expected: len(dual)},
		{path: "/v1/pods/other/db/rules", code: 200, diff: dbDiff, expected: len(v4)},
		{path: "/v1/pods/team/new/rules", code: 200, liveErr: "no redirect settings known"},
		{path: "/v1/pods/team/none/rules", code: 404},
	} {
		rec := do(t, h, "GET", tc.path, "", nil)
		if rec.Code != tc.code {
			t.Fatalf("%s: %d %s", tc.path, rec.Code, rec.Body)
		}
		if tc.code != 200 {
			continue
		}
		var v agentapi.RulesView
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		if v.InSync != tc.inSync || len(v.Expected) != tc.expected || strings.Join(v.Diff, "|") != strings.Join(tc.diff, "|") ||
			!strings.Contains(v.LiveErr, tc.liveErr) || v.Backend != "nftables" {
			t.Errorf("%s: %+v", tc.path, v)
		}
	}

	// Metrics count the requests and the reported ADD latency.
	rec = do(t, h, "GET", "/metrics", "", nil)
	for _, want := range []string{`sidelane_agent_api_requests_total{code="204",listener="unix",route="reports"} 1`,
		"sidelane_agent_plugin_add_duration_seconds_count 1", `sidelane_agent_plugin_reports_total{event="ADD",state="failed"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestReadyz(t *testing.T) {
	srv, _ := newServer(t)
	srv.Ready = func() error { return errString("informer not synced") }
	rec := do(t, srv.UnixHandler(), "GET", "/readyz", "", nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "informer not synced") {
		t.Fatalf("readyz: %d %s", rec.Code, rec.Body)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "cni.sock")
	// A stale socket of an earlier agent is replaced.
	old, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	l, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, sock: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestSelfSignedTLS(t *testing.T) {
	cfg, err := SelfSignedTLS([]string{"127.0.0.1", "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := newServer(t)
	var reviews atomic.Int32
	go http.Serve(tls.NewListener(l, cfg), srv.TCPHandler(auth.New(fakeCluster(&reviews), time.Minute)))
	defer l.Close()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get("https://" + l.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("https healthz: %v %v", resp, err)
	}
	if got := resp.TLS.PeerCertificates[0]; len(got.IPAddresses) != 1 || got.DNSNames[0] != "node-1" {
		t.Errorf("certificate for %v %v", got.IPAddresses, got.DNSNames)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", "https://"+l.Addr().String()+"/v1/pods", nil)
	req.Header.Set("Authorization", "Bearer alice")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("https pods: %v %v", resp, err)
	}
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + l.Addr().String() + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP answered on the TLS listener")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:15080": true, "[::1]:15080": true, "localhost:1": true,
		":15080": false, "0.0.0.0:15080": false, "192.0.2.7:15080": false, "bad": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}

// TestServeUnixSniffs: the plugin's framed protocol and the HTTP API share the unix socket; each
// connection is routed by its first byte.
func TestServeUnixSniffs(t *testing.T) {
	srv, _ := newServer(t)
	srv.Decider = func(_ context.Context, req cnirpc.DecideRequest) (cnirpc.Decision, error) {
		return cnirpc.Decision{Capture: false, Reason: "asked about " + req.Name}, nil
	}
	var logs bytes.Buffer
	srv.Log = slog.New(slog.NewTextHandler(&logs, nil))
	dir, err := os.MkdirTemp("", "slsrv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "cni.sock")
	l, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeUnix(ctx, l, srv.UnixHandler()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	}()

	warn := []string{"field \"kubeconfig\" is ignored"}
	for range 2 {
		resp, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpDecide, Decide: &cnirpc.DecideRequest{Namespace: "team", Name: "web"}, Warnings: warn}, 5*time.Second)
		if err != nil || resp.Decision == nil || resp.Decision.Reason != "asked about web" {
			t.Fatalf("decide over the socket: %+v %v", resp, err)
		}
	}
	if n := strings.Count(logs.String(), "kubeconfig"); n != 1 {
		t.Errorf("warning logged %d times, want once:\n%s", n, logs.String())
	}
	if _, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpReport, Report: &agentapi.Report{Event: "ADD", Namespace: "team", Name: "rpc", State: "skipped"}}, 5*time.Second); err != nil {
		t.Fatalf("report over the socket: %v", err)
	}
	if _, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpReport, Report: &agentapi.Report{Event: "ADD", Namespace: "team", Name: "a/b", State: "skipped"}}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "not a pod name") {
		t.Errorf("bad report over the socket: %v", err)
	}
	if _, ok := srv.Store.Get("team", "rpc"); !ok {
		t.Error("framed report not recorded")
	}
	resp, err := unixhttp.Client(sock, 5*time.Second).Get("http://agent/v1/pods")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP on the same socket: %v %v", resp, err)
	}
	resp.Body.Close()
}
