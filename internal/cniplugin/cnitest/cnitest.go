// Package cnitest is the harness that the plugin's conformance tests and its benchmark share:
// it builds the real plugins (bridge, host-local, sidelane-cni), creates a test-owned "host"
// network namespace where the plugins run, answers the plugin from a stand-in node agent on a
// unix socket (the real protocol, package cnirpc), and drives the chain through libcni,
// recording every plugin call. Nothing it creates touches the machine's own network; Close
// removes it all. It needs root.
package cnitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
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

	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/selection"
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

// Pod describes a pod the stand-in agent knows.
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

// Agent is the stand-in node agent: a cnirpc.Fake (the protocol's real server side and the
// agent's real decision step, cnirpc.DecisionFor, on the pods given to Put) on the plugin's
// unix socket. Down and Up stop and restart it.
type Agent struct {
	*cnirpc.Fake
	sock   string
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Put makes the agent know p (replacing an earlier pod of the same name), with uid UID(p.Name).
func (a *Agent) Put(p Pod) {
	a.SetPod(p.Name, UID(p.Name), selection.PodFacts{Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations,
		Containers: p.Containers, NativeSidecars: p.NativeSidecars})
}

// Up serves the socket (again).
func (a *Agent) Up() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancel != nil {
		return nil
	}
	os.Remove(a.sock)
	l, err := net.Listen("unix", a.sock)
	if err != nil {
		return fmt.Errorf("stand-in agent: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func(done chan struct{}) { cnirpc.Serve(ctx, l, a.Fake, 10*time.Second); close(done) }(a.done)
	return nil
}

// Down stops serving: the socket is gone, as when the agent's pod is not running.
func (a *Agent) Down() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancel == nil {
		return
	}
	a.cancel()
	<-a.done
	a.cancel = nil
	os.Remove(a.sock)
}

// Host is a test-owned "host" network namespace where the plugins run, with the stand-in node
// agent on its socket, libcni and the plugins' stderr.
type Host struct {
	NS        ns.NetNS
	Dir       string
	BinDir    string
	Agent     *Agent
	AgentSock string
	StateDir  string
	Exec      *Exec
	CNI       *libcni.CNIConfig
	Stderr    *LockedBuffer
}

// NewHost creates a host netns and starts the stand-in agent; dir is scratch space (short
// enough for a unix socket path), binDir holds the plugins. Close removes it.
func NewHost(dir, binDir string) (_ *Host, err error) {
	h := &Host{Dir: dir, BinDir: binDir, Stderr: &LockedBuffer{}}
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
	if err := h.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		return nil, fmt.Errorf("host netns loopback: %w", err)
	}
	h.AgentSock = filepath.Join(dir, "agent.sock")
	h.Agent = &Agent{Fake: &cnirpc.Fake{Excluded: contract.DefaultExcludeNamespaces}, sock: h.AgentSock}
	if err := h.Agent.Up(); err != nil {
		return nil, err
	}
	h.StateDir = filepath.Join(dir, "state")
	h.Exec = &Exec{DefaultExec: invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: h.Stderr}}}
	h.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"), h.Exec)
	return h, nil
}

// Close stops the stand-in agent and removes the host netns.
func (h *Host) Close() {
	if h.Agent != nil {
		h.Agent.Down()
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
			"type": contract.PluginType, "agent_socket": h.AgentSock,
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
