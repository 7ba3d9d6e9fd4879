package dirwatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// next waits for the next trigger (or the channel's close) for at most 10 s.
func next(t *testing.T, ch <-chan Trigger) (Trigger, bool) {
	t.Helper()
	select {
	case tr, ok := <-ch:
		return tr, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no trigger within 10 s")
		return 0, false
	}
}

func TestWatch(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		write func(dir string) // the change
		want  Trigger
	}{
		{"a new file", Options{}, func(d string) { os.WriteFile(filepath.Join(d, "a"), []byte("x"), 0o644) }, Changed},
		{"a rename, debounced", Options{Debounce: 20 * time.Millisecond}, func(d string) {
			os.WriteFile(filepath.Join(d, "b.tmp"), []byte("x"), 0o644)
			os.Rename(filepath.Join(d, "b.tmp"), filepath.Join(d, "b"))
		}, Changed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := Watch(ctx, []string{dir, dir}, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			tt.write(dir)
			if got, ok := next(t, ch); !ok || got != tt.want {
				t.Fatalf("trigger %v (open %v), want %v", got, ok, tt.want)
			}
			cancel()
			for range ch { // drains, then the close ends the loop
			}
		})
	}
}

// The events of one update arrive as one Changed once the debounce window is quiet.
func TestWatchDebounceCoalesces(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := Watch(ctx, []string{dir}, Options{Debounce: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		os.WriteFile(filepath.Join(dir, "f"), []byte(strings.Repeat("x", i)), 0o644)
	}
	if got, _ := next(t, ch); got != Changed {
		t.Fatalf("trigger %v, want changed", got)
	}
	select {
	case tr := <-ch:
		t.Errorf("a second trigger %v for one burst of writes", tr)
	default:
	}
}

func TestWatchIgnoreAndPoll(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := Watch(ctx, []string{dir}, Options{
		Poll:   50 * time.Millisecond,
		Ignore: func(ev fsnotify.Event) bool { return strings.HasSuffix(ev.Name, ".tmp") },
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "x.tmp"), []byte("x"), 0o644)
	// The ignored write gives no Changed: the next trigger is the poll.
	if got, _ := next(t, ch); got != Poll {
		t.Fatalf("trigger %v, want poll", got)
	}
}

func TestWatchMissingDir(t *testing.T) {
	_, err := Watch(context.Background(), []string{filepath.Join(t.TempDir(), "absent")}, Options{})
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("err = %v, want one naming the directory", err)
	}
}
