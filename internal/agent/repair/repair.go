// Package repair puts back the redirect rules of injected pods whose rules are missing (the pod
// started before the plugin was installed) or drifted (someone changed them): in place, inside
// the pod's network namespace, without restarting the pod. The namespace comes from the
// agent's record or, failing that, from a scan of /proc for the namespace that holds the pod's
// IP. When no namespace can be found or the rules cannot be applied, the pod is deleted so that
// its controller recreates it through the (now installed) plugin. Every repair is an event on
// the pod and a metric.
package repair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/metrics"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// Mode is what the agent does about a pod with missing or drifted rules.
type Mode string

// Repair modes.
const (
	// ModeInPlace applies the rules in the pod's netns, deleting the pod when that is impossible.
	ModeInPlace Mode = "inplace"
	// ModeDelete deletes the pod so that its controller recreates it.
	ModeDelete Mode = "delete"
	// ModeOff only records the state and emits an event.
	ModeOff Mode = "off"
)

// ParseMode checks a --repair-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeInPlace, ModeDelete, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("repair mode %q: unknown (want %q, %q or %q)", s, ModeInPlace, ModeDelete, ModeOff)
}

// Actions of a Result.
const (
	ActionNone    = "none"    // not a pod to check (not injected, not running, failed or skipped by the plugin)
	ActionInSync  = "in-sync" // the rules are in place
	ActionInPlace = "inplace" // the rules were applied in place
	ActionDeleted = "deleted" // the pod was deleted for its controller to recreate it
	ActionOff     = "skipped" // repair is off: recorded only
	ActionFailed  = "failed"  // the repair failed (see the error)
)

// Result says what Check did.
type Result struct {
	Action string
	// State is what was found: captured, missing or drifted.
	State string
	Diff  []string
	// Netns is where the rules were read (and applied), NetnsFrom "record" or "proc".
	Netns, NetnsFrom string
	// Duration is from detecting the missing or drifted rules to the repair done.
	Duration time.Duration
	// RetryAfter, when set, asks for another Check after that long (a deletion is waiting for
	// DeleteAfter to pass).
	RetryAfter time.Duration
}

// Repairer checks and repairs pods. Check is called from one goroutine at a time.
type Repairer struct {
	Store  *record.Store
	Engine inspect.Engine
	// FindNetns returns the network namespace path that holds one of the pod's IPs
	// (FindNetnsByIP on /proc).
	FindNetns func(podIPs []string) (string, error)
	// DeletePod deletes the pod (with a UID precondition).
	DeletePod func(ctx context.Context, namespace, name, uid string) error
	// Event emits a Kubernetes event on the pod.
	Event func(p record.PodInfo, warning bool, reason, message string)
	Mode  Mode
	// DeleteAfter is how long the rules of a pod must have been missing before the pod is
	// deleted because its netns cannot be found or the rules cannot be applied: a pod whose
	// sandbox is being recreated is briefly without a findable netns.
	DeleteAfter    time.Duration
	DefaultBackend string
	Metrics        *metrics.Metrics
	Log            *slog.Logger
	Now            func() time.Time
}

func (r *Repairer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Repairer) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Repairer) event(p record.PodInfo, warning bool, reason, msg string) {
	if r.Event != nil {
		r.Event(p, warning, reason, msg)
	}
}

// modeFor is the repair mode of pod p: its sidelane.io/repair annotation when that names a
// mode, else the agent's.
func (r *Repairer) modeFor(p record.PodInfo) Mode {
	if p.Repair == "" {
		return r.Mode
	}
	m, err := ParseMode(p.Repair)
	if err != nil {
		r.log().Warn("ignoring the pod's repair annotation", "pod", p.Namespace+"/"+p.Name, "annotation", contract.RepairAnnotation, "error", err, "mode", r.Mode)
		return r.Mode
	}
	return m
}

// Check inspects one pod of the node and repairs it according to the mode (the agent's, or the
// pod's sidelane.io/repair annotation): it reads what is (inspect), decides what to do (decide,
// a pure function of what was read), does it (apply in place or delete the pod), and then
// changes the pod's record once.
func (r *Repairer) Check(ctx context.Context, p record.PodInfo) (Result, error) {
	if !p.Injected || !p.Running {
		return Result{Action: ActionNone}, nil
	}
	rec, ok, err := r.Store.Observe(p)
	if err != nil {
		return Result{Action: ActionFailed}, err
	}
	if !ok || rec.State == agentapi.StateFailed || rec.State == agentapi.StateSkipped {
		return Result{Action: ActionNone}, nil
	}
	f, err := r.inspect(p, rec)
	if err != nil {
		return Result{Action: ActionFailed}, err
	}
	pl := decide(f, rec, r.modeFor(p), r.DeleteAfter, r.now())
	return r.carryOut(ctx, p, rec, f, pl)
}

// finding is what inspect read about one pod.
type finding struct {
	// invalid is why the pod's redirect settings are refused ("" when they are fine).
	invalid  string
	settings *redirect.Settings
	ips      []string
	backend  string
	rs       rules.Ruleset
	expected []string
	// netns and from say where the live rules were read; diff is expected vs live.
	netns, from string
	live, diff  []string
	liveErr     error
	detected    time.Time
}

// inspect computes the expected rules and reads the live ones: in the recorded netns first,
// then in the one /proc finds by the pod's IPs.
func (r *Repairer) inspect(p record.PodInfo, rec record.Record) (finding, error) {
	f := finding{settings: rec.Settings, ips: p.PodIPs}
	if f.settings == nil {
		f.settings = p.Settings
	}
	if f.settings == nil {
		f.invalid = "no valid redirect settings: " + p.SettingsErr
		return f, nil
	}
	if len(f.ips) == 0 {
		f.ips = rec.PodIPs
	}
	f.backend = inspect.BackendOf(rec, r.DefaultBackend)
	f.rs = inspect.Ruleset(*f.settings, f.ips)
	var err error
	if f.expected, err = r.Engine.Expected(f.backend, f.rs); err != nil {
		return f, fmt.Errorf("pod %s/%s: expected rules: %w", p.Namespace, p.Name, err)
	}
	if rec.Netns != "" {
		if _, err := os.Stat(rec.Netns); err == nil {
			f.netns, f.from = rec.Netns, "record"
			f.live, f.liveErr = r.Engine.Live(f.backend, rec.Netns)
		}
	}
	if f.netns == "" || f.liveErr != nil {
		f.netns, f.from = "", ""
		if r.FindNetns != nil && len(f.ips) > 0 {
			if path, err := r.FindNetns(f.ips); err == nil {
				f.netns, f.from = path, "proc"
				f.live, f.liveErr = r.Engine.Live(f.backend, path)
			} else {
				f.liveErr = err
			}
		} else if f.liveErr == nil {
			f.liveErr = errors.New("network namespace unknown and the pod has no IP to look for")
		}
	}
	f.detected = r.now()
	if f.netns != "" && f.liveErr == nil {
		f.diff = rules.Diff(f.expected, f.live)
	}
	return f, nil
}

// step is what Check does about a pod.
type step int

const (
	stepNothing      step = iota
	stepRecordFailed      // the redirect settings are invalid: record failed (once)
	stepRecordInSync      // the rules are in place: record captured where the record says otherwise
	stepRecordOnly        // repair is off: record missing/drifted (event once per state)
	stepApply             // apply in place; if that fails, then onFailure
	stepWait              // the problem is younger than DeleteAfter: record and ask again later
	stepDelete            // delete the pod for its controller to recreate it
)

// plan is decide's answer.
type plan struct {
	step step
	// state is what was found: captured, missing or drifted.
	state string
	// since is when the problem was first seen.
	since time.Time
	// onFailure is what follows a failed in-place apply (stepWait or stepDelete), with wait
	// the time left before a deletion.
	onFailure step
	wait      time.Duration
}

// decide says what to do about a pod from what inspect found, the pod's record and mode. It
// has no effects.
func decide(f finding, rec record.Record, mode Mode, deleteAfter time.Duration, now time.Time) plan {
	if f.invalid != "" {
		if rec.Reason == f.invalid {
			return plan{step: stepNothing}
		}
		return plan{step: stepRecordFailed}
	}
	if f.netns != "" && f.liveErr == nil && len(f.diff) == 0 {
		if rec.State == agentapi.StateCaptured && rec.Netns == f.netns {
			return plan{step: stepNothing, state: agentapi.StateCaptured}
		}
		return plan{step: stepRecordInSync, state: agentapi.StateCaptured}
	}
	pl := plan{state: agentapi.StateDrifted, since: rec.ProblemSince}
	if len(f.live) == 0 {
		pl.state = agentapi.StateMissing
	}
	if pl.since.IsZero() {
		pl.since = f.detected
	}
	// Deleting is immediate in delete mode with a known netns; otherwise only once the problem
	// has lasted deleteAfter (a sandbox being recreated has no findable netns for a moment).
	pl.onFailure = stepDelete
	if mode == ModeInPlace || f.netns == "" {
		if wait := deleteAfter - now.Sub(pl.since); wait > 0 {
			pl.onFailure, pl.wait = stepWait, wait
		}
	}
	switch {
	case mode == ModeOff:
		pl.step = stepRecordOnly
	case mode == ModeInPlace && f.netns != "":
		pl.step = stepApply
	default:
		pl.step = pl.onFailure
	}
	return pl
}

// carryOut does what pl says and then changes the pod's record once.
func (r *Repairer) carryOut(ctx context.Context, p record.PodInfo, rec record.Record, f finding, pl plan) (Result, error) {
	pod := p.Namespace + "/" + p.Name
	res := Result{Netns: f.netns, NetnsFrom: f.from, Diff: f.diff, State: pl.state}
	switch pl.step {
	case stepNothing:
		if pl.state == agentapi.StateCaptured {
			res.Action = ActionInSync
		} else {
			res.Action = ActionNone
		}
		return res, nil
	case stepRecordFailed:
		r.event(p, true, "RedirectSettingsInvalid", f.invalid)
		return Result{Action: ActionNone}, r.Store.Update(p.Namespace, p.Name, func(x *record.Record) { x.State, x.Reason = agentapi.StateFailed, f.invalid })
	case stepRecordInSync:
		res.Action = ActionInSync
		return res, r.Store.Update(p.Namespace, p.Name, func(x *record.Record) {
			x.State, x.Netns, x.Reason, x.ProblemSince = agentapi.StateCaptured, f.netns, "rules verified in place by the agent", time.Time{}
			x.Settings, x.Rules = f.settings, f.expected
			if x.Backend == "" {
				x.Backend, _ = r.Engine.BackendName(f.backend)
			}
		})
	}

	// Missing or drifted.
	reason := describe(res, f.liveErr)
	if r.Metrics != nil {
		r.Metrics.Drift.WithLabelValues(pl.state).Inc()
	}
	r.log().Warn("pod rules not in place", "pod", pod, "state", pl.state, "netns", f.netns, "from", f.from, "diff", len(f.diff), "error", f.liveErr)
	problem := func(reason string) func(x *record.Record) {
		return func(x *record.Record) {
			x.State, x.Reason, x.ProblemSince = pl.state, reason, pl.since
			if f.netns != "" {
				x.Netns = f.netns
			}
			if x.Settings == nil {
				x.Settings = f.settings
			}
		}
	}
	next := pl.step
	if next == stepApply {
		err := r.applyInPlace(f)
		if err == nil {
			res.Action, res.Duration = ActionInPlace, r.now().Sub(f.detected)
			r.Metrics.ObserveRepair(ActionInPlace, res.Duration)
			name, _ := r.Engine.BackendName(f.backend)
			msg := fmt.Sprintf("redirect rules were %s; re-applied in place with %s in netns %s (found via %s) in %s", pl.state, name, f.netns, f.from, res.Duration.Round(time.Microsecond))
			r.log().Info("repaired in place", "pod", pod, "duration", res.Duration, "netns", f.netns, "from", f.from)
			r.event(p, false, "RulesRepaired", msg)
			return res, r.Store.Update(p.Namespace, p.Name, func(x *record.Record) {
				x.State, x.Reason, x.Netns, x.ProblemSince = agentapi.StateCaptured, msg, f.netns, time.Time{}
				x.Backend, x.Settings, x.Rules, x.LastApplied = name, f.settings, f.expected, r.now()
				if len(x.PodIPs) == 0 {
					x.PodIPs = slices.Clone(f.ips)
				}
			})
		}
		reason = fmt.Sprintf("%s; repair in place failed: %v", reason, err)
		r.log().Error("repair in place failed", "pod", pod, "error", err)
		next = pl.onFailure
	}
	switch next {
	case stepRecordOnly:
		res.Action = ActionOff
		r.Metrics.ObserveRepair(ActionOff, 0)
		if rec.State != pl.state {
			r.event(p, true, "RulesNotInPlace", reason+" (repair is off)")
		}
		return res, r.Store.Update(p.Namespace, p.Name, problem(reason))
	case stepWait:
		res.Action, res.RetryAfter = ActionFailed, pl.wait
		r.log().Info("pod rules not in place; deleting the pod if that lasts", "pod", pod, "in", pl.wait)
		return res, r.Store.Update(p.Namespace, p.Name, problem(reason))
	}
	// stepDelete
	if err := r.Store.Update(p.Namespace, p.Name, problem(reason)); err != nil {
		return res, err
	}
	if r.DeletePod == nil {
		res.Action = ActionFailed
		r.Metrics.ObserveRepair(ActionFailed, 0)
		return res, fmt.Errorf("pod %s: %s; cannot delete the pod", pod, reason)
	}
	if err := r.DeletePod(ctx, p.Namespace, p.Name, p.UID); err != nil {
		res.Action = ActionFailed
		r.Metrics.ObserveRepair(ActionFailed, 0)
		r.event(p, true, "RepairFailed", fmt.Sprintf("%s; deleting the pod failed: %v", reason, err))
		return res, fmt.Errorf("pod %s: delete for repair: %w", pod, err)
	}
	res.Action, res.Duration = ActionDeleted, r.now().Sub(f.detected)
	r.Metrics.ObserveRepair(ActionDeleted, res.Duration)
	r.event(p, true, "PodDeletedForRepair", reason+"; pod deleted so that its controller recreates it with the rules")
	return res, nil
}

// applyInPlace applies the rules in the pod's netns and reads them back.
func (r *Repairer) applyInPlace(f finding) error {
	if err := r.Engine.Apply(f.backend, f.netns, f.rs); err != nil {
		return err
	}
	after, err := r.Engine.Live(f.backend, f.netns)
	if err != nil {
		return err
	}
	if d := rules.Diff(f.expected, after); len(d) > 0 {
		return fmt.Errorf("rules still differ after applying them: %s", strings.Join(d, "; "))
	}
	return nil
}

func describe(res Result, liveErr error) string {
	switch {
	case res.Netns == "":
		return fmt.Sprintf("redirect rules %s: network namespace not found: %v", res.State, liveErr)
	case liveErr != nil:
		return fmt.Sprintf("redirect rules %s: reading them failed: %v", res.State, liveErr)
	}
	const show = 6
	d := res.Diff
	more := ""
	if len(d) > show {
		d, more = d[:show], fmt.Sprintf(" (and %d more)", len(res.Diff)-show)
	}
	return fmt.Sprintf("redirect rules %s: %s%s", res.State, strings.Join(d, "; "), more)
}
