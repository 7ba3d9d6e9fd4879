package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/podinfo"
	"github.com/sidelane/sidelane/internal/rules"
)

// fakeBackend keeps "live" rules per netns path in memory.
type fakeBackend struct {
	name  string
	world *fakeWorld
}

type fakeWorld struct {
	mu      sync.Mutex
	live    map[string][]string // netns → rules
	current string              // netns entered by InNetns
	applies int
	failApp error
}

var _ capture.Backend = (*fakeBackend)(nil)

func (b *fakeBackend) Name() string { return b.name }
func (b *fakeBackend) Expected(rs rules.Ruleset) []string {
	var out []string
	for _, f := range rs.Families {
		out = append(out, fmt.Sprintf("%s %s in=%d out=%d uid=%d", b.name, f, rs.Settings.InboundCapturePort, rs.Settings.OutboundCapturePort, rs.Settings.ProxyUID))
	}
	return out
}
func (b *fakeBackend) Apply(rs rules.Ruleset) error {
	b.world.applies++
	if b.world.failApp != nil {
		return b.world.failApp
	}
	b.world.live[b.world.current] = b.Expected(rs)
	return nil
}
func (b *fakeBackend) Remove() error { delete(b.world.live, b.world.current); return nil }
func (b *fakeBackend) Live() ([]string, error) {
	return slices.Clone(b.world.live[b.world.current]), nil
}

type harness struct {
	t       *testing.T
	p       *Plugin
	world   *fakeWorld
	pods    map[string]podinfo.Pod
	lookErr error
	reports []agentapi.Report
	stdout  *bytes.Buffer
	stderr  *bytes.Buffer
	dir     string
	netns   string
}

func newHarness(t *testing.T) *harness {
	h := &harness{
		t:      t,
		world:  &fakeWorld{live: map[string][]string{}},
		pods:   map[string]podinfo.Pod{},
		stdout: &bytes.Buffer{},
		stderr: &bytes.Buffer{},
		dir:    t.TempDir(),
	}
	// A real (empty) file is enough for the fake; DEL's existence check needs a real netns, so
	// DEL tests that expect a removal use the host's own netns path, read only by the fake.
	h.netns = "/proc/self/ns/net"
	h.p = &Plugin{
		Stdout: h.stdout,
		Stderr: h.stderr,
		NewBackend: func(name string) (capture.Backend, error) {
			if name == contract.BackendAuto {
				name = contract.BackendNFTables
			}
			return &fakeBackend{name: name, world: h.world}, nil
		},
		InNetns: func(path string, fn func() error) error {
			h.world.mu.Lock()
			defer h.world.mu.Unlock()
			h.world.current = path
			return fn()
		},
		LookupPod: func(_ context.Context, kubeconfig, ns, name string) (podinfo.Pod, error) {
			if h.lookErr != nil {
				return podinfo.Pod{}, h.lookErr
			}
			p, ok := h.pods[ns+"/"+name]
			if !ok {
				return podinfo.Pod{}, fmt.Errorf("pod %s/%s not found", ns, name)
			}
			return p, nil
		},
		Report: func(_ context.Context, socket string, r agentapi.Report) error {
			h.reports = append(h.reports, r)
			return nil
		},
		ReportTimeout: time.Second,
		LookupTimeout: time.Second,
		Now:           time.Now,
	}
	return h
}

func injectedPod(ns, name string, ann map[string]string) podinfo.Pod {
	a := map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"],"version":"test"}`}
	for k, v := range ann {
		a[k] = v
	}
	return podinfo.Pod{Namespace: ns, Name: name, UID: "uid-" + name, Annotations: a, Containers: []string{"app", contract.ProxyContainerName}}
}

func prevResult(version string, v6 bool) string {
	ips := `[{"address":"10.1.0.5/16","gateway":"10.1.0.1","interface":0}]`
	if v6 {
		ips = `[{"address":"10.1.0.5/16","gateway":"10.1.0.1","interface":0},{"address":"fd00::5/64","interface":0}]`
	}
	if version == "0.4.0" {
		ips = strings.ReplaceAll(ips, `"address"`, `"version":"4","address"`)
		if v6 {
			ips = strings.Replace(ips, `"version":"4","address":"fd00`, `"version":"6","address":"fd00`, 1)
		}
	}
	return fmt.Sprintf(`{"cniVersion":%q,"interfaces":[{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/x"}],"ips":%s,"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}`, version, ips)
}

func (h *harness) conf(version string, prev string) []byte {
	c := fmt.Sprintf(`{"cniVersion":%q,"name":"k8s","type":"sidelane-cni","state_dir":%q,"kubeconfig":"/nonexistent/kc","agent_socket":"/nonexistent/sock"`, version, h.dir)
	if prev != "" {
		c += `,"prevResult":` + prev
	}
	return []byte(c + "}")
}

func (h *harness) args(version, prev, ns, name string) *skel.CmdArgs {
	a := "IgnoreUnknown=1"
	if name != "" {
		a += ";K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + name + ";K8S_POD_UID=uid-" + name
	}
	return &skel.CmdArgs{ContainerID: "c-" + name, Netns: h.netns, IfName: "eth0", Args: a, StdinData: h.conf(version, prev)}
}

// assertPassThrough checks that stdout holds exactly prevResult in version.
func (h *harness) assertPassThrough(version, prev string) {
	h.t.Helper()
	var got, want map[string]any
	if err := json.Unmarshal(h.stdout.Bytes(), &got); err != nil {
		h.t.Fatalf("stdout is not one JSON result: %v\n%s", err, h.stdout)
	}
	if err := json.Unmarshal([]byte(prev), &want); err != nil {
		h.t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		h.t.Errorf("result not passed through unchanged:\n got %s\nwant %s", gj, wj)
	}
}

var versions = []string{"0.4.0", "1.0.0", "1.1.0"}

func TestAddPassThroughEveryVersion(t *testing.T) {
	for _, v := range versions {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", v, v6), func(t *testing.T) {
				h := newHarness(t)
				h.pods["app/web"] = injectedPod("app", "web", nil)
				prev := prevResult(v, v6)
				if err := h.p.Add(h.args(v, prev, "app", "web")); err != nil {
					t.Fatal(err)
				}
				h.assertPassThrough(v, prev)
				live := h.world.live[h.netns]
				wantFams := 1
				if v6 {
					wantFams = 2
				}
				if len(live) != wantFams {
					t.Errorf("live rules %v, want %d families", live, wantFams)
				}
			})
		}
	}
}

func TestAddRequiresPrevResult(t *testing.T) {
	h := newHarness(t)
	h.pods["app/web"] = injectedPod("app", "web", nil)
	err := h.p.Add(h.args("1.0.0", "", "app", "web"))
	if err == nil || !strings.Contains(err.Error(), "prevResult") {
		t.Fatalf("err = %v, want one naming prevResult", err)
	}
	if h.stdout.Len() != 0 || h.world.applies != 0 {
		t.Errorf("stdout %q, applies %d: want nothing", h.stdout, h.world.applies)
	}
}

func TestAddDecisions(t *testing.T) {
	bad := injectedPod("app", "bad", map[string]string{contract.AnnotationInboundCapturePort: "99999"})
	tests := []struct {
		name      string
		ns, pod   string
		pods      []podinfo.Pod
		lookErr   error
		wantErr   []string
		wantRules bool
		state     string // report state; "" for no report
	}{
		{"injected pod captured", "app", "web", []podinfo.Pod{injectedPod("app", "web", nil)}, nil, nil, true, agentapi.StateCaptured},
		{"no identity passes", "", "", nil, nil, nil, false, ""},
		{"excluded namespace not looked up", "kube-system", "dns", nil, errors.New("must not be called"), nil, false, agentapi.StateSkipped},
		{"own namespace never failed", contract.SystemNamespace, "agent", nil, errors.New("must not be called"), nil, false, agentapi.StateSkipped},
		{"plain pod skipped", "app", "plain", []podinfo.Pod{{Namespace: "app", Name: "plain", Containers: []string{"app"}}}, nil, nil, false, agentapi.StateSkipped},
		{"opted out", "app", "out", []podinfo.Pod{injectedPod("app", "out", map[string]string{contract.InjectLabel: "false"})}, nil, nil, false, agentapi.StateSkipped},
		{"API server down fails", "app", "web", nil, errors.New("API server at https://x unreachable"), []string{"app/web", "unreachable"}, false, agentapi.StateFailed},
		{"bad annotation fails", "app", "bad", []podinfo.Pod{bad}, nil, []string{contract.AnnotationInboundCapturePort, `"99999"`}, false, agentapi.StateFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, p := range tt.pods {
				h.pods[p.Namespace+"/"+p.Name] = p
			}
			h.lookErr = tt.lookErr
			prev := prevResult("1.0.0", false)
			err := h.p.Add(h.args("1.0.0", prev, tt.ns, tt.pod))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("ADD succeeded, want an error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				if h.stdout.Len() != 0 {
					t.Errorf("stdout after a failed ADD: %q", h.stdout)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				h.assertPassThrough("1.0.0", prev)
			}
			if got := len(h.world.live[h.netns]) > 0; got != tt.wantRules {
				t.Errorf("rules present = %v, want %v", got, tt.wantRules)
			}
			if _, ok, _ := loadState(h.dir, "c-"+tt.pod, "eth0"); ok != tt.wantRules {
				t.Errorf("state present = %v, want %v", ok, tt.wantRules)
			}
			if tt.state == "" {
				if len(h.reports) != 0 {
					t.Errorf("reports %+v, want none", h.reports)
				}
				return
			}
			if len(h.reports) != 1 {
				t.Fatalf("reports %+v, want one", h.reports)
			}
			r := h.reports[0]
			if r.Event != agentapi.EventAdd || r.State != tt.state || r.Namespace != tt.ns || r.Name != tt.pod || r.ContainerID != "c-"+tt.pod {
				t.Errorf("report %+v, want ADD %s for %s/%s", r, tt.state, tt.ns, tt.pod)
			}
			if tt.state == agentapi.StateCaptured && (len(r.Rules) == 0 || r.Backend != "nftables" || r.Settings == nil || !slices.Equal(r.PodIPs, []string{"10.1.0.5"})) {
				t.Errorf("captured report lacks rules/backend/settings/IPs: %+v", r)
			}
		})
	}
}

func TestAddApplyFailureLeavesNothing(t *testing.T) {
	h := newHarness(t)
	h.pods["app/web"] = injectedPod("app", "web", nil)
	h.world.failApp = errors.New("netlink: boom")
	err := h.p.Add(h.args("1.0.0", prevResult("1.0.0", false), "app", "web"))
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if _, ok, _ := loadState(h.dir, "c-web", "eth0"); ok {
		t.Error("state left after a failed apply")
	}
	if len(h.world.live) != 0 {
		t.Errorf("rules left: %v", h.world.live)
	}
}

func TestCheckAndDel(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			h := newHarness(t)
			h.pods["app/web"] = injectedPod("app", "web", nil)
			prev := prevResult("1.1.0", false)
			a := h.args("1.1.0", prev, "app", "web")
			a.StdinData = bytes.Replace(a.StdinData, []byte(`"type"`), []byte(`"backend":"`+backend+`","type"`), 1)
			if err := h.p.Add(a); err != nil {
				t.Fatal(err)
			}
			// Repeated ADD: one copy.
			if err := h.p.Add(a); err != nil {
				t.Fatal(err)
			}
			if err := h.p.Check(a); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			// Tamper: drop a rule, add a foreign one.
			h.world.live[h.netns] = []string{"foreign rule"}
			err := h.p.Check(a)
			if err == nil || !strings.Contains(err.Error(), "-"+backend+" ipv4") || !strings.Contains(err.Error(), "+foreign rule") {
				t.Fatalf("CHECK after tampering: %v", err)
			}
			last := h.reports[len(h.reports)-1]
			if last.Event != agentapi.EventCheck || last.State != agentapi.StateDrifted {
				t.Errorf("CHECK report %+v", last)
			}
			// A CHECK with a changed configuration still checks what ADD did.
			h.world.live[h.netns] = nil
			if err := h.p.Check(a); err == nil {
				t.Fatal("CHECK passed with no rules")
			}
			if err := h.p.Add(a); err != nil {
				t.Fatal(err)
			}
			h.reports = nil
			if err := h.p.Del(a); err != nil {
				t.Fatal(err)
			}
			if len(h.world.live[h.netns]) != 0 {
				t.Errorf("rules left after DEL: %v", h.world.live)
			}
			if len(h.reports) != 1 || h.reports[0].Event != agentapi.EventDel || h.reports[0].Name != "web" || h.reports[0].Backend != backend {
				t.Errorf("DEL reports %+v", h.reports)
			}
			// Idempotent DEL, and DEL with no netns at all.
			if err := h.p.Del(a); err != nil {
				t.Fatal(err)
			}
			a.Netns = ""
			if err := h.p.Del(a); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDelMissingNetnsForgetsState(t *testing.T) {
	h := newHarness(t)
	h.pods["app/web"] = injectedPod("app", "web", nil)
	a := h.args("1.0.0", prevResult("1.0.0", false), "app", "web")
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "gone")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, netns := range []string{filepath.Join(t.TempDir(), "missing"), empty} {
		a.Netns = netns
		if err := h.p.Del(a); err != nil {
			t.Fatalf("DEL with netns %s: %v", netns, err)
		}
	}
	if _, ok, _ := loadState(h.dir, "c-web", "eth0"); ok {
		t.Error("state left after DEL")
	}
}

func TestCheckNotCaptured(t *testing.T) {
	h := newHarness(t)
	if err := h.p.Check(h.args("1.0.0", prevResult("1.0.0", false), "app", "plain")); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Check(h.args("1.0.0", "", "app", "plain")); err == nil {
		t.Fatal("CHECK without prevResult passed")
	}
}

func TestStatus(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	kc := filepath.Join(dir, "kc")
	conf := func(path string) *skel.CmdArgs {
		return &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s","type":"sidelane-cni","kubeconfig":%q}`, path))}
	}
	err := h.p.Status(conf(kc))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, kc) {
		t.Fatalf("STATUS without kubeconfig: %v", err)
	}
	if err := os.WriteFile(kc, []byte(kubeconfigFor("https://127.0.0.1:6443")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Status(conf(kc)); err != nil {
		t.Fatalf("STATUS with kubeconfig: %v", err)
	}
	if err := os.WriteFile(kc, []byte("{not yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Status(conf(kc)); err == nil {
		t.Fatal("STATUS with a garbage kubeconfig passed")
	}
}

func kubeconfigFor(server string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
}

func TestGC(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b", "c"} {
		h.pods["app/"+name] = injectedPod("app", name, nil)
		a := h.args("1.1.0", prevResult("1.1.0", false), "app", name)
		a.Netns = filepath.Join(t.TempDir(), "gone") // netns already gone: GC only forgets
		h.p.InNetns = func(string, func() error) error { return nil }
		if err := h.p.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	gc := &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s","type":"sidelane-cni","state_dir":%q,
		"cni.dev/valid-attachments":[{"containerID":"c-b","ifname":"eth0"},{"containerID":"c-zzz","ifname":"eth0"}]}`, h.dir))}
	if err := h.p.GC(gc); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"a": false, "b": true, "c": false} {
		if _, ok, _ := loadState(h.dir, "c-"+name, "eth0"); ok != want {
			t.Errorf("state of %s present = %v, want %v", name, ok, want)
		}
	}
}

func TestStateFileNames(t *testing.T) {
	a, _ := stateFile("/d", "x_y", "z")
	b, _ := stateFile("/d", "x", "y_z")
	if a == b {
		t.Errorf("state files collide: %s", a)
	}
	if _, err := stateFile("/d", "", "eth0"); err == nil {
		t.Error("empty container ID accepted")
	}
	p, _ := stateFile("/d", "../../etc", "eth0")
	if filepath.Dir(p) != "/d" {
		t.Errorf("state file %s escapes its dir", p)
	}
}
