//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sidelane/sidelane/internal/agent"
)

// TestFaultFightingPrimary: a process rewrites the primary conflist without our entry every
// 10 ms for 10 s while pods are created. A concurrent reader parses the file at every read and
// never finds it corrupt; the agent backs off (its writes are a small fraction of the
// fighter's, its backoff gauge at the maximum), reports the fight as a Warning Event on its pod
// and in sidelane_agent_install_fights_total; once the fight stops our entry is back within
// 1 s; every pod created during the fight ends captured (at ADD or repaired). It runs last: the
// agent reports not-ready for the fight window (1 min) afterwards.
func TestFaultFightingPrimary(t *testing.T) {
	e := setup(t)
	agentPod := e.waitAgentReady(t)
	path, cur := e.conflist(t)
	if !hasOurEntry(cur) {
		t.Fatalf("primary conflist %s has no sidelane entry before the test:\n%s", path, cur)
	}
	orig, err := os.ReadFile(filepath.Join(e.clusterDir, "run", "primary.conflist.orig"))
	if err != nil {
		t.Fatal(err)
	}
	ns := e.namespace(t, "e2e-fight", true, false)
	e.waitWebhookServes(t, ns) // the injector may have restarted with an earlier fault
	writes := agentMetricSum(t, "sidelane_agent_install_writes_total")
	fightsBefore := agentMetricSum(t, "sidelane_agent_install_fights_total")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// The reader: every 2 ms, the whole file through libcni's parser.
	var reads int
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			b, err := os.ReadFile(path)
			if err == nil {
				_, err = libcni.ConfListFromBytes(b)
			}
			if err != nil {
				readErr = fmt.Errorf("read %d: %w", reads, err)
				return
			}
			reads++
		}
	}()
	// The fighter: the primary's own bytes, atomically (temp + rename), every 10 ms for 10 s.
	const fight = 10 * time.Second
	fighterDone := make(chan int, 1)
	var stoppedAt time.Time
	go func() {
		tmp := filepath.Join(filepath.Dir(path), ".fighter.tmp")
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for end := time.Now().Add(fight); time.Now().Before(end); n++ {
			<-tick.C
			if os.WriteFile(tmp, orig, 0o644) != nil || os.Rename(tmp, path) != nil {
				break
			}
		}
		stoppedAt = time.Now()
		fighterDone <- n
	}()
	// Pods created during the fight, one every 2 s; the backoff gauge sampled late in the fight.
	var names []string
	next := time.NewTimer(500 * time.Millisecond)
	for i := range 5 {
		<-next.C
		names = append(names, e.createPod(t, clientPod(ns, fmt.Sprintf("f-%d", i), podOpts{})).Name)
		next.Reset(2 * time.Second)
	}
	next.Stop()
	backoff := agentMetricSum(t, "sidelane_agent_install_backoff_seconds")
	fighterWrites := <-fighterDone
	agentWrites := agentMetricSum(t, "sidelane_agent_install_writes_total") - writes
	var back time.Duration
	for deadline := stoppedAt.Add(10 * time.Second); ; {
		b, err := os.ReadFile(path)
		if err == nil && hasOurEntry(b) {
			back = time.Since(stoppedAt)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("our entry not back 10 s after the fight stopped:\n%s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Errorf("the concurrent reader found the conflist unparseable: %v", readErr)
	}
	if back > time.Second {
		t.Errorf("our entry came back %v after the fight stopped, want within 1 s", back)
	}
	// Backing off: the doubling steps (10 ms → 500 ms), then at most one write per 500 ms; a
	// watcher at full speed writes once per fighter write.
	if limit := 11.0 + 7 + fight.Seconds()/0.5 + 10; agentWrites > limit {
		t.Errorf("the agent wrote the conflist %v times during a %v fight (fighter: %d writes), want at most %v (backing off)", agentWrites, fight, fighterWrites, limit)
	}
	if backoff < 0.25 {
		t.Errorf("sidelane_agent_install_backoff_seconds = %v late in the fight, want the maximum (0.5)", backoff)
	}
	fights := agentMetricSum(t, "sidelane_agent_install_fights_total") - fightsBefore
	if fights < 1 {
		t.Errorf("sidelane_agent_install_fights_total did not move")
	}
	var event string
	poll(t, 30*time.Second, "a "+agent.FightReason+" event on the agent pod", func() (bool, error) {
		evs, err := e.kube.CoreV1().Events(systemNS).List(ctx(t), metav1.ListOptions{
			FieldSelector: "reason=" + agent.FightReason + ",involvedObject.name=" + agentPod.Name})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		event = evs.Items[0].Type + " " + evs.Items[0].Message
		return true, nil
	})
	res := e.waitAllCaptured(t, ns, names, podTimeout)
	recordsOnce(t, ns, res.pods)
	figures(t, "fighter wrote %d times in %v; agent wrote %v times (backoff gauge %v s late in the fight), fights +%v; reader parsed %d reads, none corrupt; entry back %v after the fight; %d pods created during the fight all captured (%d at ADD, %d by repair) %v after the last one; event: %s",
		fighterWrites, fight, agentWrites, backoff, fights, reads, back.Round(time.Millisecond), len(names), res.atAdd, res.byRepair, res.took.Round(time.Millisecond), event)
}
