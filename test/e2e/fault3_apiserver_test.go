//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestFaultAPIServerRestartDuringBurst: 10 injected pods are created at once, the API server is
// killed (SIGKILL) and started again while they start, 10 more are created during the outage
// (retried until the API server answers). All 20 end captured with one record each.
func TestFaultAPIServerRestartDuringBurst(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	ns := e.namespace(t, "e2e-apirestart", true, false)
	start := time.Now()
	names := e.burst(t, ns, "a", 10)
	restarted := make(chan time.Duration, 1)
	go func() {
		// Not clusterSh: t.Fatal must not be called from another goroutine.
		s := time.Now()
		out, err := run(filepath.Join(e.root, "hack", "cluster.sh"), "restart", "kube-apiserver")
		if err != nil {
			t.Errorf("restart kube-apiserver: %v\n%s", err, out)
		}
		restarted <- time.Since(s)
	}()
	tries := 0
	for i := range 10 {
		name := fmt.Sprintf("a-%d", 10+i)
		tries += e.createRetrying(t, clientPod(ns, name, podOpts{}), 3*time.Minute)
		names = append(names, name)
	}
	down := <-restarted
	res := e.waitAllCaptured(t, ns, names, podTimeout)
	recordsOnce(t, ns, res.pods)
	e.checkClean(t)
	figures(t, "20 pods; API server killed and back in %v; the second 10 needed %d create attempts; all captured %v after the burst began (%d at ADD, %d by repair)",
		down.Round(time.Millisecond), tries, time.Since(start).Round(time.Millisecond), res.atAdd, res.byRepair)
}
