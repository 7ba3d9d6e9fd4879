// Package cnibench measures sidelane-cni's ADD through libcni, chained after the real bridge
// and host-local plugins in real network namespaces, with the decisions answered by the node
// agent's real decision path (server.Server's unix socket + podwatch.Watcher's informer cache,
// over a client-go fake clientset whose pod GETs are counted): the chain's ADD latency (and the
// bridge alone as the peer), sidelane-cni's own execution time inside the chain (per backend)
// beside the exec time of an empty static Go binary (the floor), the plugin's start-up, the wall
// time of 100 concurrent ADDs, and the pod GETs per ADD. It needs root.
package cnibench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sidelane/sidelane/internal/agent/podwatch"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agent/server"
	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/cniplugin/cnitest"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
)

// Targets (issue 11): ratios to peers measured in the same run.
const (
	TargetExecVsFloor    = 2.0 // ADD exec p50 ≤ 2× the empty binary's exec p50
	TargetStartupVsFloor = 1.5 // VERSION p50 ≤ 1.5× the floor
	TargetBurstVsBridge  = 1.1 // 100 concurrent ADDs ≤ 1.1× bridge+host-local alone
	TargetIPTablesADDP50 = 10 * time.Millisecond
	Concurrent           = 100
	benchNode            = "bench-node"
	floorBinary          = "emptybin"
	floorPkg             = "github.com/sidelane/sidelane/bench/cnibench/emptybin"
)

// Run measures and returns the rows of area "cni".
func Run(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("cnibench: requires root (network namespaces)")
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "cnibench-")
	if err != nil {
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "bin")
	if err := cnitest.BuildPlugins(bin); err != nil {
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	rounds, pods := cfg.Rounds, 40
	if rounds <= 0 {
		rounds = 3
	}
	if cfg.Quick {
		rounds, pods = 1, 8
	}
	floor := filepath.Join(bin, floorBinary)
	build := exec.CommandContext(ctx, "go", "build", "-o", floor, floorPkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cnibench: go build %s: %w\n%s", floorPkg, err, out)
	}
	b := &bench{ctx: ctx}
	if b.host, err = cnitest.NewHost(filepath.Join(work, "host"), bin); err != nil {
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	defer b.host.Close()
	stopAgent, err := b.startAgent(ctx, filepath.Join(work, "agent-state"))
	if err != nil {
		return nil, err
	}
	defer stopAgent()

	var chain, bridge, bridgeExec, execNFT, execIPT, startup, floorExec, wall, wallBridge []float64
	var deadline time.Time
	if cfg.Budget > 0 && !cfg.Quick {
		deadline = time.Now().Add(cfg.Budget)
	}
	for r := 0; r < rounds; r++ {
		if r > 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break // over budget: report the rounds done (the notes give n)
		}
		// Interleaved: the bridge alone, the chain with each backend, the plugin's start-up,
		// then the burst.
		d, _, _, err := b.sequential(r, "bridge", contract.BackendNFTables, false, pods)
		if err != nil {
			return nil, err
		}
		bridge = append(bridge, d...)
		d, e, be, err := b.sequential(r, "nft", contract.BackendNFTables, true, pods)
		if err != nil {
			return nil, err
		}
		chain, execNFT, bridgeExec = append(chain, d...), append(execNFT, e...), append(bridgeExec, be...)
		_, e, _, err = b.sequential(r, "ipt", contract.BackendIPTables, true, pods)
		if err != nil {
			return nil, err
		}
		execIPT = append(execIPT, e...)
		su, fl, err := b.startup(pods, floor)
		if err != nil {
			return nil, err
		}
		startup, floorExec = append(startup, su...), append(floorExec, fl...)
		w, err := b.concurrent(r, true)
		if err != nil {
			return nil, err
		}
		wall = append(wall, w)
		if w, err = b.concurrent(r, false); err != nil {
			return nil, err
		}
		wallBridge = append(wallBridge, w)
	}

	cp50, cp90 := benchreport.Percentile(chain, 50), benchreport.Percentile(chain, 90)
	ep50, ep90 := benchreport.Percentile(execNFT, 50), benchreport.Percentile(execNFT, 90)
	ip50 := benchreport.Percentile(execIPT, 50)
	bp50 := benchreport.Percentile(bridge, 50)
	bep50 := benchreport.Percentile(bridgeExec, 50)
	sp50 := benchreport.Percentile(startup, 50)
	fp50 := benchreport.Percentile(floorExec, 50)
	wallMed := benchreport.Percentile(wall, 50)
	wallBridgeMed := benchreport.Percentile(wallBridge, 50)
	adds := b.adds.Load()
	gets := b.podGets() - b.getsAtStart
	getsPerAdd := float64(gets) / float64(max(adds, 1))
	return []benchreport.Row{
		{Area: "cni", Name: "ADD p50, chain bridge+host-local+sidelane-cni (libcni)", Unit: "ms", Ours: cp50,
			OursMin: slices.Min(chain), OursMax: slices.Max(chain), Peer: "bridge+host-local alone", PeerVal: bp50,
			Note:    fmt.Sprintf("p90 %.1f ms; sidelane-cni adds %.1f ms to the chain; n=%d ADDs per row in %d interleaved rounds", cp90, cp50-bp50, len(chain), len(wall)),
			Latency: points(chain)},
		{Area: "cni", Name: "empty static Go binary exec p50 (the floor)", Unit: "ms", Ours: fp50,
			OursMin: slices.Min(floorExec), OursMax: slices.Max(floorExec),
			Note: "func main() {}, built like sidelane-cni (CGO off): process start and Go runtime, the floor under every plugin exec on this machine; the peer of the next two rows"},
		{Area: "cni", Name: "sidelane-cni ADD exec p50 (nftables)", Unit: "ms", Ours: ep50,
			OursMin: slices.Min(execNFT), OursMax: slices.Max(execNFT), Peer: "empty static Go binary exec (floor)", PeerVal: fp50, Ratio: ep50 / fp50,
			Target: fmt.Sprintf("≤ %.1f× floor", TargetExecVsFloor), Pass: benchreport.Pass(ep50 <= TargetExecVsFloor*fp50),
			Note: fmt.Sprintf("ratio = ours/floor (lower is better); p90 %.1f ms; process start, decision from the agent, rules applied in the netns, result printed; the bridge plugin's own exec in the same chains %.1f ms", ep90, bep50)},
		{Area: "cni", Name: "sidelane-cni start-up: exec with CNI_COMMAND=VERSION, p50", Unit: "ms", Ours: sp50,
			OursMin: slices.Min(startup), OursMax: slices.Max(startup), Peer: "empty static Go binary exec (floor)", PeerVal: fp50, Ratio: sp50 / fp50,
			Target: fmt.Sprintf("≤ %.1f× floor", TargetStartupVsFloor), Pass: benchreport.Pass(sp50 <= TargetStartupVsFloor*fp50),
			Note: "ratio = ours/floor (lower is better); process start, Go runtime and package initialisation, one line printed"},
		{Area: "cni", Name: "sidelane-cni ADD exec p50 (iptables)", Unit: "ms", Ours: ip50,
			OursMin: slices.Min(execIPT), OursMax: slices.Max(execIPT), Target: "≤ 10 ms", Pass: benchreport.Pass(ip50 <= ms(TargetIPTablesADDP50)),
			Note: fmt.Sprintf("p90 %.1f ms; iptables-restore per family", benchreport.Percentile(execIPT, 90))},
		{Area: "cni", Name: fmt.Sprintf("%d concurrent ADDs, wall time (full chain)", Concurrent), Unit: "ms", Ours: wallMed,
			OursMin: slices.Min(wall), OursMax: slices.Max(wall), Peer: "bridge+host-local alone, 100 at once", PeerVal: wallBridgeMed, Ratio: wallMed / wallBridgeMed,
			Target: fmt.Sprintf("≤ %.1f× peer", TargetBurstVsBridge), Pass: benchreport.Pass(wallMed <= TargetBurstVsBridge*wallBridgeMed),
			Note: fmt.Sprintf("ratio = ours/peer (lower is better); sidelane-cni adds %.0f ms to the burst; n=%d bursts each", wallMed-wallBridgeMed, len(wall))},
		{Area: "cni", Name: "pod GETs to the API server per ADD (agent cache hit)", Unit: "GETs", Ours: getsPerAdd,
			Target: "0", Pass: benchreport.Pass(gets == 0),
			Note: fmt.Sprintf("%d pod GETs (client-go fake clientset's recorded actions) and %d agent cache misses over %d decided ADDs, every pod in the agent's informer cache before its ADD", gets, b.misses.Load(), adds)},
	}, nil
}

type bench struct {
	ctx  context.Context
	host *cnitest.Host

	// The agent's decision path.
	client      *fake.Clientset
	watcher     *podwatch.Watcher
	misses      atomic.Int64
	adds        atomic.Int64 // Decide requests answered
	getsAtStart int
}

// startAgent replaces the host's stand-in agent with the node agent's own decision path on the
// same socket: server.Server (the socket's protocol sniffing and cnirpc) answering from a
// podwatch.Watcher whose informer runs over a client-go fake clientset, and the record kept in
// stateDir and written behind as the agent does.
func (b *bench) startAgent(ctx context.Context, stateDir string) (stop func(), err error) {
	b.host.Agent.Down()
	b.client = fake.NewClientset()
	store, err := record.Open(stateDir, 0)
	if err != nil {
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	stopWriteBehind := store.WriteBehind(record.DefaultWriteDelay, nil)
	w := podwatch.NewWatcher()
	w.Client, w.Node, w.Excluded, w.Store = b.client, benchNode, contract.DefaultExcludeNamespaces, store
	w.Check = func(context.Context, record.PodInfo) (time.Duration, error) { return 0, nil }
	w.OnMiss = func(string) { b.misses.Add(1) }
	b.watcher = w
	srv := &server.Server{Node: benchNode, Store: store,
		Decider: func(ctx context.Context, req cnirpc.DecideRequest) (cnirpc.Decision, error) {
			b.adds.Add(1)
			return w.Decide(ctx, req)
		}}
	l, err := server.ListenUnix(b.host.AgentSock)
	if err != nil {
		stopWriteBehind()
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(actx) })
	wg.Go(func() { srv.ServeUnix(actx, l, srv.UnixHandler()) })
	stop = func() { cancel(); wg.Wait(); stopWriteBehind() }
	deadline := time.Now().Add(30 * time.Second)
	for !w.Synced() {
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("cnibench: the agent's pod informer did not sync within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.getsAtStart = b.podGets()
	return stop, nil
}

// podGets counts the pod GETs the agent made to the (fake) API server.
func (b *bench) podGets() int {
	n := 0
	for _, a := range b.client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "pods" {
			n++
		}
	}
	return n
}

// put creates the pod for the agent and waits until its informer has it, as on a node where
// the scheduler's binding reaches the agent before the kubelet creates the sandbox.
func (b *bench) put(p cnitest.Pod) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: k8stypes.UID(cnitest.UID(p.Name)), Labels: p.Labels, Annotations: p.Annotations},
		Spec:       corev1.PodSpec{NodeName: benchNode},
	}
	for _, c := range p.Containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "img"})
	}
	if _, err := b.client.CoreV1().Pods(p.Namespace).Create(b.ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("cnibench: create pod %s: %w", p.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !b.watcher.Cached(p.Namespace, p.Name) {
		if time.Now().After(deadline) {
			return fmt.Errorf("cnibench: pod %s not in the agent's cache after 10s", p.Name)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sequential ADDs n pods one after the other and returns each chain ADD's latency, each
// sidelane-cni exec time and each bridge exec time (its host-local IPAM exec included) (ms);
// every pod is deleted and its netns removed afterwards.
func (b *bench) sequential(round int, tag, backend string, plugin bool, n int) (chain, exec, bridgeExec []float64, err error) {
	list, err := b.host.Conflist("1.0.0", backend, plugin, map[string]any{"log_level": "info"})
	if err != nil {
		return nil, nil, nil, err
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%d-%d", tag, round, i)
		if err := b.put(cnitest.Injected("bench", name, nil)); err != nil {
			return nil, nil, nil, err
		}
		p, err := cnitest.NewPodNS("bench", name)
		if err != nil {
			return nil, nil, nil, err
		}
		start := time.Now()
		_, err = b.host.Add(b.ctx, list, p)
		d := time.Since(start)
		if err == nil {
			for _, c := range b.host.Exec.Find(contract.PluginBinary, "ADD", p.RT.ContainerID) {
				exec = append(exec, ms(c.Duration))
			}
			for _, c := range b.host.Exec.Find("bridge", "ADD", p.RT.ContainerID) {
				bridgeExec = append(bridgeExec, ms(c.Duration))
			}
			err = b.host.Del(b.ctx, list, p)
		}
		p.Close()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("cnibench: %s: %w", name, err)
		}
		chain = append(chain, ms(d))
	}
	b.host.Exec.Reset()
	return chain, exec, bridgeExec, nil
}

// startup execs sidelane-cni n times with CNI_COMMAND=VERSION (process start, the Go runtime
// and package initialisation, one line printed) interleaved with n execs of the empty binary
// floor (the floor under every command), and returns each wall time (ms).
func (b *bench) startup(n int, floor string) (plugin, empty []float64, err error) {
	bin := filepath.Join(b.host.BinDir, contract.PluginBinary)
	run := func(path string, env []string) (float64, error) {
		cmd := exec.CommandContext(b.ctx, path)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
		start := time.Now()
		if o, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("cnibench: %s: %w: %s", path, err, o)
		}
		return ms(time.Since(start)), nil
	}
	for range n {
		d, err := run(bin, []string{"CNI_COMMAND=VERSION"})
		if err != nil {
			return nil, nil, err
		}
		plugin = append(plugin, d)
		if d, err = run(floor, nil); err != nil {
			return nil, nil, err
		}
		empty = append(empty, d)
	}
	return plugin, empty, nil
}

// concurrent ADDs Concurrent pods at once and returns the wall time (ms); with plugin false
// the chain stops after the bridge (the peer).
func (b *bench) concurrent(round int, plugin bool) (float64, error) {
	list, err := b.host.Conflist("1.0.0", contract.BackendNFTables, plugin, map[string]any{"log_level": "info"})
	if err != nil {
		return 0, err
	}
	pods := make([]*cnitest.PodNS, Concurrent)
	defer func() {
		for _, p := range pods {
			if p != nil {
				p.Close()
			}
		}
	}()
	for i := range pods {
		name := fmt.Sprintf("burst-%d-%t-%d", round, plugin, i)
		if err := b.put(cnitest.Injected("bench", name, nil)); err != nil {
			return 0, err
		}
		if pods[i], err = cnitest.NewPodNS("bench", name); err != nil {
			return 0, err
		}
	}
	errs := make([]error, len(pods))
	run := func(fn func(*libcni.NetworkConfigList, *cnitest.PodNS) error) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for i, p := range pods {
			wg.Go(func() { errs[i] = fn(list, p) })
		}
		wg.Wait()
		return time.Since(start)
	}
	wall := run(func(l *libcni.NetworkConfigList, p *cnitest.PodNS) error {
		_, err := b.host.Add(b.ctx, l, p)
		return err
	})
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("cnibench: concurrent ADDs: %w", err)
	}
	run(func(l *libcni.NetworkConfigList, p *cnitest.PodNS) error { return b.host.Del(b.ctx, l, p) })
	b.host.Exec.Reset()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("cnibench: concurrent DELs: %w", err)
	}
	return ms(wall), nil
}

func points(v []float64) []benchreport.Point {
	var out []benchreport.Point
	for _, p := range []float64{50, 90, 99} {
		out = append(out, benchreport.Point{Percentile: p, Millis: benchreport.Percentile(v, p)})
	}
	return out
}
