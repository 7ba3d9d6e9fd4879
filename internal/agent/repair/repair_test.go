package repair

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/redirect"
)

func TestParseMode(t *testing.T) {
	for _, s := range []string{"inplace", "delete", "off"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("sometimes"); err == nil || !strings.Contains(err.Error(), `"sometimes"`) {
		t.Errorf("bad mode: %v", err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	recNS, procNS := filepath.Join(dir, "netns-rec"), filepath.Join(dir, "proc-1-ns-net")
	for _, p := range []string{recNS, procNS} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	defaults := redirect.Defaults()
	pod := record.PodInfo{Namespace: "ns", Name: "web", UID: "u1", PodIPs: []string{"10.1.0.5"}, Injected: true, Running: true, Settings: &defaults}
	// The pod's rules as the real nftables backend renders them, and the same with one rule
	// deleted (tampered).
	inSync, err := (&inspect.Capture{Fake: capture.NewFake()}).Expected("auto", inspect.Ruleset(defaults, pod.PodIPs))
	if err != nil || len(inSync) < 2 {
		t.Fatalf("expected rules %q, %v", inSync, err)
	}
	tampered := inSync[:len(inSync)-1]
	podOff, podBad := pod, pod
	podOff.Repair, podBad.Repair = "off", "sometimes"
	captured := agentapi.Report{Event: "ADD", Namespace: "ns", Name: "web", UID: "u1", ContainerID: "c1", Netns: recNS, State: "captured", Backend: "nftables", Settings: &defaults}
	for _, tc := range []struct {
		name       string
		mode       Mode
		report     *agentapi.Report // nil: no report (pod started before the plugin)
		pod        record.PodInfo
		live       map[string][]string
		findErr    bool
		applyErr   error
		wantAction string
		wantState  string // record state afterwards
		wantFrom   string
		wantDelete bool
		wantEvent  string
	}{
		{name: "in sync", mode: ModeInPlace, report: &captured, pod: pod, live: map[string][]string{recNS: inSync},
			wantAction: ActionInSync, wantState: "captured", wantFrom: "record"},
		{name: "drifted repaired via record", mode: ModeInPlace, report: &captured, pod: pod, live: map[string][]string{recNS: tampered},
			wantAction: ActionInPlace, wantState: "captured", wantFrom: "record", wantEvent: "RulesRepaired"},
		{name: "missing, no report, found in proc", mode: ModeInPlace, pod: pod, live: map[string][]string{},
			wantAction: ActionInPlace, wantState: "captured", wantFrom: "proc", wantEvent: "RulesRepaired"},
		{name: "netns not found: delete", mode: ModeInPlace, pod: pod, live: map[string][]string{}, findErr: true,
			wantAction: ActionDeleted, wantState: "missing", wantDelete: true, wantEvent: "PodDeletedForRepair"},
		{name: "apply fails: delete", mode: ModeInPlace, report: &captured, pod: pod, live: map[string][]string{recNS: nil}, applyErr: errors.New("netlink: no"),
			wantAction: ActionDeleted, wantState: "missing", wantFrom: "record", wantDelete: true, wantEvent: "PodDeletedForRepair"},
		{name: "delete mode", mode: ModeDelete, report: &captured, pod: pod, live: map[string][]string{recNS: tampered},
			wantAction: ActionDeleted, wantState: "drifted", wantFrom: "record", wantDelete: true, wantEvent: "PodDeletedForRepair"},
		{name: "off", mode: ModeOff, report: &captured, pod: pod, live: map[string][]string{recNS: tampered},
			wantAction: ActionOff, wantState: "drifted", wantFrom: "record", wantEvent: "RulesNotInPlace"},
		{name: "pod annotation off wins over the agent's inplace", mode: ModeInPlace, report: &captured, pod: podOff, live: map[string][]string{recNS: tampered},
			wantAction: ActionOff, wantState: "drifted", wantFrom: "record", wantEvent: "RulesNotInPlace"},
		{name: "unknown pod annotation: the agent's mode", mode: ModeInPlace, report: &captured, pod: podBad, live: map[string][]string{recNS: tampered},
			wantAction: ActionInPlace, wantState: "captured", wantFrom: "record", wantEvent: "RulesRepaired"},
		{name: "not injected", mode: ModeInPlace, pod: record.PodInfo{Namespace: "ns", Name: "web", Running: true}, live: map[string][]string{},
			wantAction: ActionNone},
		{name: "plugin failed it", mode: ModeInPlace, report: &agentapi.Report{Event: "ADD", Namespace: "ns", Name: "web", UID: "u1", State: "failed"}, pod: pod,
			live: map[string][]string{}, wantAction: ActionNone, wantState: "failed"},
		{name: "bad annotations", mode: ModeInPlace, pod: record.PodInfo{Namespace: "ns", Name: "web", UID: "u1", Injected: true, Running: true, SettingsErr: "annotation x: bad"},
			live: map[string][]string{}, wantAction: ActionNone, wantState: "failed", wantEvent: "RedirectSettingsInvalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := record.Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if tc.report != nil {
				if err := st.ApplyReport(*tc.report); err != nil {
					t.Fatal(err)
				}
			}
			fake := capture.NewFake()
			fake.ApplyErr = tc.applyErr
			for netns, lines := range tc.live {
				fake.SetLive(netns, lines)
			}
			eng := &inspect.Capture{Fake: fake}
			var deleted bool
			var events []string
			r := &Repairer{
				Store: st, Engine: eng, Mode: tc.mode, DefaultBackend: "auto",
				FindNetns: func(ips []string) (string, error) {
					if tc.findErr || len(ips) == 0 || ips[0] != "10.1.0.5" {
						return "", errors.New("not found")
					}
					return procNS, nil
				},
				DeletePod: func(_ context.Context, ns, name, uid string) error {
					if ns != "ns" || name != "web" || uid != "u1" {
						t.Errorf("delete %s/%s uid %s", ns, name, uid)
					}
					deleted = true
					return nil
				},
				Event: func(_ record.PodInfo, _ bool, reason, _ string) { events = append(events, reason) },
			}
			res, err := r.Check(context.Background(), tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != tc.wantAction || res.NetnsFrom != tc.wantFrom || deleted != tc.wantDelete {
				t.Fatalf("result %+v deleted %v, want action %s from %q deleted %v", res, deleted, tc.wantAction, tc.wantFrom, tc.wantDelete)
			}
			if got := strings.Join(events, ","); got != tc.wantEvent {
				t.Errorf("events %q, want %q", got, tc.wantEvent)
			}
			rec, ok := st.Get("ns", "web")
			if tc.wantState == "" {
				if ok {
					t.Errorf("record %+v, want none", rec)
				}
				return
			}
			if !ok || rec.State != tc.wantState {
				t.Fatalf("record %+v, want state %s", rec, tc.wantState)
			}
			if tc.wantAction == ActionInPlace {
				if rec.Netns == "" || rec.LastApplied.IsZero() || len(rec.Rules) != len(inSync) || rec.Backend != "nftables" {
					t.Errorf("repaired record %+v", rec)
				}
				if len(fake.Applied()) != 1 {
					t.Errorf("applied %v", fake.Applied())
				}
				// A second check finds it in sync and does nothing more.
				res, err := r.Check(context.Background(), tc.pod)
				if err != nil || res.Action != ActionInSync || len(fake.Applied()) != 1 {
					t.Errorf("second check: %+v %v applied %v", res, err, fake.Applied())
				}
			}
		})
	}
}

func TestDeleteWaitsForDeleteAfter(t *testing.T) {
	st, err := record.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	deleted := 0
	defaults := redirect.Defaults()
	r := &Repairer{Store: st, Engine: &inspect.Capture{Fake: capture.NewFake()}, Mode: ModeInPlace, DefaultBackend: "auto", DeleteAfter: 30 * time.Second,
		Now:       func() time.Time { return now },
		FindNetns: func([]string) (string, error) { return "", errors.New("no netns has 10.1.0.5") },
		DeletePod: func(context.Context, string, string, string) error { deleted++; return nil },
	}
	pod := record.PodInfo{Namespace: "ns", Name: "web", UID: "u1", PodIPs: []string{"10.1.0.5"}, Injected: true, Running: true, Settings: &defaults}
	for _, step := range []struct {
		advance   time.Duration
		wantRetry time.Duration
		wantDel   int
	}{{0, 30 * time.Second, 0}, {20 * time.Second, 10 * time.Second, 0}, {10 * time.Second, 0, 1}} {
		now = now.Add(step.advance)
		res, err := r.Check(context.Background(), pod)
		if err != nil || res.RetryAfter != step.wantRetry || deleted != step.wantDel {
			t.Fatalf("after %v: %+v %v deleted %d, want retry %v deleted %d", step.advance, res, err, deleted, step.wantRetry, step.wantDel)
		}
	}
	if rec, _ := st.Get("ns", "web"); !rec.ProblemSince.Equal(time.Unix(1000, 0)) {
		t.Errorf("problem since %v", rec.ProblemSince)
	}
}

// TestDecide: the decision alone, without a store or an engine.
func TestDecide(t *testing.T) {
	now := time.Unix(1000, 0)
	inSync := finding{netns: "/n", live: []string{"r"}, detected: now}
	drifted := finding{netns: "/n", live: []string{"x"}, diff: []string{"-r", "+x"}, detected: now}
	noNetns := finding{liveErr: errors.New("not found"), detected: now}
	captured := record.Record{PodRecord: agentapi.PodRecord{State: agentapi.StateCaptured, Netns: "/n"}}
	old := record.Record{PodRecord: agentapi.PodRecord{State: agentapi.StateMissing}, ProblemSince: now.Add(-time.Minute)}
	for _, tc := range []struct {
		name string
		f    finding
		rec  record.Record
		mode Mode
		want plan
	}{
		{"invalid, new reason", finding{invalid: "bad"}, record.Record{}, ModeInPlace, plan{step: stepRecordFailed}},
		{"invalid, already recorded", finding{invalid: "bad"}, record.Record{PodRecord: agentapi.PodRecord{Reason: "bad"}}, ModeInPlace, plan{step: stepNothing}},
		{"in sync, recorded", inSync, captured, ModeInPlace, plan{step: stepNothing, state: agentapi.StateCaptured}},
		{"in sync, not recorded", inSync, record.Record{}, ModeInPlace, plan{step: stepRecordInSync, state: agentapi.StateCaptured}},
		{"drifted, inplace", drifted, captured, ModeInPlace, plan{step: stepApply, state: agentapi.StateDrifted, since: now, onFailure: stepWait, wait: 30 * time.Second}},
		{"drifted, off", drifted, captured, ModeOff, plan{step: stepRecordOnly, state: agentapi.StateDrifted, since: now, onFailure: stepDelete}},
		{"drifted, delete mode deletes at once", drifted, captured, ModeDelete, plan{step: stepDelete, state: agentapi.StateDrifted, since: now, onFailure: stepDelete}},
		{"no netns, young problem", noNetns, captured, ModeInPlace, plan{step: stepWait, state: agentapi.StateMissing, since: now, onFailure: stepWait, wait: 30 * time.Second}},
		{"no netns, old problem", noNetns, old, ModeDelete, plan{step: stepDelete, state: agentapi.StateMissing, since: old.ProblemSince, onFailure: stepDelete}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(tc.f, tc.rec, tc.mode, 30*time.Second, now); got != tc.want {
				t.Errorf("decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}
