package install

import (
	"context"
	"sync"
	"testing"
	"time"
)

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
}

// testWatcher is a running Watcher that stops at the end of the test (or at stop).
type testWatcher struct {
	*Watcher
	stop func(t *testing.T)
}

func runWatcher(t *testing.T, cfg Config) testWatcher {
	t.Helper()
	w, err := NewWatcher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func(t *testing.T) {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(func() { stop(t) })
	return testWatcher{Watcher: w, stop: stop}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
