//go:build e2e

package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
)

// TestFaultAgentKilledDuringBurst: 30 injected pods are created at once and the agent is
// killed with SIGKILL once a third of them are captured. All 30 end captured, the agent's
// records hold each once (current UID, captured) and every pod's rules are exactly the
// expected ones (kubectl sidelane check).
func TestFaultAgentKilledDuringBurst(t *testing.T) {
	e := setup(t)
	agentPod := e.waitAgentReady(t)
	pid := e.agentPID(t, agentPod)
	ns := e.namespace(t, "e2e-burstkill", true, false)
	const n = 30
	start := time.Now()
	type burstResult struct {
		names []string
		err   error
		took  time.Duration
	}
	burstDone := make(chan burstResult, 1)
	go func() {
		names, err := e.burstErr(ns, "b", n)
		burstDone <- burstResult{names, err, time.Since(start)}
	}()
	// Kill as soon as a third is captured, while the rest are still being created or set up.
	var atKill int
	poll(t, podTimeout, "a third of the burst captured", func() (bool, error) {
		l, err := agentPods(t)
		if err != nil {
			return false, err
		}
		atKill = 0
		for _, r := range l.Items {
			if r.Namespace == ns && r.State == agentapi.StateCaptured {
				atKill++
			}
		}
		return atKill >= n/3, fmt.Errorf("%d captured", atKill)
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 agent (pid %d): %v", pid, err)
	}
	killedAt := time.Since(start)
	if atKill >= n {
		t.Fatalf("all %d pods were captured before the agent was killed: the kill was not in the middle of the burst", n)
	}
	b := <-burstDone
	if b.err != nil {
		t.Fatal(b.err)
	}
	names, created := b.names, b.took
	poll(t, podTimeout, "the agent container restarted and ready", func() (bool, error) {
		p := e.waitAgentReady(t)
		return restarts(p) > restarts(agentPod) || p.UID != agentPod.UID, nil
	})
	back := time.Since(start)
	res := e.waitAllCaptured(t, ns, names, podTimeout)
	recordsOnce(t, ns, res.pods)
	e.checkClean(t)
	failed := e.eventedPods(t, ns, "FailedCreatePodSandBox")
	figures(t, "%d pods created at once in %v; agent SIGKILLed at %v with %d captured; agent ready again at %v; all %d captured at %v (%d at ADD, %d by repair, %d pods had a failed sandbox attempt); records: one captured record per pod; check exit 0",
		n, created.Round(time.Millisecond), killedAt.Round(time.Millisecond), atKill, back.Round(time.Millisecond), n,
		(time.Since(start)).Round(time.Millisecond), res.atAdd, res.byRepair, len(failed))
}
