// Package cnitest is the harness that the plugin's conformance tests and its benchmark share:
// it builds the real plugins (bridge, host-local, sidelane-cni), creates a test-owned "host"
// network namespace where the plugins run, serves pods from a small stand-in for the
// Kubernetes API server listening inside that namespace, and drives the chain through libcni,
// recording every plugin call. Nothing it creates touches the machine's own network; Close
// removes it all. It needs root.
package cnitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

// Packages built by BuildPlugins.
const (
	BridgePkg    = "github.com/containernetworking/plugins/plugins/main/bridge"
	HostLocalPkg = "github.com/containernetworking/plugins/plugins/ipam/host-local"
	PluginPkg    = "github.com/sidelane/sidelane/cni-plugin"
)

// BuildPlugins builds bridge, host-local and sidelane-cni into dir.
func BuildPlugins(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build plugins: %w", err)
	}
	for _, b := range []struct{ pkg, out string }{
		{BridgePkg, filepath.Join(dir, "bridge")},
		{HostLocalPkg, filepath.Join(dir, "host-local")},
		{PluginPkg, filepath.Join(dir, contract.PluginBinary)},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// LockedBuffer is a bytes.Buffer safe for concurrent writers (the plugins' stderr).
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Call is one plugin execution seen by libcni.
type Call struct {
	Plugin, Command, ContainerID string
	Stdin, Stdout                []byte
	Environ                      []string
	Err                          error
	Duration                     time.Duration // wall time of the plugin's execution
}

// Exec is libcni's real executor, recording every call.
type Exec struct {
	invoke.DefaultExec
	mu    sync.Mutex
	calls []Call
}

// ExecPlugin runs the plugin and records the call.
func (r *Exec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	start := time.Now()
	out, err := r.DefaultExec.ExecPlugin(ctx, path, stdin, environ)
	c := Call{Plugin: filepath.Base(path), Stdin: stdin, Stdout: out, Environ: environ, Err: err, Duration: time.Since(start)}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			c.Command = v
		}
		if v, ok := strings.CutPrefix(kv, "CNI_CONTAINERID="); ok {
			c.ContainerID = v
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return out, err
}

// Reset forgets the recorded calls.
func (r *Exec) Reset() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// Find returns the recorded calls of plugin with command for containerID.
func (r *Exec) Find(plugin, command, containerID string) []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Call
	for _, c := range r.calls {
		if c.Plugin == plugin && c.Command == command && c.ContainerID == containerID {
			out = append(out, c)
		}
	}
	return out
}

// Pod describes a pod served by the stand-in API server.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	Annotations     map[string]string
	Containers      []string
	NativeSidecars  []string
}

// UID is the uid the stand-in gives the pod called name.
func UID(name string) string { return "uid-" + name }

// Injected returns an injected pod with the default redirect annotations plus extra.
func Injected(namespace, name string, extra map[string]string) Pod {
	ann := redirect.DefaultAnnotations()
	ann[contract.StatusAnnotation] = `{"containers":["sidelane-proxy"],"version":"test"}`
	for k, v := range extra {
		ann[k] = v
	}
	return Pod{Namespace: namespace, Name: name, Annotations: ann, Containers: []string{"app", contract.ProxyContainerName}}
}

// APIServer is the stand-in for the Kubernetes API server: GET of pods only.
type APIServer struct {
	mu   sync.Mutex
	pods map[string][]byte
	srv  *httptest.Server
}

func (a *APIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var nsName, name string
	if _, err := fmt.Sscanf(strings.ReplaceAll(r.URL.Path, "/", " "), " api v1 namespaces %s pods %s", &nsName, &name); err != nil || r.Method != http.MethodGet {
		http.Error(w, "unsupported", http.StatusNotFound)
		return
	}
	a.mu.Lock()
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

// Put serves p (replacing an earlier pod of the same name).
func (a *APIServer) Put(p Pod) {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: k8stypes.UID(UID(p.Name)), Labels: p.Labels, Annotations: p.Annotations},
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
		panic(err) // a corev1.Pod always marshals
	}
	a.mu.Lock()
	a.pods[p.Namespace+"/"+p.Name] = body
	a.mu.Unlock()
}

// URL is the stand-in's address (reachable from inside the host netns only).
func (a *APIServer) URL() string { return a.srv.URL }

// Host is a test-owned "host" network namespace where the plugins run, with the stand-in API
// server, a kubeconfig for it, libcni and the plugins' stderr.
type Host struct {
	NS         ns.NetNS
	Dir        string
	BinDir     string
	API        *APIServer
	Kubeconfig string
	AgentSock  string // nobody listens unless the caller serves it
	StateDir   string
	Exec       *Exec
	CNI        *libcni.CNIConfig
	Stderr     *LockedBuffer
}

// NewHost creates a host netns and its stand-in API server; dir is scratch space, binDir holds
// the plugins. Close removes it.
func NewHost(dir, binDir string) (_ *Host, err error) {
	h := &Host{Dir: dir, BinDir: binDir, API: &APIServer{pods: map[string][]byte{}}, Stderr: &LockedBuffer{}}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("host dir: %w", err)
	}
	if h.NS, err = testutils.NewNS(); err != nil {
		return nil, fmt.Errorf("host netns: %w", err)
	}
	var l net.Listener
	if err := h.Do(func() error {
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
		return nil, fmt.Errorf("stand-in API server: %w", err)
	}
	h.API.srv = httptest.NewUnstartedServer(h.API)
	h.API.srv.Listener.Close()
	h.API.srv.Listener = l
	h.API.srv.Start()
	if h.Kubeconfig, err = h.WriteKubeconfig("kubeconfig", h.API.URL()); err != nil {
		return nil, err
	}
	h.AgentSock = filepath.Join(dir, "agent.sock")
	h.StateDir = filepath.Join(dir, "state")
	h.Exec = &Exec{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: h.Stderr}}}
	h.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), h.Exec)
	return h, nil
}

// Close stops the API server and removes the host netns.
func (h *Host) Close() {
	if h.API.srv != nil {
		h.API.srv.Close()
	}
	if h.NS != nil {
		h.NS.Close()
		testutils.UnmountNS(h.NS)
	}
}

// Do runs fn in the host netns, so that the plugins it execs run there.
func (h *Host) Do(fn func() error) error {
	var fnErr error
	if err := h.NS.Do(func(ns.NetNS) error { fnErr = fn(); return nil }); err != nil {
		return err
	}
	return fnErr
}

// WriteKubeconfig writes a kubeconfig for server into the scratch dir.
func (h *Host) WriteKubeconfig(name, server string) (string, error) {
	path := filepath.Join(h.Dir, name)
	kc := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: %q}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n", server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return path, nil
}

// Conflist is the network: bridge + host-local (10.250.0.0/16 on bridge slbr0, inside the host
// netns), then sidelane-cni with the given backend and extra fields. With plugin false the list
// stops after the bridge (to measure the bridge alone).
func (h *Host) Conflist(version, backend string, plugin bool, fields map[string]any) (*libcni.NetworkConfigList, error) {
	plugins := []any{
		map[string]any{
			"type": "bridge", "bridge": "slbr0", "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{
				"type": "host-local", "dataDir": filepath.Join(h.Dir, "ipam"),
				"ranges": [][]map[string]string{{{"subnet": "10.250.0.0/16"}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		},
	}
	if plugin {
		conf := map[string]any{
			"type": contract.PluginType, "kubeconfig": h.Kubeconfig, "agent_socket": h.AgentSock,
			"backend": backend, "log_level": "debug", "state_dir": h.StateDir,
		}
		for k, v := range fields {
			conf[k] = v
		}
		plugins = append(plugins, conf)
	}
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": "sidelane-test", "plugins": plugins})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// PodNS is a pod sandbox: a fresh netns and the runtime config that names it.
type PodNS struct {
	NS ns.NetNS
	RT *libcni.RuntimeConf
}

// NewPodNS creates the sandbox of pod namespace/name (no pod identity when name is empty).
func NewPodNS(namespace, name string) (*PodNS, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, fmt.Errorf("pod netns: %w", err)
	}
	args := [][2]string{{"IgnoreUnknown", "1"}}
	if name != "" {
		args = append(args, [2]string{"K8S_POD_NAMESPACE", namespace}, [2]string{"K8S_POD_NAME", name}, [2]string{"K8S_POD_UID", UID(name)})
	}
	return &PodNS{NS: n, RT: &libcni.RuntimeConf{ContainerID: "ctr-" + filepath.Base(n.Path()), NetNS: n.Path(), IfName: "eth0", Args: args}}, nil
}

// Close removes the pod's netns.
func (p *PodNS) Close() error {
	p.NS.Close()
	return testutils.UnmountNS(p.NS)
}

// Add runs ADD of list for p from inside the host netns.
func (h *Host) Add(ctx context.Context, list *libcni.NetworkConfigList, p *PodNS) (res types.Result, err error) {
	err = h.Do(func() error {
		res, err = h.CNI.AddNetworkList(ctx, list, p.RT)
		return err
	})
	return res, err
}

// Check runs CHECK of list for p.
func (h *Host) Check(ctx context.Context, list *libcni.NetworkConfigList, p *PodNS) error {
	return h.Do(func() error { return h.CNI.CheckNetworkList(ctx, list, p.RT) })
}

// Del runs DEL of list for p.
func (h *Host) Del(ctx context.Context, list *libcni.NetworkConfigList, p *PodNS) error {
	return h.Do(func() error { return h.CNI.DelNetworkList(ctx, list, p.RT) })
}
