//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/agentapi/unixhttp"
	"github.com/sidelane/sidelane/internal/contract"
)

// The fault tests (issue 13) run after every other test (this file sorts after e2e_test.go):
// they kill and restart parts of the node. Each prints its figures on a line starting with
// "FIGURES". Pods are pause-mode demo apps (injected: proxy + app) to keep the node's load low.

// figures logs one line of a fault test's figures.
func figures(t *testing.T, format string, args ...any) {
	t.Helper()
	status := ""
	if t.Failed() {
		status = "(test FAILED; see above) "
	}
	t.Logf("FIGURES %s: %s"+format, append([]any{t.Name(), status}, args...)...)
}

// clusterSh runs hack/cluster.sh with the harness's environment.
func (e *env) clusterSh(t *testing.T, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := run(filepath.Join(e.root, "hack", "cluster.sh"), args...)
	if err != nil {
		t.Fatalf("hack/cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return time.Since(start)
}

// ctr runs ctr against the cluster's containerd.
func (e *env) ctr(args ...string) (string, error) {
	return run("ctr", append([]string{"--address", filepath.Join(e.clusterDir, "containerd", "containerd.sock"), "-n", "k8s.io"}, args...)...)
}

// agentPID is the host PID of the agent container's process.
func (e *env) agentPID(t *testing.T, agentPod *corev1.Pod) int {
	t.Helper()
	if len(agentPod.Status.ContainerStatuses) == 0 {
		t.Fatalf("agent pod %s has no container status", agentPod.Name)
	}
	_, id, ok := strings.Cut(agentPod.Status.ContainerStatuses[0].ContainerID, "://")
	if !ok {
		t.Fatalf("agent container ID %q", agentPod.Status.ContainerStatuses[0].ContainerID)
	}
	out, err := e.ctr("tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("ctr tasks ls: %q: %v", line, err)
			}
			return pid
		}
	}
	t.Fatalf("the agent container %s is not among the running tasks:\n%s", id, out)
	return 0
}

// burst creates n injected pause pods named prefix-0.. at once (one goroutine each).
func (e *env) burst(t *testing.T, ns, prefix string, n int) []string {
	t.Helper()
	names, err := e.burstErr(ns, prefix, n)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// burstErr is burst for another goroutine than the test's: it returns the first error.
func (e *env) burstErr(ns, prefix string, n int) ([]string, error) {
	names := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.kube.CoreV1().Pods(ns).Create(context.Background(), clientPod(ns, names[i], podOpts{}), metav1.CreateOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return names, fmt.Errorf("create pod %s/%s: %w", ns, names[i], err)
		}
	}
	return names, nil
}

// createRetrying creates a pod, retrying while the API server is unreachable; it returns the
// number of tries.
func (e *env) createRetrying(t *testing.T, p *corev1.Pod, timeout time.Duration) (tries int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tries++
		_, err := e.kube.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
		if err == nil || (tries > 1 && apierrors.IsAlreadyExists(err)) {
			// AlreadyExists after a failed try: that try reached the API server before it went
			// away (the answer was lost), so the pod is there.
			return tries
		}
		if time.Now().After(deadline) {
			t.Fatalf("create pod %s/%s: still failing after %v (%d tries): %v", p.Namespace, p.Name, timeout, tries, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// netnsByIP maps each IPv4 address found in a runtime's network namespace (/var/run/netns/cni-*) to it.
func netnsByIP() map[string]string {
	out := map[string]string{}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, en := range entries {
		if !strings.HasPrefix(en.Name(), "cni-") {
			continue // not the runtime's: other tests on the machine make their own
		}
		s, err := run("ip", "-n", en.Name(), "-o", "-4", "addr", "show")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "inet" {
					ip, _, _ := strings.Cut(f[i+1], "/")
					out[ip] = "/var/run/netns/" + en.Name()
				}
			}
		}
	}
	return out
}

// captureResult is how a set of pods ended captured.
type captureResult struct {
	atAdd, byRepair int
	took            time.Duration // from the call until all were Ready and captured
	netns           map[string]string
	pods            map[string]*corev1.Pod
}

// waitAllCaptured waits until every named pod is Ready and its netns holds Sidelane's rules,
// then says how many the agent repaired (a RulesRepaired event) and how many were captured at ADD.
func (e *env) waitAllCaptured(t *testing.T, ns string, names []string, timeout time.Duration) captureResult {
	t.Helper()
	return e.waitAllCapturedSince(t, ns, names, timeout, time.Time{})
}

// readySince says whether the pod is Ready and became so at since or later (the API server
// keeps a pod's last status while its kubelet is down).
func readySince(p *corev1.Pod, since time.Time) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			// Condition times have one-second resolution.
			return !c.LastTransitionTime.Time.Before(since.Truncate(time.Second))
		}
	}
	return false
}

// waitAllCapturedSince is waitAllCaptured for pods that must have become Ready at since or later.
func (e *env) waitAllCapturedSince(t *testing.T, ns string, names []string, timeout time.Duration, since time.Time) captureResult {
	t.Helper()
	start := time.Now()
	res := captureResult{netns: map[string]string{}, pods: map[string]*corev1.Pod{}}
	pending := append([]string(nil), names...)
	var why []string
	for {
		l, err := e.kube.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{})
		if err == nil {
			byName := map[string]*corev1.Pod{}
			for i := range l.Items {
				byName[l.Items[i].Name] = &l.Items[i]
			}
			ips := netnsByIP()
			var still []string
			why = why[:0]
			for _, name := range pending {
				p := byName[name]
				switch {
				case p == nil:
					why = append(why, name+": absent")
				case !readySince(p, since) || p.Status.PodIP == "":
					why = append(why, fmt.Sprintf("%s: %s, not ready", name, p.Status.Phase))
				case ips[p.Status.PodIP] == "":
					why = append(why, fmt.Sprintf("%s: no netns holds %s", name, p.Status.PodIP))
				default:
					if err := captured(ips[p.Status.PodIP], p); err != nil {
						why = append(why, fmt.Sprintf("%s: %v", name, err))
						break
					}
					res.netns[name], res.pods[name] = ips[p.Status.PodIP], p
					continue
				}
				still = append(still, name)
			}
			pending = still
		} else {
			why = []string{"list pods: " + err.Error()}
		}
		if len(pending) == 0 {
			break
		}
		if time.Since(start) > timeout {
			e.dump(t, ns)
			t.Fatalf("%d of %d pods not Ready and captured after %v: %s", len(pending), len(names), timeout, strings.Join(why, "; "))
		}
		time.Sleep(time.Second)
	}
	res.took = time.Since(start)
	repaired := e.eventedPods(t, ns, "RulesRepaired")
	for _, name := range names {
		if repaired[name] {
			res.byRepair++
		} else {
			res.atAdd++
		}
	}
	return res
}

// eventedPods is the set of pods of ns that have an event with reason.
func (e *env) eventedPods(t *testing.T, ns, reason string) map[string]bool {
	t.Helper()
	evs, err := e.kube.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{FieldSelector: "reason=" + reason})
	if err != nil {
		t.Fatalf("events of %s: %v", ns, err)
	}
	out := map[string]bool{}
	for _, ev := range evs.Items {
		out[ev.InvolvedObject.Name] = true
	}
	return out
}

// recordsOnce checks that the agent holds exactly one captured record per pod, with the
// pod's current UID, and none for other pods of ns.
func recordsOnce(t *testing.T, ns string, pods map[string]*corev1.Pod) {
	t.Helper()
	l, err := agentPods(t)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range l.Items {
		if r.Namespace != ns {
			continue
		}
		seen[r.Name]++
		p, ok := pods[r.Name]
		switch {
		case !ok:
			t.Errorf("agent record of a pod that is not in the test: %+v", r)
		case r.UID != string(p.UID) || r.State != agentapi.StateCaptured:
			t.Errorf("agent record of %s: uid %s state %s (%s), want uid %s captured", r.Name, r.UID, r.State, r.Reason, p.UID)
		}
	}
	for name := range pods {
		if seen[name] != 1 {
			t.Errorf("the agent holds %d records of pod %s, want 1", seen[name], name)
		}
	}
}

// checkClean waits (bounded) until `kubectl sidelane check` exits 0: every captured pod of the
// cluster has exactly its expected rules.
func (e *env) checkClean(t *testing.T) {
	t.Helper()
	poll(t, 90*time.Second, "kubectl sidelane check exits 0", func() (bool, error) {
		out, code := e.plugin(t, "check")
		return code == 0, fmt.Errorf("exit %d: %s", code, tail(out, 20))
	})
}

// rulesNoComments is netnsRules without comment lines (iptables-save stamps the time).
func rulesNoComments(netns string) string {
	var b strings.Builder
	for _, line := range strings.Split(netnsRules(netns), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// agentMetricSumWhere sums the series of the agent's metric name whose labels contain label.
func agentMetricSumWhere(t *testing.T, name, label string) float64 {
	t.Helper()
	resp, err := unixhttp.Client(contract.DefaultAgentSocket, 10*time.Second).Get("http://sidelane-agent" + agentapi.PathMetrics)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			keep = append(keep, line)
		}
	}
	return sumSeries(t, strings.NewReader(strings.Join(keep, "\n")), name)
}

// strayRules lists the runtime's network namespaces (cni-*) that hold Sidelane rules but no IP of a Running pod:
// rules half-applied by an ADD that failed.
func (e *env) strayRules(t *testing.T) []string {
	t.Helper()
	l, err := e.kube.CoreV1().Pods("").List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for _, p := range l.Items {
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			running[p.Status.PodIP] = true
		}
	}
	owner := map[string]bool{}
	for ip, ns := range netnsByIP() {
		if running[ip] {
			owner[ns] = true
		}
	}
	var stray []string
	entries, _ := os.ReadDir("/var/run/netns")
	for _, en := range entries {
		ns := "/var/run/netns/" + en.Name()
		// Only the runtime's namespaces: other tests on the machine make their own.
		if !strings.HasPrefix(en.Name(), "cni-") || owner[ns] {
			continue
		}
		if none, err := uncaptured(ns); err == nil && !none {
			stray = append(stray, ns)
		}
	}
	return stray
}
