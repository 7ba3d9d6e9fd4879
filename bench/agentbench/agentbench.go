// Package agentbench measures the node agent the way an operator meets it: `GET /v1/pods` on
// a node at its pod limit (110 pods, every one reported by the plugin) and the agent's RSS.
//
// The agent runs as a child process (the benchmark binary re-executes itself with
// ChildEnv set, see Child), with the real agent code — install, record, API server, pod
// informer — against an in-memory API server (client-go's fake clientset) holding 110 pods
// on the node, so its memory is its own and no cluster is needed.
package agentbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sidelane/sidelane/internal/agent"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/agentapi/unixhttp"
	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

// ChildEnv, when set to the child's work dir, makes the benchmark binary run the agent (Child).
const ChildEnv = "SIDELANE_BENCH_AGENT_CHILD"

// Pods is the number of pods on the benchmarked node (the kubelet's default maxPods).
const Pods = 110

const node = "bench-node"

const primary = `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0"}]}`

// Child runs the agent until SIGTERM; the benchmark binary calls it when ChildEnv is set.
func Child(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	objs := make([]runtime.Object, 0, Pods)
	for i := range Pods {
		objs = append(objs, pod(i))
	}
	client := fake.NewClientset(objs...)
	conf, bin := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin")
	cfg, err := agent.RunFlags([]string{"--node-name=" + node, "--cni-conf-dir", conf, "--cni-bin-dir", bin,
		"--plugin-binary", filepath.Join(dir, "sidelane-cni"), "--install-state-dir", filepath.Join(dir, "istate"),
		"--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "agent.sock"), "--listen=off",
		"--repair-mode=off", "--on-exit=uninstall", "--log-level=error"}, io.Discard)
	if err != nil {
		return fmt.Errorf("agent flags: %w", err)
	}
	return agent.Run(ctx, cfg, client)
}

func pod(i int) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("app-%03d", i), UID: types.UID(fmt.Sprintf("uid-%03d", i))},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip(i), PodIPs: []corev1.PodIP{{IP: ip(i)}}},
	}
	if i%2 == 0 { // half the pods carry the sidecar
		p.Annotations = map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"],"version":"bench"}`}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: contract.ProxyContainerName})
	}
	return p
}

func ip(i int) string { return fmt.Sprintf("10.250.%d.%d", i/250, 1+i%250) }

// Run starts the agent child, reports every pod as the plugin would, then times GET /v1/pods.
func Run(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	dir := cfg.WorkDir
	if err := prepare(dir); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("agent bench: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), ChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("agent bench: start agent: %w", err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	sock := filepath.Join(dir, "agent.sock")
	hc := unixhttp.Client(sock, 5*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get("http://agent" + agentapi.PathReadyz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent bench: agent not ready after 60s (last error %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	settings := redirect.Defaults()
	for i := range Pods {
		p := pod(i)
		r := agentapi.Report{Event: agentapi.EventAdd, Namespace: p.Namespace, Name: p.Name, UID: string(p.UID),
			ContainerID: fmt.Sprintf("%064d", i), Netns: fmt.Sprintf("/var/run/netns/cni-bench-%d", i), IfName: "eth0",
			PodIPs: []string{ip(i)}, State: agentapi.StateSkipped, Reason: "not injected", Time: time.Now(), Duration: 7 * time.Millisecond}
		if i%2 == 0 {
			r.State, r.Reason, r.Backend, r.Settings = agentapi.StateCaptured, "", contract.BackendNFTables, &settings
			r.Rules = []string{"table ip sidelane", "chain prerouting", "tcp redirect to :15006"}
		}
		if _, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpReport, Report: &r}, 5*time.Second); err != nil {
			return nil, fmt.Errorf("agent bench: report %s: %w", p.Name, err)
		}
	}
	n := 1000
	if cfg.Quick {
		n = 100
	}
	lat := make([]float64, 0, n)
	for range n {
		t0 := time.Now()
		resp, err := hc.Get("http://agent" + agentapi.PathPods)
		if err != nil {
			return nil, fmt.Errorf("agent bench: GET /v1/pods: %w", err)
		}
		var list agentapi.PodList
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return nil, fmt.Errorf("agent bench: GET /v1/pods: status %d, %v", resp.StatusCode, err)
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		if len(list.Items) != Pods {
			return nil, fmt.Errorf("agent bench: /v1/pods lists %d pods, want %d", len(list.Items), Pods)
		}
	}
	rss, err := rssMB(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	note := fmt.Sprintf("%d sequential GETs over the unix socket, %d pods (half captured) recorded from plugin reports", n, Pods)
	return []benchreport.Row{
		{Area: "agent", Name: "GET /v1/pods p50 (110 pods)", Unit: "ms", Ours: benchreport.Percentile(lat, 50), Note: note},
		{Area: "agent", Name: "GET /v1/pods p99 (110 pods)", Unit: "ms", Ours: benchreport.Percentile(lat, 99)},
		{Area: "agent", Name: "agent RSS (110 pods recorded)", Unit: "MB", Ours: rss},
	}, nil
}

// prepare lays out a primary conflist and a plugin binary for the agent to install.
func prepare(dir string) error {
	for _, d := range []string{filepath.Join(dir, "net.d"), filepath.Join(dir, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("agent bench: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-k8s.conflist"), []byte(primary), 0o644); err != nil {
		return fmt.Errorf("agent bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sidelane-cni"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		return fmt.Errorf("agent bench: %w", err)
	}
	return nil
}

// rssMB reads VmRSS of pid in MB.
func rssMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("agent bench: rss: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("agent bench: rss %q: %w", l, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("agent bench: no VmRSS in /proc/%d/status", pid)
}
