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
// pod's sidelane.io/repair annotation).
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
	settings := rec.Settings
	if settings == nil {
		settings = p.Settings
	}
	if settings == nil {
		reason := "no valid redirect settings: " + p.SettingsErr
		if rec.Reason != reason {
			err := r.Store.Update(p.Namespace, p.Name, func(x *record.Record) { x.State, x.Reason = agentapi.StateFailed, reason })
			r.event(p, true, "RedirectSettingsInvalid", reason)
			return Result{Action: ActionNone}, err
		}
		return Result{Action: ActionNone}, nil
	}
	ips := p.PodIPs
	if len(ips) == 0 {
		ips = rec.PodIPs
	}
	backend := inspect.BackendOf(rec, r.DefaultBackend)
	rs := inspect.Ruleset(*settings, ips)
	expected, err := r.Engine.Expected(backend, rs)
	if err != nil {
		return Result{Action: ActionFailed}, fmt.Errorf("pod %s/%s: expected rules: %w", p.Namespace, p.Name, err)
	}

	// Find the namespace and read the live rules: the recorded netns first, then /proc.
	res := Result{}
	var live []string
	var liveErr error
	if rec.Netns != "" {
		if _, err := os.Stat(rec.Netns); err == nil {
			res.Netns, res.NetnsFrom = rec.Netns, "record"
			live, liveErr = r.Engine.Live(backend, rec.Netns)
		}
	}
	if res.Netns == "" || liveErr != nil {
		res.Netns, res.NetnsFrom = "", ""
		if r.FindNetns != nil && len(ips) > 0 {
			if path, err := r.FindNetns(ips); err == nil {
				res.Netns, res.NetnsFrom = path, "proc"
				live, liveErr = r.Engine.Live(backend, path)
			} else {
				liveErr = err
			}
		} else if liveErr == nil {
			liveErr = errors.New("network namespace unknown and the pod has no IP to look for")
		}
	}
	detected := r.now()
	if res.Netns != "" && liveErr == nil {
		res.Diff = rules.Diff(expected, live)
		if len(res.Diff) == 0 {
			res.Action, res.State = ActionInSync, agentapi.StateCaptured
			if rec.State != agentapi.StateCaptured || rec.Netns != res.Netns {
				err := r.Store.Update(p.Namespace, p.Name, func(x *record.Record) {
					x.State, x.Netns, x.Reason, x.ProblemSince = agentapi.StateCaptured, res.Netns, "rules verified in place by the agent", time.Time{}
					x.Settings, x.Rules = settings, expected
					if x.Backend == "" {
						x.Backend, _ = r.Engine.BackendName(backend)
					}
				})
				return res, err
			}
			return res, nil
		}
	}

	// Missing or drifted.
	res.State = agentapi.StateDrifted
	if len(live) == 0 {
		res.State = agentapi.StateMissing
	}
	reason := describe(res, liveErr)
	if r.Metrics != nil {
		r.Metrics.Drift.WithLabelValues(res.State).Inc()
	}
	r.log().Warn("pod rules not in place", "pod", p.Namespace+"/"+p.Name, "state", res.State, "netns", res.Netns, "from", res.NetnsFrom, "diff", len(res.Diff), "error", liveErr)
	since := rec.ProblemSince
	if since.IsZero() {
		since = detected
	}
	if err := r.Store.Update(p.Namespace, p.Name, func(x *record.Record) {
		x.State, x.Reason, x.ProblemSince = res.State, reason, since
		if res.Netns != "" {
			x.Netns = res.Netns
		}
		if x.Settings == nil {
			x.Settings = settings
		}
	}); err != nil {
		return res, err
	}

	mode := r.modeFor(p)
	switch {
	case mode == ModeOff:
		res.Action = ActionOff
		r.Metrics.ObserveRepair(ActionOff, 0)
		if rec.State != res.State {
			r.event(p, true, "RulesNotInPlace", reason+" (repair is off)")
		}
		return res, nil
	case mode == ModeInPlace && res.Netns != "":
		err := r.Engine.Apply(backend, res.Netns, rs)
		if err == nil {
			var after []string
			after, err = r.Engine.Live(backend, res.Netns)
			if err == nil && len(rules.Diff(expected, after)) > 0 {
				err = fmt.Errorf("rules still differ after applying them: %s", strings.Join(rules.Diff(expected, after), "; "))
			}
		}
		if err == nil {
			res.Action, res.Duration = ActionInPlace, r.now().Sub(detected)
			r.Metrics.ObserveRepair(ActionInPlace, res.Duration)
			name, _ := r.Engine.BackendName(backend)
			msg := fmt.Sprintf("redirect rules were %s; re-applied in place with %s in netns %s (found via %s) in %s", res.State, name, res.Netns, res.NetnsFrom, res.Duration.Round(time.Microsecond))
			r.log().Info("repaired in place", "pod", p.Namespace+"/"+p.Name, "duration", res.Duration, "netns", res.Netns, "from", res.NetnsFrom)
			r.event(p, false, "RulesRepaired", msg)
			return res, r.Store.Update(p.Namespace, p.Name, func(x *record.Record) {
				x.State, x.Reason, x.Netns, x.ProblemSince = agentapi.StateCaptured, msg, res.Netns, time.Time{}
				x.Backend, x.Settings, x.Rules, x.LastApplied = name, settings, expected, r.now()
				if len(x.PodIPs) == 0 {
					x.PodIPs = slices.Clone(ips)
				}
			})
		}
		reason = fmt.Sprintf("%s; repair in place failed: %v", reason, err)
		r.log().Error("repair in place failed", "pod", p.Namespace+"/"+p.Name, "error", err)
	}
	// Delete mode, or in place was impossible: only once the problem has lasted DeleteAfter
	// (a sandbox being recreated has no findable netns for a moment).
	if mode == ModeInPlace || res.Netns == "" {
		if wait := r.DeleteAfter - r.now().Sub(since); wait > 0 {
			res.Action, res.RetryAfter = ActionFailed, wait
			r.log().Info("pod rules not in place; deleting the pod if that lasts", "pod", p.Namespace+"/"+p.Name, "in", wait)
			return res, nil
		}
	}
	if r.DeletePod == nil {
		res.Action = ActionFailed
		r.Metrics.ObserveRepair(ActionFailed, 0)
		return res, fmt.Errorf("pod %s/%s: %s; cannot delete the pod", p.Namespace, p.Name, reason)
	}
	if err := r.DeletePod(ctx, p.Namespace, p.Name, p.UID); err != nil {
		res.Action = ActionFailed
		r.Metrics.ObserveRepair(ActionFailed, 0)
		r.event(p, true, "RepairFailed", fmt.Sprintf("%s; deleting the pod failed: %v", reason, err))
		return res, fmt.Errorf("pod %s/%s: delete for repair: %w", p.Namespace, p.Name, err)
	}
	res.Action, res.Duration = ActionDeleted, r.now().Sub(detected)
	r.Metrics.ObserveRepair(ActionDeleted, res.Duration)
	r.event(p, true, "PodDeletedForRepair", reason+"; pod deleted so that its controller recreates it with the rules")
	return res, nil
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
