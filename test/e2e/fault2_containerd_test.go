//go:build e2e

package e2e

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sidelane/sidelane/internal/agentapi"
)

// TestFaultContainerdRestart: containerd is killed and started again while captured pods run.
// Their rules are byte for byte what they were, their records unchanged, no repair or drift is
// counted, the pods did not restart, and a pod created afterwards starts captured (the runtime
// and the kubelet work again).
func TestFaultContainerdRestart(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	ns := e.namespace(t, "e2e-ctrd", true, false)
	names := e.burst(t, ns, "c", 3)
	res := e.waitAllCaptured(t, ns, names, podTimeout)
	rulesBefore := map[string]string{}
	for _, name := range names {
		rulesBefore[name] = rulesNoComments(res.netns[name])
	}
	recsBefore, err := agentPods(t)
	if err != nil {
		t.Fatal(err)
	}
	repairs := agentMetricSum(t, "sidelane_agent_repairs_total")
	drift := agentMetricSum(t, "sidelane_agent_drift_detected_total")
	adds := agentMetricSumWhere(t, "sidelane_agent_plugin_reports_total", `event="ADD"`)

	took := e.clusterSh(t, "restart", "containerd")
	after := e.burst(t, ns, "after", 1)
	resAfter := e.waitAllCaptured(t, ns, after, podTimeout)

	recsAfter, err := agentPods(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if got := rulesNoComments(res.netns[name]); got != rulesBefore[name] {
			t.Errorf("pod %s: rules changed across the containerd restart:\n--- before\n%s\n--- after\n%s", name, rulesBefore[name], got)
		}
		p, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), name, metav1.GetOptions{})
		if err != nil || p.UID != res.pods[name].UID || restarts(p) != 0 || !ready(p) {
			t.Errorf("pod %s changed across the containerd restart: %v restarts %d ready %v", name, err, restarts(p), ready(p))
		}
		b, _ := findRecord(recsBefore, ns, name)
		a, ok := findRecord(recsAfter, ns, name)
		if !ok || a.State != agentapi.StateCaptured || a.UID != b.UID || !a.LastApplied.Equal(b.LastApplied) || a.Netns != b.Netns {
			t.Errorf("record of %s changed: before %+v after %+v", name, b, a)
		}
	}
	dRepairs := agentMetricSum(t, "sidelane_agent_repairs_total") - repairs
	dDrift := agentMetricSum(t, "sidelane_agent_drift_detected_total") - drift
	dReports := agentMetricSumWhere(t, "sidelane_agent_plugin_reports_total", `event="ADD"`) - adds
	if dRepairs != 0 || dDrift != 0 {
		t.Errorf("containerd restart caused %v repairs and %v drift detections, want none", dRepairs, dDrift)
	}
	// The one new pod reports its ADD; no sandbox of the running pods was set up again.
	if dReports != 1 {
		t.Errorf("%v plugin ADD reports across the restart, want 1 (the new pod's)", dReports)
	}
	e.checkClean(t)
	figures(t, "containerd restarted in %v with %d captured pods: rules unchanged, records unchanged, %v repairs, %v drift detections, %v plugin ADD reports (the new pod's); a new pod captured %v after the restart",
		took.Round(time.Millisecond), len(names), dRepairs, dDrift, dReports, resAfter.took.Round(time.Millisecond))
}
