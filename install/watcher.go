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

	"github.com/sidelane/sidelane/internal/dirwatch"
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
	// Backoff is how long the watcher now waits before putting the entry back again (0 unless
	// it is fighting another writer; at most Config.BackoffMax).
	Backoff time.Duration
	// Errors counts failed reconciles (not counting "no primary yet").
	Errors uint64
	// LastReinsertLatency is the time from the first file event after an overwrite to our
	// entry being back.
	LastReinsertLatency time.Duration
	// Primary is the conflist that holds our entry ("" before the first install).
	Primary string
}

// Fight describes the start of a fight over the primary conflist, for OnFight.
type Fight struct {
	// File is the conflist being fought over.
	File string
	// Overwrites of our entry within Window.
	Overwrites int
	Window     time.Duration
	// BackoffMax is the longest the watcher now waits between putting the entry back.
	BackoffMax time.Duration
}

func (f Fight) String() string {
	return fmt.Sprintf("another component keeps removing the sidelane-cni entry from %s (%d overwrites within %s); putting it back with a backoff of up to %s",
		f.File, f.Overwrites, f.Window, f.BackoffMax)
}

// Watcher installs the plugin and keeps it installed: it reacts to every change in the conf
// dir (fsnotify, with a periodic resync as a safety net), puts our entry back when the primary
// CNI rewrites or replaces its file, follows a new primary that sorts earlier, and detects a
// fight with another writer, during which it backs off (bounded, exponential) instead of
// rewriting the file at full speed.
type Watcher struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	stats      Stats
	installErr error
	overwrites []time.Time
	onFight    func(Fight)
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

// OnFight sets a function called (from Run's goroutine) each time a fight starts, e.g. to
// emit a Kubernetes Event. Call it before Run.
func (w *Watcher) OnFight(f func(Fight)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onFight = f
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
//
// Run is the triggers (file events, watch errors, the resync ticker) of one reconcile loop
// (type loop): every trigger asks for a reconcile, the loop decides when it runs.
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
	if err := mkdirAll(cfg.CNIConfDir); err != nil {
		return err
	}
	triggers, err := dirwatch.Watch(ctx, []string{cfg.CNIConfDir}, dirwatch.Options{
		Poll: cfg.ResyncInterval,
		// Our own (or someone's) temporary file: the rename will tell.
		Ignore: func(ev fsnotify.Event) bool { return strings.HasSuffix(ev.Name, ".tmp") },
		Log:    w.log,
	})
	if err != nil {
		return err
	}
	l := newLoop(w, st)
	defer l.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case t, ok := <-triggers:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watching %s: the watch ended", cfg.CNIConfDir)
			}
			switch t {
			case dirwatch.Changed:
				l.fileEvent(time.Now())
			case dirwatch.Lost:
				// Events may have been lost: catch up now rather than at the next resync.
				l.request(0)
			case dirwatch.Poll:
				if err := installBinary(cfg); err != nil {
					w.log.Error("re-installing the plugin binary", "err", err)
				}
				l.request(0)
			}
		case <-l.timer.C:
			l.reconcile(time.Now())
		}
	}
}

// debounce gathers the events of one write (create, write, rename) into one reconcile.
const debounce = 5 * time.Millisecond

// loop is the reconcile loop of Run: one timer says when the next reconcile runs; triggers
// ask for one (request) and the loop never runs one before the backoff allows.
type loop struct {
	w     *Watcher
	cfg   Config
	st    *state
	timer *time.Timer

	firstEvent    time.Time // first event not yet answered by a reconcile
	lastNoPrimary string
	// backoff is the wait imposed after each contested reconcile while fighting; notBefore is
	// the earliest time of the next reconcile; lastContest is the last overwrite or lost race.
	backoff     time.Duration
	notBefore   time.Time
	lastContest time.Time
}

func newLoop(w *Watcher, st *state) *loop {
	return &loop{w: w, cfg: w.cfg, st: st, timer: time.NewTimer(0)} // reconcile at once
}

// request asks for a reconcile in d, or when the backoff allows, whichever is later.
func (l *loop) request(d time.Duration) {
	if wait := time.Until(l.notBefore); wait > d {
		d = wait
	}
	l.timer.Reset(d)
}

func (l *loop) fileEvent(now time.Time) {
	if l.firstEvent.IsZero() {
		l.firstEvent = now
	}
	l.request(debounce)
}

// contested notes an overwrite of our entry (or a write by someone else racing ours) and sets
// the backoff: none for an isolated one; while fighting, doubling from BackoffMin up to
// BackoffMax for each one that follows the previous within 2×BackoffMax.
func (l *loop) contested(now time.Time, fighting bool) {
	quick := !l.lastContest.IsZero() && now.Sub(l.lastContest) < 2*l.cfg.BackoffMax
	l.lastContest = now
	switch {
	case !fighting || !quick:
		l.backoff = 0
	default:
		l.backoff = min(max(2*l.backoff, l.cfg.BackoffMin), l.cfg.BackoffMax)
	}
	l.notBefore = now.Add(l.backoff)
	l.w.stats.Backoff = l.backoff
}

// reconcile runs one reconcile and schedules the next where the outcome asks for one.
func (l *loop) reconcile(now time.Time) {
	w, cfg := l.w, l.cfg
	out, err := reconcile(cfg, l.st, now)
	var fight *Fight
	w.mu.Lock()
	w.stats.Reconciles++
	switch {
	case err == nil:
		if out.Wrote {
			w.stats.Writes++
		}
		if out.Overwritten {
			w.stats.Overwrites++
			if !l.firstEvent.IsZero() {
				w.stats.LastReinsertLatency = time.Since(l.firstEvent)
			}
			wasFighting := w.fightingLocked(now)
			w.overwrites = append(w.overwrites, now)
			fighting := w.fightingLocked(now)
			l.contested(now, fighting)
			if !wasFighting && fighting {
				w.stats.Fights++
				fight = &Fight{File: out.Path, Overwrites: len(w.overwrites), Window: cfg.FightWindow, BackoffMax: cfg.BackoffMax}
				w.log.Warn("fight over the CNI config: another component keeps removing the sidelane-cni entry; backing off",
					"file", out.Path, "overwrites", len(w.overwrites), "window", cfg.FightWindow, "backoffMax", cfg.BackoffMax)
			} else if l.backoff == 0 {
				w.log.Info("sidelane-cni entry was removed from the CNI config; put it back", "file", out.Path)
			}
		} else if now.Sub(l.lastContest) >= 2*cfg.BackoffMax {
			l.backoff, w.stats.Backoff = 0, 0
		}
		if out.Path != w.stats.Primary {
			w.log.Info("sidelane-cni chained into the primary CNI config", "file", out.Path)
		}
		w.stats.Primary = out.Path
		w.installErr = nil
		l.lastNoPrimary = ""
		l.firstEvent = time.Time{}
	case errors.Is(err, ErrNoPrimary):
		w.installErr = err
		if err.Error() != l.lastNoPrimary {
			w.log.Info("waiting for the primary CNI configuration", "reason", err)
			l.lastNoPrimary = err.Error()
		}
		l.request(cfg.PollInterval)
	case errors.Is(err, errChanged):
		// Someone wrote the file while we edited it: a race, and while fighting a contest.
		l.contested(now, w.fightingLocked(now))
		l.request(50 * time.Millisecond)
	case errors.Is(err, errInFlux):
		l.request(50 * time.Millisecond)
	default:
		w.stats.Errors++
		w.installErr = err
		w.log.Error("installing sidelane-cni into the CNI config", "err", err)
		l.request(time.Second)
	}
	onFight := w.onFight
	w.mu.Unlock()
	if fight != nil && onFight != nil {
		onFight(*fight)
	}
}
