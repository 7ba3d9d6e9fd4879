//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFaultNodeReboot: with injected pods running, the node loses power (hack/cluster.sh
// reboot: SIGKILL of the kubelet, containerd, the shims and every pod process; the pods'
// network namespaces, the runtime state and the agent's socket dir removed) and boots again,
// the primary CNI writing its conflist from scratch (without our entry) before containerd, the
// kubelet and so the agent are back. Every injected pod ends Running with its rules in place
// (kubectl sidelane check exits 0), with no manual step.
func TestFaultNodeReboot(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	ns := e.namespace(t, "e2e-reboot", true, false)
	const n = 4
	names := e.burst(t, ns, "r", n)
	before := e.waitAllCaptured(t, ns, names, podTimeout)
	oldNetns := map[string]bool{}
	for _, p := range before.netns {
		oldNetns[p] = true
	}
	repairedBefore := e.eventedPods(t, ns, "RulesRepaired")

	start := time.Now()
	e.clusterSh(t, "reboot")
	booted := time.Since(start)
	path, cur := e.conflist(t)
	entryAtBoot := hasOurEntry(cur)
	for p := range oldNetns {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("network namespace %s of a pod survived the power loss", p)
		}
	}
	var agentName string
	poll(t, podTimeout, "the agent ready again after the boot", func() (bool, error) {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		if err != nil {
			return false, err
		}
		for i := range l.Items {
			if readySince(&l.Items[i], start) {
				agentName = l.Items[i].Name
				return true, nil
			}
		}
		return false, fmt.Errorf("%d agent pods, none ready since the boot", len(l.Items))
	})
	agentBack := time.Since(start)
	res := e.waitAllCapturedSince(t, ns, names, podTimeout, start)
	all := time.Since(start)
	for name, p := range res.pods {
		if p.UID != before.pods[name].UID {
			t.Errorf("pod %s was replaced (uid %s -> %s); want the same pod restarted", name, before.pods[name].UID, p.UID)
		}
		if res.netns[name] == before.netns[name] {
			t.Errorf("pod %s still in its old netns %s", name, res.netns[name])
		}
	}
	recordsOnce(t, ns, res.pods)
	e.checkClean(t)
	if _, cur = e.conflist(t); !hasOurEntry(cur) {
		t.Errorf("after the reboot the primary conflist %s has no sidelane entry:\n%s", path, cur)
	}
	repaired := 0
	for name := range e.eventedPods(t, ns, "RulesRepaired") {
		if !repairedBefore[name] {
			repaired++
		}
	}
	l, _ := e.kube.CoreV1().Pods(ns).List(ctx(t), metav1.ListOptions{})
	figures(t, "%d injected pods; node booted in %v (conflist written by the primary without our entry: %v); agent %s ready %v after the power loss; all %d Running and captured %v after it (%d captured at ADD, %d by repair); check exit 0; %d pods in the namespace",
		n, booted.Round(time.Millisecond), !entryAtBoot, agentName, agentBack.Round(time.Millisecond), n, all.Round(time.Millisecond), n-repaired, repaired, len(l.Items))
	// The boot restarted the injector too: leave the node as the next test expects it, with
	// the API server reaching the webhook again.
	e.waitWebhookServes(t, ns)
}
