// Package cnibench measures sidelane-cni's ADD through libcni, chained after the real bridge
// and host-local plugins in real network namespaces, with the pod served by the stand-in API
// server of internal/cniplugin/cnitest: the chain's ADD latency (and the bridge alone as the
// peer), sidelane-cni's own execution time inside the chain (per backend), and the wall time
// of 100 concurrent ADDs. It needs root.
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
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/cniplugin/cnitest"
	"github.com/sidelane/sidelane/internal/contract"
)

// Targets (issue 2).
const (
	TargetADDP50     = 10 * time.Millisecond
	TargetConcurrent = 2 * time.Second
	Concurrent       = 100
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
	b := &bench{ctx: ctx}
	if b.host, err = cnitest.NewHost(filepath.Join(work, "host"), bin); err != nil {
		return nil, fmt.Errorf("cnibench: %w", err)
	}
	defer b.host.Close()

	var chain, bridge, bridgeExec, execNFT, execIPT, startup, wall, wallBridge []float64
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
		su, err := b.startup(pods)
		if err != nil {
			return nil, err
		}
		startup = append(startup, su...)
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
	wallMed := benchreport.Percentile(wall, 50)
	wallBridgeMed := benchreport.Percentile(wallBridge, 50)
	return []benchreport.Row{
		{Area: "cni", Name: "ADD p50, chain bridge+host-local+sidelane-cni (libcni)", Unit: "ms", Ours: cp50,
			OursMin: slices.Min(chain), OursMax: slices.Max(chain), Peer: "bridge+host-local alone", PeerVal: bp50,
			Note:    fmt.Sprintf("p90 %.1f ms; sidelane-cni adds %.1f ms to the chain; n=%d ADDs per row in %d interleaved rounds", cp90, cp50-bp50, len(chain), len(wall)),
			Latency: points(chain)},
		{Area: "cni", Name: "sidelane-cni ADD exec p50 (nftables)", Unit: "ms", Ours: ep50,
			OursMin: slices.Min(execNFT), OursMax: slices.Max(execNFT), Peer: "bridge ADD exec, host-local inside (same chains)", PeerVal: bep50, Ratio: bep50 / ep50,
			Target: "≤ 10 ms", Pass: benchreport.Pass(ep50 <= ms(TargetADDP50)),
			Note: fmt.Sprintf("p90 %.1f ms; process start, pod GET, rules applied in the netns, result printed; of it, start-up alone (next row) %.1f ms", ep90, sp50)},
		{Area: "cni", Name: "sidelane-cni start-up: exec with CNI_COMMAND=VERSION, p50", Unit: "ms", Ours: sp50,
			OursMin: slices.Min(startup), OursMax: slices.Max(startup),
			Note: "process start, Go runtime and package initialisation, one line printed: the floor under every command on this machine"},
		{Area: "cni", Name: "sidelane-cni ADD exec p50 (iptables)", Unit: "ms", Ours: ip50,
			OursMin: slices.Min(execIPT), OursMax: slices.Max(execIPT), Target: "≤ 10 ms", Pass: benchreport.Pass(ip50 <= ms(TargetADDP50)),
			Note: fmt.Sprintf("p90 %.1f ms; iptables-restore per family", benchreport.Percentile(execIPT, 90))},
		{Area: "cni", Name: fmt.Sprintf("%d concurrent ADDs, wall time (full chain)", Concurrent), Unit: "ms", Ours: wallMed,
			OursMin: slices.Min(wall), OursMax: slices.Max(wall), Peer: "bridge+host-local alone, 100 at once", PeerVal: wallBridgeMed,
			Target: "≤ 2000 ms", Pass: benchreport.Pass(wallMed <= ms(TargetConcurrent)),
			Note: fmt.Sprintf("sidelane-cni adds %.0f ms to the burst; n=%d bursts each", wallMed-wallBridgeMed, len(wall))},
	}, nil
}

type bench struct {
	ctx  context.Context
	host *cnitest.Host
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
		b.host.Agent.Put(cnitest.Injected("bench", name, nil))
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
// and package initialisation, one line printed: the floor under every command) and returns
// each wall time (ms).
func (b *bench) startup(n int) ([]float64, error) {
	bin := filepath.Join(b.host.BinDir, contract.PluginBinary)
	var out []float64
	for range n {
		cmd := exec.CommandContext(b.ctx, bin)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
		start := time.Now()
		if o, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("cnibench: %s VERSION: %w: %s", bin, err, o)
		}
		out = append(out, ms(time.Since(start)))
	}
	return out, nil
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
		b.host.Agent.Put(cnitest.Injected("bench", name, nil))
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
