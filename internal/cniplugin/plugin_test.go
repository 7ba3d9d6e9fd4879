package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/selection"
)

type harness struct {
	t      *testing.T
	p      *Plugin
	kernel *capture.Fake // the pods' rules, rendered as the real backends render them
	agent  *cnirpc.Fake  // the stand-in agent on socket
	socket string
	seen   int // reports before this index are ignored by reports()
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	dir    string
	netns  string
}

// testPod is a pod the stand-in agent knows.
type testPod struct {
	name, uid string
	facts     selection.PodFacts
}

func (h *harness) addPod(p testPod) { h.agent.SetPod(p.name, p.uid, p.facts) }

// reports returns the reports the agent received since the last mark.
func (h *harness) reports() []agentapi.Report {
	_, r, _ := h.agent.Snapshot()
	return r[h.seen:]
}

func (h *harness) mark() {
	_, r, _ := h.agent.Snapshot()
	h.seen = len(r)
}

// agentDown points the plugin at a socket nobody listens on.
func (h *harness) agentDown() { h.socket = filepath.Join(filepath.Dir(h.socket), "down.sock") }

// serveAgent serves the stand-in agent on a unix socket for the test's lifetime.
func serveAgent(t *testing.T, a *cnirpc.Fake) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "slcni")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cnirpc.Serve(ctx, l, a, time.Second); close(done) }()
	t.Cleanup(func() { cancel(); <-done; os.RemoveAll(dir) })
	return sock
}

func newHarness(t *testing.T) *harness {
	h := &harness{
		t:      t,
		kernel: capture.NewFake(),
		agent:  &cnirpc.Fake{Excluded: contract.DefaultExcludeNamespaces},
		stdout: &bytes.Buffer{},
		stderr: &bytes.Buffer{},
		dir:    t.TempDir(),
	}
	h.socket = serveAgent(t, h.agent)
	// The fake needs a path that exists; DEL's existence check needs a real netns, so the
	// tests use the host's own netns path, read only by the fake.
	h.netns = "/proc/self/ns/net"
	h.p = &Plugin{
		Stdout:        h.stdout,
		Stderr:        h.stderr,
		NewBackend:    h.kernel.New,
		InNetns:       h.kernel.InNetns,
		Agent:         cnirpc.Call,
		DecideTimeout: time.Second,
		ReportTimeout: time.Second,
		StatusTimeout: time.Second,
		Now:           time.Now,
	}
	return h
}

func injectedPod(ns, name string, ann map[string]string) testPod {
	a := map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"],"version":"test"}`}
	for k, v := range ann {
		a[k] = v
	}
	return testPod{name: name, uid: "uid-" + name, facts: selection.PodFacts{Namespace: ns, Annotations: a, Containers: []string{"app", contract.ProxyContainerName}}}
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
	c := fmt.Sprintf(`{"cniVersion":%q,"name":"k8s","type":"sidelane-cni","state_dir":%q,"agent_socket":%q`, version, h.dir, h.socket)
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
				h.addPod(injectedPod("app", "web", nil))
				prev := prevResult(v, v6)
				if err := h.p.Add(h.args(v, prev, "app", "web")); err != nil {
					t.Fatal(err)
				}
				h.assertPassThrough(v, prev)
				live := h.kernel.Live(h.netns)
				want := []string{"table ip sidelane"}
				if v6 {
					want = append(want, "table ip6 sidelane")
				}
				tables := slices.DeleteFunc(slices.Clone(live), func(l string) bool { return !strings.HasPrefix(l, "table ") })
				if !slices.Equal(tables, want) {
					t.Errorf("live tables %v, want %v", tables, want)
				}
			})
		}
	}
}

func TestAddRequiresPrevResult(t *testing.T) {
	h := newHarness(t)
	h.addPod(injectedPod("app", "web", nil))
	err := h.p.Add(h.args("1.0.0", "", "app", "web"))
	if err == nil || !strings.Contains(err.Error(), "prevResult") {
		t.Fatalf("err = %v, want one naming prevResult", err)
	}
	if h.stdout.Len() != 0 || len(h.kernel.Applied()) != 0 {
		t.Errorf("stdout %q, applied in %v: want nothing", h.stdout, h.kernel.Applied())
	}
}

func TestAddDecisions(t *testing.T) {
	bad := injectedPod("app", "bad", map[string]string{contract.AnnotationInboundCapturePort: "99999"})
	tests := []struct {
		name      string
		ns, pod   string
		pods      []testPod
		down      bool // the agent does not answer
		wantErr   []string
		errCode   uint // CNI error code when wantErr is set (0: any)
		wantRules bool
		state     string // report state; "" for no report
		asked     bool   // the agent was asked for a decision
	}{
		{"injected pod captured", "app", "web", []testPod{injectedPod("app", "web", nil)}, false, nil, 0, true, agentapi.StateCaptured, true},
		{"no identity passes", "", "", nil, false, nil, 0, false, "", false},
		{"no identity passes with the agent down", "", "", nil, true, nil, 0, false, "", false},
		{"excluded namespace not asked", "kube-system", "dns", nil, false, nil, 0, false, agentapi.StateSkipped, false},
		{"excluded namespace proceeds with the agent down", "kube-system", "dns", nil, true, nil, 0, false, "", false},
		{"own namespace never failed", contract.SystemNamespace, "agent", nil, true, nil, 0, false, "", false},
		{"plain pod skipped", "app", "plain", []testPod{{name: "plain", facts: selection.PodFacts{Namespace: "app", Containers: []string{"app"}}}}, false, nil, 0, false, agentapi.StateSkipped, true},
		{"opted out", "app", "out", []testPod{injectedPod("app", "out", map[string]string{contract.InjectLabel: "false"})}, false, nil, 0, false, agentapi.StateSkipped, true},
		{"agent down: try again later naming the socket", "app", "web", []testPod{injectedPod("app", "web", nil)}, true, []string{"app/web", "down.sock", "unreachable"}, types.ErrTryAgainLater, false, "", false},
		{"pod unknown to the agent: try again later", "app", "ghost", nil, false, []string{"app/ghost", "not found"}, types.ErrTryAgainLater, false, agentapi.StateFailed, true},
		{"replaced pod: try again later", "app", "web", []testPod{{name: "web", uid: "other", facts: injectedPod("app", "web", nil).facts}}, false, []string{"uid other", "uid-web"}, types.ErrTryAgainLater, false, agentapi.StateFailed, true},
		{"bad annotation fails", "app", "bad", []testPod{bad}, false, []string{contract.AnnotationInboundCapturePort, `"99999"`}, 0, false, agentapi.StateFailed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, p := range tt.pods {
				h.addPod(p)
			}
			if tt.down {
				h.agentDown()
			}
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
				var te *types.Error
				if tt.errCode != 0 && (!errors.As(err, &te) || te.Code != tt.errCode) {
					t.Errorf("error %v: want CNI error code %d", err, tt.errCode)
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
			if got := len(h.kernel.Live(h.netns)) > 0; got != tt.wantRules {
				t.Errorf("rules present = %v, want %v", got, tt.wantRules)
			}
			if _, ok, _ := loadState(h.dir, "c-"+tt.pod, "eth0"); ok != tt.wantRules {
				t.Errorf("state present = %v, want %v", ok, tt.wantRules)
			}
			if decided, _, _ := h.agent.Snapshot(); (len(decided) > 0) != tt.asked {
				t.Errorf("agent asked %d times, want asked = %v", len(decided), tt.asked)
			}
			reports := h.reports()
			if tt.state == "" {
				if len(reports) != 0 {
					t.Errorf("reports %+v, want none", reports)
				}
				return
			}
			if len(reports) != 1 {
				t.Fatalf("reports %+v, want one", reports)
			}
			r := reports[0]
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
	h.addPod(injectedPod("app", "web", nil))
	h.kernel.ApplyErr = errors.New("netlink: boom")
	err := h.p.Add(h.args("1.0.0", prevResult("1.0.0", false), "app", "web"))
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if _, ok, _ := loadState(h.dir, "c-web", "eth0"); ok {
		t.Error("state left after a failed apply")
	}
	if live := h.kernel.Live(h.netns); len(live) != 0 {
		t.Errorf("rules left: %v", live)
	}
}

func TestCheckAndDel(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			h := newHarness(t)
			h.addPod(injectedPod("app", "web", nil))
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
			// Tamper: drop our rules, add a foreign one.
			ours := h.kernel.Live(h.netns)
			if len(ours) == 0 {
				t.Fatal("no rules after ADD")
			}
			h.kernel.SetLive(h.netns, []string{"foreign rule"})
			err := h.p.Check(a)
			if err == nil || !strings.Contains(err.Error(), "-"+ours[0]) || !strings.Contains(err.Error(), "+foreign rule") {
				t.Fatalf("CHECK after tampering: %v", err)
			}
			last := h.reports()[len(h.reports())-1]
			if last.Event != agentapi.EventCheck || last.State != agentapi.StateDrifted {
				t.Errorf("CHECK report %+v", last)
			}
			// A CHECK with a changed configuration still checks what ADD did.
			h.kernel.SetLive(h.netns, nil)
			if err := h.p.Check(a); err == nil {
				t.Fatal("CHECK passed with no rules")
			}
			if err := h.p.Add(a); err != nil {
				t.Fatal(err)
			}
			h.mark()
			if err := h.p.Del(a); err != nil {
				t.Fatal(err)
			}
			if live := h.kernel.Live(h.netns); len(live) != 0 {
				t.Errorf("rules left after DEL: %v", live)
			}
			if r := h.reports(); len(r) != 1 || r[0].Event != agentapi.EventDel || r[0].Name != "web" || r[0].Backend != backend {
				t.Errorf("DEL reports %+v", r)
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
	h.addPod(injectedPod("app", "web", nil))
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
	conf := func(sock string) *skel.CmdArgs {
		return &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s","type":"sidelane-cni","agent_socket":%q}`, sock))}
	}
	if err := h.p.Status(conf(h.socket)); err != nil {
		t.Fatalf("STATUS with the agent answering: %v", err)
	}
	h.agentDown()
	err := h.p.Status(conf(h.socket))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, h.socket) {
		t.Fatalf("STATUS with the agent down: %v, want error 50 naming %s", err, h.socket)
	}
}

// TestLegacyKubeconfigWarns: an entry written by an older agent still has "kubeconfig"; it is
// ignored and the agent is told, so that it can log it.
func TestLegacyKubeconfigWarns(t *testing.T) {
	h := newHarness(t)
	h.addPod(injectedPod("app", "web", nil))
	a := h.args("1.0.0", prevResult("1.0.0", false), "app", "web")
	a.StdinData = bytes.Replace(a.StdinData, []byte(`"type"`), []byte(`"kubeconfig":"/etc/cni/net.d/sidelane-kubeconfig","type"`), 1)
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	if len(h.kernel.Live(h.netns)) == 0 {
		t.Error("not captured")
	}
	_, _, warnings := h.agent.Snapshot()
	if len(warnings) == 0 || !strings.Contains(warnings[0], "kubeconfig") {
		t.Errorf("agent warnings %q, want one naming kubeconfig", warnings)
	}
}

func TestGC(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"a", "b", "c"} {
		h.addPod(injectedPod("app", name, nil))
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

// TestSandboxIPs: only the addresses of the sandbox interface count (as in the reference
// portmap plugin), so the families follow the pod's own interface, not a host-side veth or a
// second attachment.
func TestSandboxIPs(t *testing.T) {
	ifaces := `"interfaces":[{"name":"veth1","mac":"0a:00:00:00:00:01"},{"name":"eth0","mac":"0a:00:00:00:00:02","sandbox":"/var/run/netns/x"},{"name":"net1","mac":"0a:00:00:00:00:03","sandbox":"/var/run/netns/x"}]`
	tests := []struct {
		name, ips string
		want      []string
		fams      []rules.Family
	}{
		{"v4 on eth0", `[{"address":"10.0.0.5/24","interface":1}]`, []string{"10.0.0.5"}, []rules.Family{rules.IPv4}},
		{"v6 on eth0", `[{"address":"fd00::5/64","interface":1}]`, []string{"fd00::5"}, []rules.Family{rules.IPv4, rules.IPv6}},
		{"dual on eth0", `[{"address":"10.0.0.5/24","interface":1},{"address":"fd00::5/64","interface":1}]`, []string{"10.0.0.5", "fd00::5"}, []rules.Family{rules.IPv4, rules.IPv6}},
		{"v6 on the host veth ignored", `[{"address":"10.0.0.5/24","interface":1},{"address":"fd00::1/64","interface":0}]`, []string{"10.0.0.5"}, []rules.Family{rules.IPv4}},
		{"v6 on another sandbox interface ignored", `[{"address":"10.0.0.5/24","interface":1},{"address":"fd01::5/64","interface":2}]`, []string{"10.0.0.5"}, []rules.Family{rules.IPv4}},
		{"no interface index kept", `[{"address":"10.0.0.5/24"},{"address":"fd00::5/64"}]`, []string{"10.0.0.5", "fd00::5"}, []rules.Family{rules.IPv4, rules.IPv6}},
		{"index out of range kept", `[{"address":"fd00::5/64","interface":9}]`, []string{"fd00::5"}, []rules.Family{rules.IPv4, rules.IPv6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"sidelane-cni","prevResult":{"cniVersion":"1.0.0",` + ifaces + `,"ips":` + tt.ips + `}}`))
			if err != nil {
				t.Fatal(err)
			}
			got := sandboxIPs(conf.PrevResult, "eth0")
			if !slices.Equal(got, tt.want) {
				t.Errorf("sandboxIPs = %q, want %q", got, tt.want)
			}
			if fams := rules.FamiliesFor(got); !slices.Equal(fams, tt.fams) {
				t.Errorf("families = %v, want %v", fams, tt.fams)
			}
		})
	}
}

// TestAddBadNetnsLeavesNoState: an ADD whose netns path is not a network namespace (missing,
// a regular file, a directory) fails and leaves no state file behind (issue 16), so that a later
// CHECK does not fail on an attachment that was never set up.
func TestAddBadNetnsLeavesNoState(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, netns := range map[string]string{"missing": filepath.Join(dir, "missing"), "regular file": file, "directory": dir} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.addPod(injectedPod("app", "web", nil))
			h.p.InNetns = capture.InNetns // the real one: it cannot enter these paths
			a := h.args("1.0.0", prevResult("1.0.0", false), "app", "web")
			a.Netns = netns
			if err := h.p.Add(a); err == nil {
				t.Fatal("ADD into a path that is not a netns succeeded")
			}
			if paths, _ := listStates(h.dir); len(paths) != 0 {
				t.Errorf("state files left: %v", paths)
			}
			if err := h.p.Check(a); err != nil {
				t.Errorf("CHECK after the failed ADD: %v", err)
			}
		})
	}
}

// TestCorruptStateAfterPowerLoss: state files are written without fsync, so after a power loss
// one may be empty or cut. DEL drops such a file when the attachment's netns is gone (and still
// refuses it while the netns exists); GC drops it unless it belongs to a valid attachment.
func TestCorruptStateAfterPowerLoss(t *testing.T) {
	h := newHarness(t)
	corrupt := func(cid string) string {
		t.Helper()
		path, err := stateFile(h.dir, cid, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(h.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(`{"containerID":"c-`), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	exists := func(path string) bool { _, err := os.Stat(path); return err == nil }

	// DEL, netns still there: the file is kept and the error names it.
	path := corrupt("c-web")
	a := h.args("1.0.0", prevResult("1.0.0", false), "app", "web")
	if err := h.p.Del(a); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("DEL of a corrupt state with a live netns: %v, want an error naming %s", err, path)
	}
	if !exists(path) {
		t.Fatal("corrupt state of a live netns removed")
	}
	// DEL, netns gone: dropped.
	a.Netns = filepath.Join(t.TempDir(), "gone")
	if err := h.p.Del(a); err != nil {
		t.Fatalf("DEL of a corrupt state with the netns gone: %v", err)
	}
	if exists(path) {
		t.Error("corrupt state left after DEL")
	}

	// GC: a corrupt file of a valid attachment stays (and is reported), others go.
	stale, valid := corrupt("c-stale"), corrupt("c-valid")
	gc := &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s","type":"sidelane-cni","state_dir":%q,
		"cni.dev/valid-attachments":[{"containerID":"c-valid","ifname":"eth0"}]}`, h.dir))}
	if err := h.p.GC(gc); err == nil || !strings.Contains(err.Error(), valid) {
		t.Errorf("GC: %v, want an error naming the valid attachment's unreadable state %s", err, valid)
	}
	if exists(stale) || !exists(valid) {
		t.Errorf("after GC: stale present %v (want false), valid present %v (want true)", exists(stale), exists(valid))
	}
}

// TestMainPrintsTheCNIError: a call skel refuses (here: no network configuration on stdin)
// ends with exit code 1 and the CNI error, as JSON, on the plugin's stdout (what the runtime
// reads).
func TestMainPrintsTheCNIError(t *testing.T) {
	t.Setenv("CNI_COMMAND", "ADD")
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), &stdout, &stderr); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr %q", code, stderr.String())
	}
	var e types.Error
	if err := json.Unmarshal(stdout.Bytes(), &e); err != nil || e.Code == 0 || e.Msg == "" {
		t.Fatalf("stdout %q (%v): want a CNI error", stdout.String(), err)
	}
}
