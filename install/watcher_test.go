package install

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/conflist"
	"github.com/sidelane/sidelane/internal/contract"
)

// primaryContent is a Calico-style conflist as its installer would write it, generation gen.
func primaryContent(gen int) []byte {
	return []byte(fmt.Sprintf(`{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "generation": %d,
      "ipam": {"type": "calico-ipam"}
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
`, gen))
}

// writeLikePrimary rewrites path the way CNI installers do: atomically (temp + rename) or in
// place (truncate + write, which a reader can catch half-written).
func writeLikePrimary(t *testing.T, path string, b []byte, inPlace bool) {
	t.Helper()
	if inPlace {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := path + ".primary-tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// chainedOver checks that path holds primary plus our entry exactly once, last.
func chainedOver(path string, primary []byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n, err := conflist.Count(b, contract.PluginType)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if n != 1 {
		return fmt.Errorf("%s holds %d sidelane-cni entries", path, n)
	}
	p, _ := conflist.Parse(b)
	if p.Plugins[len(p.Plugins)-1].Type != contract.PluginType {
		return fmt.Errorf("sidelane-cni is not last in %s", path)
	}
	rest, _, _ := conflist.Remove(b, contract.PluginType)
	if !bytes.Equal(rest, primary) {
		return fmt.Errorf("primary content changed:\n%s\nwant\n%s", rest, primary)
	}
	return nil
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*q)]
}

// TestWatcherChaos: the primary rewrites its conflist 1000 times while the watcher runs. At the
// end our entry is there exactly once over the primary's last content, and the fight was seen.
func TestWatcherChaos(t *testing.T) {
	e := newEnv(t)
	e.cfg.ResyncInterval = 500 * time.Millisecond
	// This test is about correctness under rewrites and the reinsert latency; the backoff of a
	// fight (up to 500 ms per reinsert by default) has its own test.
	e.cfg.BackoffMin, e.cfg.BackoffMax = time.Millisecond, time.Millisecond
	path := filepath.Join(e.conf, "10-calico.conflist")
	writeLikePrimary(t, path, primaryContent(0), false)
	w := runWatcher(t, e.cfg)
	eventually(t, "first install", 30*time.Second, func() error { return chainedOver(path, primaryContent(0)) })

	const rewrites = 1000
	var latencies []time.Duration
	for i := 1; i <= rewrites; i++ {
		content := primaryContent(i)
		writeLikePrimary(t, path, content, i%2 == 0)
		// Every 10th rewrite, measure how long until our entry is back (the other rewrites
		// come back to back, faster than the watcher can answer).
		if i%10 == 0 {
			start := time.Now()
			for chainedOver(path, content) != nil {
				if time.Since(start) > 30*time.Second {
					t.Fatalf("entry not back 30s after rewrite %d: %v", i, chainedOver(path, content))
				}
				time.Sleep(time.Millisecond)
			}
			latencies = append(latencies, time.Since(start))
		}
	}
	eventually(t, "entry over the last primary content", 30*time.Second, func() error {
		return chainedOver(path, primaryContent(rewrites))
	})
	s := w.Stats()
	t.Logf("reinsert latency over %d samples (poll every 1ms; half the rewrites in place, which the watcher can catch half-written): p50 %v p90 %v max %v; watcher-measured last %v; stats %+v",
		len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.9), percentile(latencies, 1), s.LastReinsertLatency, s)
	if s.Overwrites < 50 || s.Fights < 1 || !s.Fighting {
		t.Errorf("stats %+v: want >= 50 overwrites seen and a fight", s)
	}
	if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "keeps overwriting") {
		t.Errorf("Ready() = %v, want the fight reported", err)
	}
	if left, _ := filepath.Glob(filepath.Join(e.conf, ".*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestWatcherFollowsEarlierPrimary: a new primary that sorts earlier appears; the entry goes
// there; uninstall gives both files back exactly.
func TestWatcherFollowsEarlierPrimary(t *testing.T) {
	e := newEnv(t)
	copyDir(t, filepath.Join("testdata", "calico", "in"), e.conf)
	orig := readDir(t, e.conf)
	w := runWatcher(t, e.cfg)
	eventually(t, "ready", 30*time.Second, w.Ready)
	checkChained(t, filepath.Join(e.conf, "10-calico.conflist"))

	cilium, _ := os.ReadFile(filepath.Join("testdata", "cilium", "in", "05-cilium.conflist"))
	writeLikePrimary(t, filepath.Join(e.conf, "05-cilium.conflist"), cilium, false)
	eventually(t, "entry in the new primary", 30*time.Second, func() error {
		return chainedOver(filepath.Join(e.conf, "05-cilium.conflist"), cilium)
	})
	if p := w.Stats().Primary; filepath.Base(p) != "05-cilium.conflist" {
		t.Errorf("Stats().Primary = %s", p)
	}
	// Uninstall (the watcher stopped first, as the agent does) restores both files exactly.
	w.stop(t)
	if err := Uninstall(e.cfg, RemoveAll); err != nil {
		t.Fatal(err)
	}
	orig["05-cilium.conflist"] = string(cilium)
	diffDirs(t, "after uninstall", readDir(t, e.conf), orig)
}

// TestWatcherConfRewrittenAndUninstall: a .conf primary is converted; when its owner writes the
// .conf again, the watcher converts the new content; uninstall gives the last .conf back.
func TestWatcherConfRewrittenAndUninstall(t *testing.T) {
	e := newEnv(t)
	copyDir(t, filepath.Join("testdata", "conf-only", "in"), e.conf)
	w := runWatcher(t, e.cfg)
	conf := filepath.Join(e.conf, "10-bridge.conf")
	list := filepath.Join(e.conf, "10-bridge.conflist")
	eventually(t, "converted", 30*time.Second, func() error {
		if _, err := os.Stat(conf); err == nil {
			return fmt.Errorf(".conf still there")
		}
		_, err := os.Stat(list)
		return err
	})
	v2 := []byte(`{"cniVersion":"1.0.0","name":"mynet","type":"bridge","bridge":"cni1","ipam":{"type":"host-local","subnet":"10.23.0.0/16"}}`)
	writeLikePrimary(t, conf, v2, false)
	eventually(t, "re-converted", 30*time.Second, func() error {
		if _, err := os.Stat(conf); err == nil {
			return fmt.Errorf(".conf still there")
		}
		b, err := os.ReadFile(list)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, v2) {
			return fmt.Errorf("new .conf content not in the conflist")
		}
		return nil
	})
	checkChained(t, list)
	eventually(t, "overwrite counted", 30*time.Second, func() error {
		if w.Stats().Overwrites < 1 {
			return fmt.Errorf("no overwrite counted")
		}
		return nil
	})
}

// TestWatcherWaitsForPrimary: no primary, nothing written, not ready; then the primary comes.
func TestWatcherWaitsForPrimary(t *testing.T) {
	e := newEnv(t)
	w := runWatcher(t, e.cfg)
	eventually(t, "not-ready reason", 30*time.Second, func() error {
		if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "no primary CNI configuration") {
			return fmt.Errorf("Ready() = %v", err)
		}
		return nil
	})
	if got := readDir(t, e.conf); len(got) != 0 {
		t.Fatalf("written while waiting: %v", got)
	}
	writeLikePrimary(t, filepath.Join(e.conf, "10-calico.conflist"), primaryContent(1), false)
	eventually(t, "ready", 30*time.Second, w.Ready)
	if err := chainedOver(filepath.Join(e.conf, "10-calico.conflist"), primaryContent(1)); err != nil {
		t.Fatal(err)
	}
}

// TestWatcherThenUninstall is the agent's life: run, the primary rewrites, stop, uninstall.
func TestWatcherThenUninstall(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(e.conf, "10-calico.conflist")
	writeLikePrimary(t, path, primaryContent(1), false)
	w, err := NewWatcher(e.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "ready", 30*time.Second, w.Ready)
	writeLikePrimary(t, path, primaryContent(2), true)
	eventually(t, "reinserted", 30*time.Second, func() error { return chainedOver(path, primaryContent(2)) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(e.cfg, RemoveAll); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, primaryContent(2)) {
		t.Fatalf("after uninstall:\n%s\nwant exactly\n%s", got, primaryContent(2))
	}
	if _, err := os.Stat(filepath.Join(e.bin, contract.PluginBinary)); !os.IsNotExist(err) {
		t.Fatalf("binary left: %v", err)
	}
}

// BenchmarkReinsertLatency measures the time from the primary rewriting its conflist (without
// our entry) to the watcher having put the entry back.
func BenchmarkReinsertLatency(b *testing.B) {
	root := b.TempDir()
	conf := filepath.Join(root, "net.d")
	os.MkdirAll(conf, 0o755)
	cfg := Config{CNIConfDir: conf, CNIBinDir: filepath.Join(root, "bin"), StateDir: filepath.Join(root, "state"),
		FightThreshold: 1 << 30}
	path := filepath.Join(conf, "10-calico.conflist")
	os.WriteFile(path, primaryContent(0), 0o644)
	w, err := NewWatcher(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait := func(gen int) {
		deadline := time.Now().Add(30 * time.Second)
		for chainedOver(path, primaryContent(gen)) != nil {
			if time.Now().After(deadline) {
				b.Fatalf("entry not back: %v", chainedOver(path, primaryContent(gen)))
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	wait(0)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		tmp := path + ".primary-tmp"
		os.WriteFile(tmp, primaryContent(i), 0o644)
		os.Rename(tmp, path)
		wait(i)
	}
}

// TestWatcherBacksOffInAFight: another writer removes our entry every 10 ms for 3 s (as a
// misconfigured primary installer in a loop does). The watcher detects the fight, reports it
// once through OnFight, backs off up to BackoffMax instead of rewriting at full speed, a
// concurrent reader never finds the file unparseable, and once the fight stops the entry is
// back within 1 s.
func TestWatcherBacksOffInAFight(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(e.conf, "10-calico.conflist")
	writeLikePrimary(t, path, primaryContent(0), false)
	w, err := NewWatcher(e.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fights := make(chan Fight, 10)
	w.OnFight(func(f Fight) { fights <- f })
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "first install", 30*time.Second, func() error { return chainedOver(path, primaryContent(0)) })

	// A concurrent reader parses the file at every read.
	stopRead := make(chan struct{})
	readErr := make(chan error, 1)
	reads := 0
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err == nil {
				_, err = conflist.Parse(b)
			}
			if err != nil {
				readErr <- fmt.Errorf("read %d: %w", reads, err)
				return
			}
			reads++
		}
	}()

	const fight = 3 * time.Second
	before := w.Stats()
	tick := time.NewTicker(10 * time.Millisecond) // the fighter's pace, not a synchronisation
	start := time.Now()
	gen := 0
	for time.Since(start) < fight {
		<-tick.C
		gen++
		writeLikePrimary(t, path, primaryContent(gen), false)
	}
	tick.Stop()
	stopped := time.Now()
	during := w.Stats()
	took := time.Duration(0)
	for chainedOver(path, primaryContent(gen)) != nil {
		if took = time.Since(stopped); took > 5*time.Second {
			t.Fatalf("entry not back 5 s after the fight stopped: %v", chainedOver(path, primaryContent(gen)))
		}
		time.Sleep(time.Millisecond)
	}
	took = time.Since(stopped)
	close(stopRead)
	if err := <-readErr; err != nil {
		t.Errorf("concurrent reader: %v", err)
	}
	writes := during.Writes - before.Writes
	t.Logf("fighter wrote %d times in %v; watcher wrote %d times (%d overwrites seen, backoff %v); entry back %v after the fight; reader parsed %d reads",
		gen, fight, writes, during.Overwrites-before.Overwrites, during.Backoff, took.Round(time.Millisecond), reads)
	// Full speed is one write per fighter write (~300 here). Backing off allows the writes that
	// detect the fight, the doubling steps up to BackoffMax, then one per BackoffMax.
	steps := 0
	for d := e.cfg.BackoffMin; d < e.cfg.BackoffMax; d *= 2 {
		steps++
	}
	limit := uint64(w.cfg.FightThreshold + 1 + steps + int(fight/w.cfg.BackoffMax) + 5)
	if writes > limit {
		t.Errorf("watcher wrote %d times during a %v fight, want at most %d (backing off)", writes, fight, limit)
	}
	if during.Backoff != w.cfg.BackoffMax {
		t.Errorf("backoff during the fight = %v, want %v", during.Backoff, w.cfg.BackoffMax)
	}
	if !during.Fighting || during.Fights != 1 {
		t.Errorf("stats %+v: want one fight, fighting", during)
	}
	if took > time.Second {
		t.Errorf("entry back %v after the fight stopped, want within 1 s", took)
	}
	select {
	case f := <-fights:
		if f.File != path || f.BackoffMax != w.cfg.BackoffMax {
			t.Errorf("OnFight got %+v", f)
		}
	default:
		t.Errorf("OnFight was not called")
	}
	if len(fights) != 0 {
		t.Errorf("OnFight called %d more times for one fight", len(fights))
	}
}
