// Package dirwatch is Sidelane's one file watcher: it watches directories with fsnotify
// (directories, not files, because Kubernetes updates a mounted ConfigMap or Secret by swapping
// a symlink in the mount directory, and a primary CNI replaces its conflist by renaming), and
// turns what happens into triggers for a caller's reconcile: a change (coalesced over a
// debounce window when one is given), a watch error after which events may have been lost, and
// a periodic poll as the safety net for lost events. The install watcher (package install) and
// the injector's template and certificate reloads (package webhook) run on it.
package dirwatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Trigger says why a caller should look at its files again.
type Trigger uint8

const (
	// Changed: a file in a watched directory changed (after the debounce window, if any).
	Changed Trigger = iota
	// Lost: the watch reported an error (an overflow, say); events may have been lost.
	Lost
	// Poll: the poll interval passed.
	Poll
)

func (t Trigger) String() string {
	return [...]string{"changed", "lost", "poll"}[t]
}

// Options tune Watch.
type Options struct {
	// Poll is the interval of Poll triggers (0: none).
	Poll time.Duration
	// Debounce coalesces the events of one update (create, write, rename) into one Changed
	// trigger sent when no event came for this long (0: one trigger per event).
	Debounce time.Duration
	// Ignore drops the events it returns true for (a temporary file, a chmod).
	Ignore func(fsnotify.Event) bool
	// Log gets the watch errors (slog.DiscardHandler when nil).
	Log *slog.Logger
}

// Watch watches dirs until ctx ends and sends the triggers on the returned channel, which it
// closes when ctx ends or the watch fails (its event stream closed). The channel has room for
// one trigger. Lost and Poll wait for the caller; a Changed that finds a trigger waiting is
// dropped, since any waiting trigger makes the caller look at its files anyway.
func Watch(ctx context.Context, dirs []string, o Options) (<-chan Trigger, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching %v: %w", dirs, err)
	}
	var added []string
	for _, d := range dirs {
		if slices.Contains(added, d) {
			continue
		}
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("watching %s: %w", d, err)
		}
		added = append(added, d)
	}
	out := make(chan Trigger, 1)
	changed := func() {
		select {
		case out <- Changed:
		default: // a trigger is already waiting
		}
	}
	// wait sends t unless ctx ends first; it reports whether it did.
	wait := func(t Trigger) bool {
		select {
		case out <- t:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(out)
		defer w.Close()
		var poll <-chan time.Time
		if o.Poll > 0 {
			t := time.NewTicker(o.Poll)
			defer t.Stop()
			poll = t.C
		}
		var debounce *time.Timer
		var debounced <-chan time.Time
		defer func() {
			if debounce != nil {
				debounce.Stop()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					o.Log.Error("file watch ended", "dirs", added)
					return
				}
				if o.Ignore != nil && o.Ignore(ev) {
					continue
				}
				if o.Debounce <= 0 {
					changed()
					continue
				}
				if debounce == nil {
					debounce = time.NewTimer(o.Debounce)
				} else {
					debounce.Reset(o.Debounce)
				}
				debounced = debounce.C
			case err, ok := <-w.Errors:
				if !ok {
					o.Log.Error("file watch ended", "dirs", added)
					return
				}
				o.Log.Warn("file watch error; events may have been lost", "dirs", added, "err", err)
				if !wait(Lost) {
					return
				}
			case <-debounced:
				debounced = nil
				changed()
			case <-poll:
				if !wait(Poll) {
					return
				}
			}
		}
	}()
	return out, nil
}
