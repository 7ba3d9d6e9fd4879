package kubectlplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/inject"
	"github.com/sidelane/sidelane/internal/redirect"
)

// fakeAgent serves a pod list and rules views, and checks the bearer token.
func fakeAgent(t *testing.T, node string, pods []agentapi.PodRecord, views map[string]agentapi.RulesView) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer good":
		case "Bearer forbidden":
			w.WriteHeader(403)
			json.NewEncoder(w).Encode(agentapi.Error{Error: `user "eve" may not list pods`})
			return
		default:
			w.WriteHeader(401)
			json.NewEncoder(w).Encode(agentapi.Error{Error: "token not authenticated"})
			return
		}
		if r.URL.Path == agentapi.PathPods {
			json.NewEncoder(w).Encode(agentapi.PodList{Node: node, Items: pods})
			return
		}
		v, ok := views[r.URL.Path]
		if !ok {
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(agentapi.Error{Error: "pod not in the record of node " + node})
			return
		}
		json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runPlugin(t *testing.T, cl Cluster, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Options{
		NewCluster: func(string, string) (Cluster, error) { return cl, nil },
		Stdin:      strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
	})
	return code, out.String(), errb.String()
}

var (
	settings = redirect.Defaults()
	applied  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	web      = agentapi.PodRecord{Namespace: "team", Name: "web", State: "captured", Backend: "nftables", Netns: "/var/run/netns/cni-1", LastApplied: applied, Settings: &settings}
	db       = agentapi.PodRecord{Namespace: "team", Name: "db", State: "captured", Backend: "iptables", LastApplied: applied}
	lost     = agentapi.PodRecord{Namespace: "team", Name: "lost", State: "missing", Reason: "injected pod without a report"}
	plain    = agentapi.PodRecord{Namespace: "team", Name: "plain", State: "skipped", Reason: "not injected"}
	broken   = agentapi.PodRecord{Namespace: "team", Name: "broken", State: "failed", Reason: "annotation redirect.sidelane.io/inbound-ports: invalid value \"x\""}
	inSync   = agentapi.RulesView{Pod: web, Settings: &settings, Backend: "nftables", Expected: []string{"ip prerouting: tcp jump inbound"}, Live: []string{"ip prerouting: tcp jump inbound"}, Diff: []string{}, InSync: true}
	drifted  = agentapi.RulesView{Pod: db, Backend: "iptables", Expected: []string{"-A PREROUTING -p tcp -j SIDELANE_INBOUND"}, Live: []string{},
		Diff: []string{"--A PREROUTING -p tcp -j SIDELANE_INBOUND"}}
	lostView = agentapi.RulesView{Pod: lost, Backend: "nftables", Expected: []string{"x"}, Live: []string{}, Diff: []string{"-x"}, LiveErr: "network namespace of the pod unknown"}
)

func TestRules(t *testing.T) {
	a := fakeAgent(t, "n1", nil, map[string]agentapi.RulesView{"/v1/pods/team/web/rules": inSync, "/v1/pods/team/db/rules": drifted})
	cl := &FakeCluster{NS: "team", PodNodes: map[string]string{"team/web": "n1", "team/db": "n1", "other/x": "n1"}, Agents: map[string]string{"n1": a.URL}, Token: "good"}

	code, out, errs := runPlugin(t, cl, "", "rules", "web")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"Pod: team/web", "Node: n1", "Backend: nftables", "In sync: yes", "Last applied: 2026-01-02T03:04:05Z",
		"Settings: inbound all ports → :15006 (except 15020,15021,15090); outbound all destinations → :15001; proxy uid/gid 1337/1337",
		"Expected rules (1):\n ip prerouting: tcp jump inbound", "Live rules (1):", "Difference: none"} {
		if !strings.Contains(squash(out), want) {
			t.Errorf("rules output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runPlugin(t, cl, "", "rules", "-n", "team", "db")
	if code != 0 || !strings.Contains(squash(out), "In sync: NO") || !strings.Contains(squash(out), "Difference (- expected but absent, + present but unexpected) (1):\n --A PREROUTING") {
		t.Errorf("drifted rules (exit %d):\n%s", code, out)
	}
	code, out, _ = runPlugin(t, cl, "", "rules", "db", "-n", "team", "-o", "json")
	var v agentapi.RulesView
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.InSync || v.Pod.Name != "db" {
		t.Errorf("json (exit %d, %v): %s", code, err, out)
	}
	for _, tc := range []struct {
		args     []string
		token    string
		code     int
		wantErrs string
	}{
		{[]string{"rules"}, "good", ExitUsage, "want exactly one pod name"},
		{[]string{"rules", "a", "b"}, "good", ExitUsage, "want exactly one pod name"},
		{[]string{"rules", "web", "-o", "yaml"}, "good", ExitUsage, `-o "yaml": want json`},
		{[]string{"rules", "web", "--bogus"}, "good", ExitUsage, "flag provided but not defined"},
		{[]string{"rules", "nope"}, "good", ExitError, `pods "nope" not found`},
		{[]string{"rules", "x", "-n", "other"}, "good", ExitError, "404 Not Found: pod not in the record of node n1"},
		{[]string{"rules", "web"}, "bad", ExitError, "401 Unauthorized: token not authenticated"},
		{[]string{"rules", "web"}, "forbidden", ExitError, "lacks the RBAC"},
		{[]string{"frobnicate"}, "good", ExitUsage, `unknown command "frobnicate"`},
	} {
		cl.Token = tc.token
		code, _, errs := runPlugin(t, cl, "", tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.wantErrs) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.wantErrs)
		}
	}
}

func TestPods(t *testing.T) {
	a1 := fakeAgent(t, "n1", []agentapi.PodRecord{web, plain}, nil)
	a2 := fakeAgent(t, "n2", []agentapi.PodRecord{broken}, nil)
	cl := &FakeCluster{Agents: map[string]string{"n1": a1.URL, "n2": a2.URL}, Token: "good"}
	code, out, errs := runPlugin(t, cl, "", "pods")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE") ||
		!strings.Contains(squash(lines[1]), "n1 team web captured nftables 2026-01-02T03:04:05Z -") ||
		!strings.Contains(squash(lines[2]), "plain skipped -") || !strings.HasPrefix(lines[3], "n2") || !strings.Contains(lines[3], `invalid value "x"`) {
		t.Errorf("pods table:\n%s", out)
	}
	code, out, _ = runPlugin(t, cl, "", "pods", "--node", "n2", "-o", "json")
	var got []NodePods
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 1 || got[0].Node != "n2" || got[0].Items[0].Name != "broken" {
		t.Errorf("pods json (exit %d, %v): %s", code, err, out)
	}
	if code, _, errs := runPlugin(t, &FakeCluster{Agents: map[string]string{}}, "", "check"); code != ExitError || !strings.Contains(errs, "no node agent pods") {
		t.Errorf("no agents: exit %d %s", code, errs)
	}
	code, out, _ = runPlugin(t, cl, "", "pods", "--node", "n3")
	if code != ExitError || !strings.Contains(squash(out), "n3 - - error") {
		t.Errorf("unknown node (exit %d):\n%s", code, out)
	}
}

func TestCheckExitCodes(t *testing.T) {
	views := map[string]agentapi.RulesView{"/v1/pods/team/web/rules": inSync, "/v1/pods/team/db/rules": drifted, "/v1/pods/team/lost/rules": lostView}
	for _, tc := range []struct {
		name     string
		nodes    map[string][]agentapi.PodRecord // nil list = unreachable agent
		injected []PodRef
		code     int
		want     []string
	}{
		{name: "all in sync", nodes: map[string][]agentapi.PodRecord{"n1": {web, plain}}, code: ExitOK,
			want: []string{"n1 team web captured ok", "all 1 captured pods on 1 nodes have their rules in place"}},
		{name: "no pods", nodes: map[string][]agentapi.PodRecord{"n1": {}}, code: ExitOK, want: []string{"all 0 captured pods"}},
		{name: "drifted", nodes: map[string][]agentapi.PodRecord{"n1": {web}, "n2": {db}}, code: ExitProblems,
			want: []string{"PROBLEM: live rules differ", "team/db on n2 (- expected but absent", " --A PREROUTING", "1 of 2 captured pods on 2 nodes have a problem"}},
		{name: "missing", nodes: map[string][]agentapi.PodRecord{"n1": {web, lost}}, code: ExitProblems,
			want: []string{"lost missing PROBLEM: network namespace of the pod unknown"}},
		{name: "failed is shown, not a problem", nodes: map[string][]agentapi.PodRecord{"n1": {web, broken}}, code: ExitOK,
			want: []string{"broken failed not captured, the plugin failed it: annotation redirect.sidelane.io/inbound-ports", "all 1 captured pods on 1 nodes"}},
		{name: "node without agent", nodes: map[string][]agentapi.PodRecord{"n1": {web}}, code: ExitProblems,
			injected: []PodRef{{"team", "web", "n1"}, {"team", "orphan", "n9"}},
			want:     []string{"n9 team orphan unknown PROBLEM: injected pod on a node without a Sidelane node agent", "1 of 2 captured pods"}},
		{name: "agent unreachable", nodes: map[string][]agentapi.PodRecord{"n1": {web}, "n2": nil}, code: ExitError,
			want: []string{"node n2: could not ask its agent: no running node agent pod on node n2", "1 captured pods ok, but 1 of 2 nodes could not be checked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &FakeCluster{Agents: map[string]string{}, Token: "good", Pods: tc.injected}
			for n, pods := range tc.nodes {
				cl.Agents[n] = ""
				if pods != nil {
					cl.Agents[n] = fakeAgent(t, n, pods, views).URL
				}
			}
			code, out, errs := runPlugin(t, cl, "", "check")
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s%s", code, tc.code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(squash(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			code, out, _ = runPlugin(t, cl, "", "check", "-o", "json")
			var res CheckResult
			if err := json.Unmarshal([]byte(out), &res); err != nil || code != tc.code || res.OK != (tc.code == ExitOK) {
				t.Errorf("json (exit %d, %v): %s", code, err, out)
			}
		})
	}
}

func TestInject(t *testing.T) {
	const pod = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team
spec:
  containers:
  - name: app
    image: nginx
`
	f := filepath.Join(t.TempDir(), "pod.yaml")
	os.WriteFile(f, []byte(pod), 0o644)
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		want  []string // in stdout (or stderr when code != 0)
	}{
		{name: "file", args: []string{"inject", "-f", f}, code: 0,
			want: []string{"name: sidelane-proxy", "sidelane.io/status", "image: " + inject.DefaultImage, "name: app"}},
		{name: "stdin and image", args: []string{"inject", "-f", "-", "--image", "registry.example/proxy:1"}, stdin: pod, code: 0,
			want: []string{"image: registry.example/proxy:1", "redirect.sidelane.io/inbound-ports"}},
		{name: "malformed", args: []string{"inject", "-f", "-"}, stdin: "kind: Pod\nspec: [", code: ExitError, want: []string{"inject -: document 1"}},
		{name: "no -f", args: []string{"inject"}, code: ExitUsage, want: []string{"want -f FILE"}},
		{name: "missing file", args: []string{"inject", "-f", filepath.Join(t.TempDir(), "none.yaml")}, code: ExitError, want: []string{"none.yaml"}},
		{name: "bad template", args: []string{"inject", "-f", f, "--template", filepath.Join(t.TempDir(), "tpl.yaml")}, code: ExitError, want: []string{"template"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runPlugin(t, nil, tc.stdin, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tc.code, out, errs)
			}
			got := out
			if code != 0 {
				got = errs
				if out != "" {
					t.Errorf("partial output on error: %q", out)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

// squash collapses runs of spaces (tabwriter padding) to one.
func squash(s string) string { return spaces.ReplaceAllString(s, " ") }

var spaces = regexp.MustCompile(` {2,}`)
