package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Stats are the watcher's counters, for the agent's metrics.
type Stats struct {
	// Reconciles counts checks of the conf dir; Writes counts the times we wrote a conflist.
	Reconciles, Writes uint64
	// Overwrites counts the times our entry was found gone from a conflist we had chained into
	// (the primary CNI rewrote its file) and was put back.
	Overwrites uint64
	// Fights counts the times the overwrites crossed Config.FightThreshold within FightWindow.
	Fights uint64
	// Fighting is true while the overwrite rate is above the threshold.
	Fighting bool
	// Errors counts failed reconciles (not counting "no primary yet").
	Errors uint64
	// LastReinsertLatency is the time from the first file event after an overwrite to our
	// entry being back.
	LastReinsertLatency time.Duration
	// Primary is the conflist that holds our entry ("" before the first install).
	Primary string
}

// Watcher installs the plugin and keeps it installed: it reacts to every change in the conf
// dir (fsnotify, with a periodic resync as a safety net), puts our entry back when the primary
// CNI rewrites or replaces its file, follows a new primary that sorts earlier, and detects a
// fight with another writer.
type Watcher struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	stats      Stats
	installErr error
	overwrites []time.Time
}

// NewWatcher checks cfg. log may be nil (no logs).
func NewWatcher(cfg Config, log *slog.Logger) (*Watcher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: log, installErr: fmt.Errorf("not installed yet")}, nil
}

// Stats returns a copy of the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Fighting = w.fightingLocked(time.Now())
	return s
}

// Ready returns nil when our entry is in the primary conflist and nobody is fighting us over
// the file; otherwise an error that says what is wrong.
func (w *Watcher) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.installErr != nil {
		return w.installErr
	}
	if w.fightingLocked(time.Now()) {
		return fmt.Errorf("another component keeps overwriting %s: %d overwrites of the sidelane-cni entry within %s",
			w.stats.Primary, len(w.overwrites), w.cfg.FightWindow)
	}
	return nil
}

func (w *Watcher) fightingLocked(now time.Time) bool {
	cut := 0
	for cut < len(w.overwrites) && now.Sub(w.overwrites[cut]) > w.cfg.FightWindow {
		cut++
	}
	w.overwrites = w.overwrites[cut:]
	return len(w.overwrites) > w.cfg.FightThreshold
}

// Run installs and keeps the plugin installed until ctx ends, then returns nil (it does not
// uninstall: the caller decides between Uninstall modes). It fails only on errors that
// retrying cannot fix (the conf dir cannot be watched, the binary cannot be copied).
func (w *Watcher) Run(ctx context.Context) error {
	cfg := w.cfg
	if err := installBinary(cfg); err != nil {
		return err
	}
	if err := removeLegacyCredentials(cfg); err != nil {
		return err
	}
	st, err := loadState(cfg)
	if err != nil {
		return err
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", cfg.CNIConfDir, err)
	}
	defer fw.Close()
	if err := mkdirAll(cfg.CNIConfDir); err != nil {
		return err
	}
	if err := fw.Add(cfg.CNIConfDir); err != nil {
		return fmt.Errorf("watching %s: %w", cfg.CNIConfDir, err)
	}
	const debounce = 5 * time.Millisecond
	reconcileT := time.NewTimer(0) // reconcile at once
	defer reconcileT.Stop()
	resync := time.NewTicker(cfg.ResyncInterval)
	defer resync.Stop()
	var firstEvent time.Time // first event not yet answered by a reconcile
	lastNoPrimary := ""

	doReconcile := func() {
		now := time.Now()
		out, err := reconcile(cfg, st, now)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.stats.Reconciles++
		switch {
		case err == nil:
			if out.Wrote {
				w.stats.Writes++
			}
			if out.Overwritten {
				w.stats.Overwrites++
				if !firstEvent.IsZero() {
					w.stats.LastReinsertLatency = time.Since(firstEvent)
				}
				wasFighting := w.fightingLocked(now)
				w.overwrites = append(w.overwrites, now)
				if !wasFighting && w.fightingLocked(now) {
					w.stats.Fights++
					w.log.Warn("fight over the CNI config: another component keeps removing the sidelane-cni entry",
						"file", out.Path, "overwrites", len(w.overwrites), "window", cfg.FightWindow)
				} else {
					w.log.Info("sidelane-cni entry was removed from the CNI config; put it back", "file", out.Path)
				}
			}
			if out.Path != w.stats.Primary {
				w.log.Info("sidelane-cni chained into the primary CNI config", "file", out.Path)
			}
			w.stats.Primary = out.Path
			w.installErr = nil
			lastNoPrimary = ""
			firstEvent = time.Time{}
		case errors.Is(err, ErrNoPrimary):
			w.installErr = err
			if err.Error() != lastNoPrimary {
				w.log.Info("waiting for the primary CNI configuration", "reason", err)
				lastNoPrimary = err.Error()
			}
			reconcileT.Reset(cfg.PollInterval)
		case errors.Is(err, errInFlux), errors.Is(err, errChanged):
			reconcileT.Reset(50 * time.Millisecond)
		default:
			w.stats.Errors++
			w.installErr = err
			w.log.Error("installing sidelane-cni into the CNI config", "err", err)
			reconcileT.Reset(time.Second)
		}
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return fmt.Errorf("watching %s: event channel closed", cfg.CNIConfDir)
			}
			if strings.HasSuffix(ev.Name, ".tmp") {
				continue // our own (or someone's) temporary file; the rename will tell
			}
			if firstEvent.IsZero() {
				firstEvent = time.Now()
			}
			reconcileT.Reset(debounce)
		case err, ok := <-fw.Errors:
			if !ok {
				return fmt.Errorf("watching %s: error channel closed", cfg.CNIConfDir)
			}
			// An overflow loses events: the resync below catches up; do it now.
			w.log.Warn("file watch error; resyncing", "err", err)
			reconcileT.Reset(0)
		case <-reconcileT.C:
			doReconcile()
		case <-resync.C:
			if err := installBinary(cfg); err != nil {
				w.log.Error("re-installing the plugin binary", "err", err)
			}
			doReconcile()
		}
	}
}
