package cniplugin_test

// Conformance tests: the real sidelane-cni binary, chained after the real bridge and host-local
// plugins, driven by libcni in real network namespaces, with the pod served by a small stand-in
// for the API server. Everything runs inside a test-owned "host" network namespace so that the
// bridge, its addresses and the stand-in API server never touch the machine's own network.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
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
			if err := BuildPlugins(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			binDir = dir
		}
		return m.Run()
	}())
}

// BuildPlugins builds bridge, host-local and sidelane-cni into dir.
func BuildPlugins(dir string) error {
	for _, pkg := range []string{
		"github.com/containernetworking/plugins/plugins/main/bridge",
		"github.com/containernetworking/plugins/plugins/ipam/host-local",
		"github.com/sidelane/sidelane/cni-plugin",
	} {
		out := dir
		if strings.HasSuffix(pkg, "/cni-plugin") {
			out = filepath.Join(dir, contract.PluginBinary)
		}
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}

// lockedBuffer collects the plugins' stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// call is one plugin execution seen by libcni.
type call struct {
	plugin, command, containerID string
	stdin, stdout                []byte
	environ                      []string
	err                          error
}

// recExec is libcni's real executor, recording every call.
type recExec struct {
	invoke.DefaultExec
	mu    sync.Mutex
	calls []call
}

func (r *recExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	out, err := r.DefaultExec.ExecPlugin(ctx, path, stdin, environ)
	c := call{plugin: filepath.Base(path), stdin: stdin, stdout: out, environ: environ, err: err}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			c.command = v
		}
		if v, ok := strings.CutPrefix(kv, "CNI_CONTAINERID="); ok {
			c.containerID = v
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return out, err
}

func (r *recExec) find(plugin, command, containerID string) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.plugin == plugin && c.command == command && c.containerID == containerID {
			out = append(out, c)
		}
	}
	return out
}

// apiServer is the stand-in for the Kubernetes API server: GET of pods only.
type apiServer struct {
	mu   sync.Mutex
	pods map[string][]byte
	srv  *httptest.Server
	gets int
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var nsName, name string
	if _, err := fmt.Sscanf(strings.ReplaceAll(r.URL.Path, "/", " "), " api v1 namespaces %s pods %s", &nsName, &name); err != nil || r.Method != http.MethodGet {
		http.Error(w, "unsupported", http.StatusNotFound)
		return
	}
	a.mu.Lock()
	a.gets++
	body, ok := a.pods[nsName+"/"+name]
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"pods %q not found"}`, name)
		return
	}
	w.Write(body)
}

// Pod describes a pod served by the stand-in.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	Annotations     map[string]string
	Containers      []string
	NativeSidecars  []string
}

// Injected returns an injected pod with the default redirect annotations plus extra.
func Injected(namespace, name string, extra map[string]string) Pod {
	ann := redirect.DefaultAnnotations()
	ann[contract.StatusAnnotation] = `{"containers":["sidelane-proxy"],"version":"test"}`
	for k, v := range extra {
		ann[k] = v
	}
	return Pod{Namespace: namespace, Name: name, Annotations: ann, Containers: []string{"app", contract.ProxyContainerName}}
}

func (a *apiServer) put(p Pod) {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: k8stypes.UID("uid-" + podUID(p.Name)), Labels: p.Labels, Annotations: p.Annotations},
	}
	for _, c := range p.Containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "img"})
	}
	always := corev1.ContainerRestartPolicyAlways
	for _, c := range p.NativeSidecars {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: c, Image: "img", RestartPolicy: &always})
	}
	body, err := json.Marshal(pod)
	if err != nil {
		panic(err)
	}
	a.mu.Lock()
	a.pods[p.Namespace+"/"+p.Name] = body
	a.mu.Unlock()
}

func podUID(name string) string { return name }

// env is one test's world: a host netns with the bridge and the stand-in API server.
type env struct {
	t          testing.TB
	host       ns.NetNS
	dir        string
	cni        *libcni.CNIConfig
	exec       *recExec
	stderr     *lockedBuffer
	api        *apiServer
	kubeconfig string
	agentSock  string
	stateDir   string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if binDir == "" {
		t.Fatal("plugins not built (TestMain)")
	}
	e := &env{t: t, dir: t.TempDir(), stderr: &lockedBuffer{}, api: &apiServer{pods: map[string][]byte{}}}
	host, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	e.host = host
	t.Cleanup(func() {
		host.Close()
		testutils.UnmountNS(host)
	})
	var l net.Listener
	if err := host.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.api.srv = httptest.NewUnstartedServer(e.api)
	e.api.srv.Listener.Close()
	e.api.srv.Listener = l
	e.api.srv.Start()
	t.Cleanup(e.api.srv.Close)
	e.kubeconfig = e.writeKubeconfig("kubeconfig", e.api.srv.URL)
	e.agentSock = filepath.Join(e.dir, "agent.sock") // nobody listens unless a test starts an agent
	e.stateDir = filepath.Join(e.dir, "state")
	e.exec = &recExec{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: e.stderr}}}
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(e.dir, "cache"), e.exec)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugins' stderr:\n%s", e.stderr)
		}
	})
	return e
}

func (e *env) writeKubeconfig(name, server string) string {
	path := filepath.Join(e.dir, name)
	kc := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: %q}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n", server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// conflist is the network: bridge + host-local, then sidelane-cni with the given fields.
func (e *env) conflist(version, backend string, fields map[string]any) *libcni.NetworkConfigList {
	e.t.Helper()
	plugin := map[string]any{
		"type": contract.PluginType, "kubeconfig": e.kubeconfig, "agent_socket": e.agentSock,
		"backend": backend, "log_level": "debug", "state_dir": e.stateDir,
	}
	for k, v := range fields {
		plugin[k] = v
	}
	list := map[string]any{
		"cniVersion": version,
		"name":       "sidelane-test",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "slbr0", "isGateway": true, "ipMasq": false,
				"ipam": map[string]any{
					"type": "host-local", "dataDir": filepath.Join(e.dir, "ipam"),
					"ranges": [][]map[string]string{{{"subnet": "10.250.0.0/16"}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			plugin,
		},
	}
	b, err := json.Marshal(list)
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// pod is a pod sandbox: a fresh netns and the runtime config that names it.
type pod struct {
	netns ns.NetNS
	rt    *libcni.RuntimeConf
}

func (e *env) newPod(namespace, name string) *pod {
	e.t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	args := [][2]string{{"IgnoreUnknown", "1"}}
	if name != "" {
		args = append(args, [2]string{"K8S_POD_NAMESPACE", namespace}, [2]string{"K8S_POD_NAME", name}, [2]string{"K8S_POD_UID", "uid-" + podUID(name)})
	}
	return &pod{netns: n, rt: &libcni.RuntimeConf{ContainerID: "ctr-" + filepath.Base(n.Path()), NetNS: n.Path(), IfName: "eth0", Args: args}}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

// inHost runs fn in the test's host netns so that the plugins run there.
func (e *env) inHost(fn func() error) error {
	var fnErr error
	if err := e.host.Do(func(ns.NetNS) error { fnErr = fn(); return nil }); err != nil {
		return err
	}
	return fnErr
}

func (e *env) add(list *libcni.NetworkConfigList, p *pod) (types.Result, error) {
	var res types.Result
	err := e.inHost(func() error {
		var err error
		res, err = e.cni.AddNetworkList(ctx(e.t), list, p.rt)
		return err
	})
	return res, err
}

func (e *env) check(list *libcni.NetworkConfigList, p *pod) error {
	return e.inHost(func() error { return e.cni.CheckNetworkList(ctx(e.t), list, p.rt) })
}

func (e *env) del(list *libcni.NetworkConfigList, p *pod) error {
	return e.inHost(func() error { return e.cni.DelNetworkList(ctx(e.t), list, p.rt) })
}

// live reads our rules in the pod's netns with the named backend; expected is what the
// settings of annotations ask for.
func live(t testing.TB, backend string, p *pod) []string {
	t.Helper()
	b, err := capture.New(backend)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := capture.InNetns(p.netns.Path(), func() error {
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
		t.Fatalf("rules in %s differ from the expected ones:\n%s", p.netns.Path(), strings.Join(d, "\n"))
	}
}

// assertPassThrough checks every sidelane-cni ADD of p: stdout is exactly one JSON document and
// equals the prevResult it was given; and the chain's result describes the pod's real eth0.
func (e *env) assertPassThrough(version string, p *pod, res types.Result) {
	t := e.t
	t.Helper()
	calls := e.exec.find(contract.PluginBinary, "ADD", p.rt.ContainerID)
	if len(calls) == 0 {
		t.Fatal("sidelane-cni ADD was not called")
	}
	for _, c := range calls {
		var conf struct {
			PrevResult json.RawMessage `json:"prevResult"`
		}
		if err := json.Unmarshal(c.stdin, &conf); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(c.stdout))
		var got, want any
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("stdout is not a JSON result: %v\n%s", err, c.stdout)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("stdout carries more than the result:\n%s", c.stdout)
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
	if err := p.netns.Do(func(ns.NetNS) error {
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
				e.api.put(podSpec)
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
				if err := capture.InNetns(p.netns.Path(), func() error { return b.Apply(rules.Build(other, rules.IPv4)) }); err != nil {
					t.Fatal(err)
				}
				err = e.check(list, p)
				if err == nil || !strings.Contains(err.Error(), "differ from the expected") || !strings.Contains(err.Error(), "15999") {
					t.Fatalf("CHECK after tampering: %v", err)
				}

				// Repeated ADD of sidelane-cni (the runtime retrying): exactly one copy, ours.
				first := e.exec.find(contract.PluginBinary, "ADD", p.rt.ContainerID)[0]
				for range 2 {
					if err := e.inHost(func() error {
						_, err := e.exec.ExecPlugin(ctx(t), filepath.Join(binDir, contract.PluginBinary), first.stdin, first.environ)
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
				if entries, _ := os.ReadDir(e.stateDir); len(entries) != 0 {
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
		e.api.put(p)
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
	e.api.put(native)
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
			e.api.put(Injected("shop", "bad", map[string]string{contract.AnnotationExcludeOutboundCIDRs: "10.0.0.0/33"}))
			list := e.conflist("1.0.0", backend, nil)
			p := e.newPod("shop", "bad")
			_, err := e.add(list, p)
			if err == nil || !strings.Contains(err.Error(), contract.AnnotationExcludeOutboundCIDRs) || !strings.Contains(err.Error(), "10.0.0.0/33") {
				t.Fatalf("ADD of a pod with a bad annotation: %v", err)
			}
			if got := live(t, backend, p); len(got) != 0 {
				t.Errorf("rules left after a failed ADD: %v", got)
			}
			if entries, _ := os.ReadDir(e.stateDir); len(entries) != 0 {
				t.Errorf("state left after a failed ADD: %v", entries)
			}
			if err := e.del(list, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestChainAPIServerDown(t *testing.T) {
	e := newEnv(t)
	var addr string
	if err := e.inHost(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	list := e.conflist("1.0.0", contract.BackendNFTables, map[string]any{"kubeconfig": e.writeKubeconfig("down", "http://"+addr)})
	p := e.newPod("shop", "cart")
	_, err := e.add(list, p)
	if err == nil || !strings.Contains(err.Error(), "shop/cart") || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("ADD with the API server down: %v", err)
	}
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Errorf("error code: %v, want %d (try again later)", err, types.ErrTryAgainLater)
	}
	// The system namespace does not need the API server.
	sys := e.newPod(contract.SystemNamespace, "agent")
	if _, err := e.add(list, sys); err != nil {
		t.Fatalf("ADD of the agent's own pod with the API server down: %v", err)
	}
	for _, p := range []*pod{p, sys} {
		if err := e.del(list, p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChainStatusAndGC(t *testing.T) {
	e := newEnv(t)
	e.api.put(Injected("shop", "a", nil))
	e.api.put(Injected("shop", "b", nil))
	list := e.conflist("1.1.0", contract.BackendNFTables, nil)
	if err := e.inHost(func() error { return e.cni.GetStatusNetworkList(ctx(t), list) }); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	missing := e.conflist("1.1.0", contract.BackendNFTables, map[string]any{"kubeconfig": filepath.Join(e.dir, "nope")})
	err := e.inHost(func() error { return e.cni.GetStatusNetworkList(ctx(t), missing) })
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("STATUS without kubeconfig: %v", err)
	}
	a, b := e.newPod("shop", "a"), e.newPod("shop", "b")
	for _, p := range []*pod{a, b} {
		if _, err := e.add(list, p); err != nil {
			t.Fatal(err)
		}
	}
	// GC keeping only b: a's state goes, and (its netns still being there) its rules too.
	if err := e.inHost(func() error {
		return e.cni.GCNetworkList(ctx(t), list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: b.rt.ContainerID, IfName: "eth0"}}})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := live(t, contract.BackendNFTables, a); len(got) != 0 {
		t.Errorf("rules of a GC'd attachment left: %v", got)
	}
	entries, _ := os.ReadDir(e.stateDir)
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

// agent is a test node agent on a unix socket, collecting reports.
type agent struct {
	mu      sync.Mutex
	reports []agentapi.Report
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != agentapi.PathReports || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var rep agentapi.Report
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.reports = append(a.reports, rep)
	a.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (a *agent) snapshot() []agentapi.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agentapi.Report(nil), a.reports...)
}

func TestAgentReports(t *testing.T) {
	e := newEnv(t)
	l, err := net.Listen("unix", e.agentSock)
	if err != nil {
		t.Fatal(err)
	}
	ag := &agent{}
	srv := &http.Server{Handler: ag}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	e.api.put(Injected("shop", "cart", nil))
	e.api.put(Injected("shop", "bad", map[string]string{contract.AnnotationProxyUID: "-1"}))
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
	reports := ag.snapshot()
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
	if add.Namespace != "shop" || add.UID != "uid-cart" || add.ContainerID != p.rt.ContainerID || add.Netns != p.netns.Path() ||
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
	if del.Namespace != "shop" || del.ContainerID != p.rt.ContainerID || del.Backend != contract.BackendNFTables || del.Time.IsZero() {
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
		e.api.put(Injected("shop", name, nil))
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
