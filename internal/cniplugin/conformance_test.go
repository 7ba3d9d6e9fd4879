package cniplugin_test

// Conformance tests: the real sidelane-cni binary, chained after the real bridge and host-local
// plugins, driven by libcni in real network namespaces, with the decisions answered by a stand-in
// node agent on a unix socket (the real protocol, cnitest.Agent). Everything runs inside a
// test-owned "host" network namespace so that the bridge and its addresses never touch the
// machine's own network.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/cniplugin/cnitest"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
	"github.com/sidelane/sidelane/internal/testenv"
)

// binDir holds bridge, host-local and sidelane-cni, built once by TestMain (as root only).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "sidelane-cni-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			if err := cnitest.BuildPlugins(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			binDir = dir
		}
		return m.Run()
	}())
}

// Pod and Injected are the harness's.
type Pod = cnitest.Pod

var Injected = cnitest.Injected

// env is one test's world: a host netns with the bridge, and the stand-in agent on its socket.
type env struct {
	*cnitest.Host
	t testing.TB
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if binDir == "" {
		t.Fatal("plugins not built (TestMain)")
	}
	// A short scratch dir: the agent's unix socket lives there.
	dir, err := os.MkdirTemp("", "slcni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h, err := cnitest.NewHost(dir, binDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("plugins' stderr:\n%s", h.Stderr)
		}
	})
	return &env{Host: h, t: t}
}

func (e *env) conflist(version, backend string, fields map[string]any) *libcni.NetworkConfigList {
	e.t.Helper()
	l, err := e.Conflist(version, backend, true, fields)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

type pod = cnitest.PodNS

func (e *env) newPod(namespace, name string) *pod {
	e.t.Helper()
	p, err := cnitest.NewPodNS(namespace, name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

func (e *env) inHost(fn func() error) error { return e.Do(fn) }

func (e *env) add(list *libcni.NetworkConfigList, p *pod) (types.Result, error) {
	return e.Add(ctx(e.t), list, p)
}

func (e *env) check(list *libcni.NetworkConfigList, p *pod) error { return e.Check(ctx(e.t), list, p) }

func (e *env) del(list *libcni.NetworkConfigList, p *pod) error { return e.Del(ctx(e.t), list, p) }

// live reads our rules in the pod's netns with the named backend; expected is what the
// settings of annotations ask for.
func live(t testing.TB, backend string, p *pod) []string {
	t.Helper()
	b, err := capture.New(backend)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := capture.InNetns(p.NS.Path(), func() error {
		var err error
		out, err = b.Live()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func expected(t testing.TB, backend string, annotations map[string]string) []string {
	t.Helper()
	s, err := redirect.FromAnnotations(annotations)
	if err != nil {
		t.Fatal(err)
	}
	b, err := capture.New(backend)
	if err != nil {
		t.Fatal(err)
	}
	return b.Expected(rules.Build(s, rules.IPv4))
}

func assertRules(t testing.TB, backend string, p *pod, want []string) {
	t.Helper()
	got := live(t, backend, p)
	if d := rules.Diff(want, got); len(d) > 0 {
		t.Fatalf("rules in %s differ from the expected ones:\n%s", p.NS.Path(), strings.Join(d, "\n"))
	}
}

// assertPassThrough checks every sidelane-cni ADD of p: stdout is exactly one JSON document and
// equals the prevResult it was given; and the chain's result describes the pod's real eth0.
func (e *env) assertPassThrough(version string, p *pod, res types.Result) {
	t := e.t
	t.Helper()
	calls := e.Exec.Find(contract.PluginBinary, "ADD", p.RT.ContainerID)
	if len(calls) == 0 {
		t.Fatal("sidelane-cni ADD was not called")
	}
	for _, c := range calls {
		var conf struct {
			PrevResult json.RawMessage `json:"prevResult"`
		}
		if err := json.Unmarshal(c.Stdin, &conf); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(c.Stdout))
		var got, want any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("stdout is not a JSON result: %v\n%s", err, c.Stdout)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("stdout carries more than the result:\n%s", c.Stdout)
		}
		if err := json.Unmarshal(conf.PrevResult, &want); err != nil {
			t.Fatal(err)
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if !bytes.Equal(gj, wj) {
			t.Errorf("result changed by sidelane-cni:\n got %s\nwant %s", gj, wj)
		}
		if v, _ := got.(map[string]any)["cniVersion"].(string); v != version {
			t.Errorf("result cniVersion %q, want %q", v, version)
		}
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 {
		t.Fatalf("result IPs %v", r.IPs)
	}
	if err := p.NS.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IPNet.String() == r.IPs[0].Address.String() {
				return nil
			}
		}
		return fmt.Errorf("eth0 has %v, the result says %s", addrs, r.IPs[0].Address.String())
	}); err != nil {
		t.Error(err)
	}
}

func TestChainAddCheckDel(t *testing.T) {
	for _, backend := range []string{contract.BackendNFTables, contract.BackendIPTables} {
		for _, version := range []string{"0.4.0", "1.0.0", "1.1.0"} {
			t.Run(backend+"/"+version, func(t *testing.T) {
				e := newEnv(t)
				podSpec := Injected("shop", "cart", map[string]string{contract.AnnotationExcludeInboundPorts: "8081"})
				e.Agent.Put(podSpec)
				list := e.conflist(version, backend, nil)
				p := e.newPod("shop", "cart")
				want := expected(t, backend, podSpec.Annotations)

				res, err := e.add(list, p)
				if err != nil {
					t.Fatalf("ADD: %v", err)
				}
				e.assertPassThrough(version, p, res)
				assertRules(t, backend, p, want)

				if err := e.check(list, p); err != nil {
					t.Fatalf("CHECK after ADD: %v", err)
				}

				// Tamper: another ruleset in place of ours.
				b, _ := capture.New(backend)
				other := redirect.Defaults()
				other.InboundCapturePort = 15999
				if err := capture.InNetns(p.NS.Path(), func() error { return b.Apply(rules.Build(other, rules.IPv4)) }); err != nil {
					t.Fatal(err)
				}
				err = e.check(list, p)
				if err == nil || !strings.Contains(err.Error(), "differ from the expected") || !strings.Contains(err.Error(), "15999") {
					t.Fatalf("CHECK after tampering: %v", err)
				}

				// Repeated ADD of sidelane-cni (the runtime retrying): exactly one copy, ours.
				first := e.Exec.Find(contract.PluginBinary, "ADD", p.RT.ContainerID)[0]
				for range 2 {
					if err := e.inHost(func() error {
						_, err := e.Exec.ExecPlugin(ctx(t), filepath.Join(binDir, contract.PluginBinary), first.Stdin, first.Environ)
						return err
					}); err != nil {
						t.Fatalf("repeated ADD: %v", err)
					}
				}
				assertRules(t, backend, p, want)
				e.assertPassThrough(version, p, res)
				if err := e.check(list, p); err != nil {
					t.Fatalf("CHECK after re-ADD: %v", err)
				}

				if err := e.del(list, p); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				if got := live(t, backend, p); len(got) != 0 {
					t.Fatalf("rules left after DEL: %v", got)
				}
				if err := e.del(list, p); err != nil {
					t.Fatalf("second DEL: %v", err)
				}
				if entries, _ := os.ReadDir(e.StateDir); len(entries) != 0 {
					t.Errorf("state left after DEL: %v", entries)
				}
			})
		}
	}
}

func TestChainNotCaptured(t *testing.T) {
	e := newEnv(t)
	optedOut := Injected("shop", "optout", nil)
	optedOut.Labels = map[string]string{contract.InjectLabel: "false"}
	annOut := Injected("shop", "annout", map[string]string{contract.InjectLabel: "false"})
	noProxy := Injected("shop", "noproxy", nil)
	noProxy.Containers = []string{"app"}
	plain := Pod{Namespace: "shop", Name: "plain", Containers: []string{"app"}}
	system := Injected("kube-system", "dns", nil)
	for _, p := range []Pod{optedOut, annOut, noProxy, plain, system} {
		e.Agent.Put(p)
	}
	list := e.conflist("1.0.0", contract.BackendNFTables, nil)
	for _, tc := range []struct{ ns, name string }{
		{"shop", "optout"}, {"shop", "annout"}, {"shop", "noproxy"}, {"shop", "plain"}, {"kube-system", "dns"}, {"", ""},
	} {
		t.Run(tc.ns+"/"+tc.name, func(t *testing.T) {
			p := e.newPod(tc.ns, tc.name)
			res, err := e.add(list, p)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			e.assertPassThrough("1.0.0", p, res)
			if got := live(t, contract.BackendNFTables, p); len(got) != 0 {
				t.Errorf("rules in a pod that is not captured: %v", got)
			}
			if err := e.check(list, p); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := e.del(list, p); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
	// Native sidecar: captured.
	native := Injected("shop", "native", nil)
	native.Containers, native.NativeSidecars = []string{"app"}, []string{contract.ProxyContainerName}
	e.Agent.Put(native)
	p := e.newPod("shop", "native")
	if _, err := e.add(list, p); err != nil {
		t.Fatal(err)
	}
	assertRules(t, contract.BackendNFTables, p, expected(t, contract.BackendNFTables, native.Annotations))
	if err := e.del(list, p); err != nil {
		t.Fatal(err)
	}
}

func TestChainBadAnnotation(t *testing.T) {
	for _, backend := range []string{contract.BackendNFTables, contract.BackendIPTables} {
		t.Run(backend, func(t *testing.T) {
			e := newEnv(t)
			e.Agent.Put(Injected("shop", "bad", map[string]string{contract.AnnotationExcludeOutboundCIDRs: "10.0.0.0/33"}))
			list := e.conflist("1.0.0", backend, nil)
			p := e.newPod("shop", "bad")
			_, err := e.add(list, p)
			if err == nil || !strings.Contains(err.Error(), contract.AnnotationExcludeOutboundCIDRs) || !strings.Contains(err.Error(), "10.0.0.0/33") {
				t.Fatalf("ADD of a pod with a bad annotation: %v", err)
			}
			if got := live(t, backend, p); len(got) != 0 {
				t.Errorf("rules left after a failed ADD: %v", got)
			}
			if entries, _ := os.ReadDir(e.StateDir); len(entries) != 0 {
				t.Errorf("state left after a failed ADD: %v", entries)
			}
			if err := e.del(list, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestChainAgentDown: with the node agent not answering, an injected pod's ADD fails with CNI
// error 11 naming the socket and leaves nothing in its netns; pods of excluded namespaces start;
// once the agent is back the retried ADD captures the pod.
func TestChainAgentDown(t *testing.T) {
	e := newEnv(t)
	e.Agent.Put(Injected("shop", "cart", nil))
	e.Agent.Down()
	list := e.conflist("1.0.0", contract.BackendNFTables, nil)
	p := e.newPod("shop", "cart")
	_, err := e.add(list, p)
	if err == nil || !strings.Contains(err.Error(), "shop/cart") || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), e.AgentSock) {
		t.Fatalf("ADD with the agent down: %v, want an error naming the pod and %s", err, e.AgentSock)
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Errorf("error code: %v, want %d (try again later)", err, types.ErrTryAgainLater)
	}
	if got := live(t, contract.BackendNFTables, p); len(got) != 0 {
		t.Errorf("rules in the netns after the failed ADD: %v", got)
	}
	if entries, _ := os.ReadDir(e.StateDir); len(entries) != 0 {
		t.Errorf("state after the failed ADD: %v", entries)
	}
	// The runtime cleans the failed attempt up (DEL) and retries.
	if err := e.del(list, p); err != nil {
		t.Fatalf("DEL after the failed ADD: %v", err)
	}
	// Excluded namespaces, and the agent's own, do not need the agent.
	var others []*pod
	for _, ns := range []string{"kube-system", contract.SystemNamespace} {
		o := e.newPod(ns, "x")
		if _, err := e.add(list, o); err != nil {
			t.Fatalf("ADD in excluded namespace %s with the agent down: %v", ns, err)
		}
		others = append(others, o)
	}
	// The agent is back: the retried ADD captures the pod.
	if err := e.Agent.Up(); err != nil {
		t.Fatal(err)
	}
	p = e.newPod("shop", "cart")
	if _, err := e.add(list, p); err != nil {
		t.Fatalf("ADD once the agent is back: %v", err)
	}
	if d := rules.Diff(expected(t, contract.BackendNFTables, Injected("", "", nil).Annotations), live(t, contract.BackendNFTables, p)); len(d) > 0 {
		t.Errorf("rules after the retried ADD differ: %v", d)
	}
	for _, p := range append(others, p) {
		if err := e.del(list, p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChainStatusAndGC(t *testing.T) {
	e := newEnv(t)
	e.Agent.Put(Injected("shop", "a", nil))
	e.Agent.Put(Injected("shop", "b", nil))
	list := e.conflist("1.1.0", contract.BackendNFTables, nil)
	if err := e.inHost(func() error { return e.CNI.GetStatusNetworkList(ctx(t), list) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	missing := e.conflist("1.1.0", contract.BackendNFTables, map[string]any{"agent_socket": filepath.Join(e.Dir, "nope.sock")})
	err := e.inHost(func() error { return e.CNI.GetStatusNetworkList(ctx(t), missing) })
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "nope.sock") {
		t.Fatalf("STATUS without an agent: %v, want error 50 naming the socket", err)
	}
	a, b := e.newPod("shop", "a"), e.newPod("shop", "b")
	for _, p := range []*pod{a, b} {
		if _, err := e.add(list, p); err != nil {
			t.Fatal(err)
		}
	}
	// GC keeping only b: a's state goes, and (its netns still being there) its rules too.
	if err := e.inHost(func() error {
		return e.CNI.GCNetworkList(ctx(t), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: b.RT.ContainerID, IfName: "eth0"}}})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := live(t, contract.BackendNFTables, a); len(got) != 0 {
		t.Errorf("rules of a GC'd attachment left: %v", got)
	}
	entries, _ := os.ReadDir(e.StateDir)
	if len(entries) != 1 {
		t.Errorf("state after GC: %v, want b's only", entries)
	}
	if err := e.check(list, b); err != nil {
		t.Errorf("CHECK of b after GC: %v", err)
	}
	for _, p := range []*pod{a, b} {
		if err := e.del(list, p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAgentReports(t *testing.T) {
	e := newEnv(t)
	e.Agent.Put(Injected("shop", "cart", nil))
	e.Agent.Put(Injected("shop", "bad", map[string]string{contract.AnnotationProxyUID: "-1"}))
	list := e.conflist("1.0.0", contract.BackendNFTables, nil)
	p, bad := e.newPod("shop", "cart"), e.newPod("shop", "bad")
	res, err := e.add(list, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.add(list, bad); err == nil {
		t.Fatal("ADD of a bad pod succeeded")
	}
	for _, p := range []*pod{p, bad} {
		if err := e.del(list, p); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := current.NewResultFromResult(res)
	_, reports, _ := e.Agent.Snapshot()
	find := func(event, name string) agentapi.Report {
		for _, r := range reports {
			if r.Event == event && r.Name == name {
				return r
			}
		}
		t.Fatalf("no %s report for %s in %+v", event, name, reports)
		return agentapi.Report{}
	}
	add := find(agentapi.EventAdd, "cart")
	if add.Namespace != "shop" || add.UID != cnitest.UID("cart") || add.ContainerID != p.RT.ContainerID || add.Netns != p.NS.Path() ||
		add.IfName != "eth0" || add.State != agentapi.StateCaptured || add.Backend != contract.BackendNFTables || add.Settings == nil ||
		len(add.PodIPs) != 1 || add.PodIPs[0] != r.IPs[0].Address.IP.String() || add.Time.IsZero() || add.Duration <= 0 {
		t.Errorf("ADD report: %+v", add)
	}
	if d := rules.Diff(expected(t, contract.BackendNFTables, Injected("", "", nil).Annotations), add.Rules); len(d) > 0 {
		t.Errorf("ADD report rules differ: %v", d)
	}
	failed := find(agentapi.EventAdd, "bad")
	if failed.State != agentapi.StateFailed || !strings.Contains(failed.Reason, contract.AnnotationProxyUID) {
		t.Errorf("failed ADD report: %+v", failed)
	}
	del := find(agentapi.EventDel, "cart")
	if del.Namespace != "shop" || del.ContainerID != p.RT.ContainerID || del.Backend != contract.BackendNFTables || del.Time.IsZero() {
		t.Errorf("DEL report: %+v", del)
	}
}

func TestConcurrentAdds(t *testing.T) {
	const n = 100
	e := newEnv(t)
	list := e.conflist("1.0.0", contract.BackendNFTables, nil)
	pods := make([]*pod, n)
	for i := range pods {
		name := fmt.Sprintf("web-%d", i)
		e.Agent.Put(Injected("shop", name, nil))
		pods[i] = e.newPod("shop", name)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			_, errs[i] = e.add(list, p)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent ADDs: %v", err)
	}
	want := expected(t, contract.BackendNFTables, Injected("", "", nil).Annotations)
	for _, p := range pods {
		assertRules(t, contract.BackendNFTables, p, want)
	}
	for i, p := range pods {
		wg.Go(func() { errs[i] = e.del(list, p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent DELs: %v", err)
	}
}
