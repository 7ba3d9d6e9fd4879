package record

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/redirect"
)

func add(ns, name, uid, cid string) agentapi.Report {
	st := redirect.Defaults()
	return agentapi.Report{Event: agentapi.EventAdd, Namespace: ns, Name: name, UID: uid, ContainerID: cid,
		Netns: "/var/run/netns/" + cid, State: agentapi.StateCaptured, Backend: "nftables", Settings: &st,
		Rules: []string{"rule " + cid}, Time: time.Unix(100, 0).UTC(), PodIPs: []string{"10.0.0.1"}}
}

func TestPersistAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyReport(add("ns", "a", "u1", "c1")); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyReport(add("ns", "b", "u2", "c2")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("record file mode %v: must not be group/world readable", fi.Mode().Perm())
	}
	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.List()
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("after restart: %+v", got)
	}
	a := got[0]
	if a.Netns != "/var/run/netns/c1" || a.Backend != "nftables" || a.State != agentapi.StateCaptured ||
		a.Settings == nil || a.Settings.InboundCapturePort != 15006 || len(a.Rules) != 1 || !a.LastApplied.Equal(time.Unix(100, 0)) {
		t.Errorf("record after restart: %+v", a)
	}
	// No temporary files are left next to the record.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only %s", len(ents), FileName)
	}
}

func TestOpenCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); err == nil || !strings.Contains(err.Error(), FileName) {
		t.Fatalf("corrupt record: err = %v, want one naming %s", err, FileName)
	}
}

func TestReports(t *testing.T) {
	fail := agentapi.Report{Event: agentapi.EventAdd, Namespace: "ns", Name: "a", UID: "u1", ContainerID: "c1", State: agentapi.StateFailed, Reason: "annotation x: bad"}
	check := add("ns", "a", "u1", "c1")
	check.Event, check.State, check.Rules = agentapi.EventCheck, agentapi.StateDrifted, nil
	for _, tc := range []struct {
		name      string
		reports   []agentapi.Report
		wantErr   string
		wantState string // "" = no record
		wantNetns string
		wantRules int
	}{
		{name: "add captured", reports: []agentapi.Report{add("ns", "a", "u1", "c1")}, wantState: "captured", wantNetns: "/var/run/netns/c1", wantRules: 1},
		{name: "add failed", reports: []agentapi.Report{fail}, wantState: "failed"},
		{name: "del of current sandbox", reports: []agentapi.Report{add("ns", "a", "u1", "c1"), {Event: "DEL", Namespace: "ns", Name: "a", ContainerID: "c1"}}},
		{name: "del of old sandbox keeps new", reports: []agentapi.Report{add("ns", "a", "u1", "c2"), {Event: "DEL", Namespace: "ns", Name: "a", ContainerID: "c1"}},
			wantState: "captured", wantNetns: "/var/run/netns/c2", wantRules: 1},
		{name: "new sandbox replaces", reports: []agentapi.Report{add("ns", "a", "u1", "c1"), add("ns", "a", "u1", "c2")}, wantState: "captured", wantNetns: "/var/run/netns/c2", wantRules: 1},
		{name: "check keeps rules", reports: []agentapi.Report{add("ns", "a", "u1", "c1"), check}, wantState: "drifted", wantNetns: "/var/run/netns/c1", wantRules: 1},
		{name: "new uid forgets old", reports: []agentapi.Report{add("ns", "a", "u1", "c1"), {Event: "ADD", Namespace: "ns", Name: "a", UID: "u2", State: "skipped"}}, wantState: "skipped"},
		{name: "unknown event", reports: []agentapi.Report{{Event: "UP", Namespace: "ns", Name: "a"}}, wantErr: `unknown event "UP"`},
		{name: "unknown state", reports: []agentapi.Report{{Event: "ADD", Namespace: "ns", Name: "a", State: "weird"}}, wantErr: `unknown state "weird"`},
		{name: "no name", reports: []agentapi.Report{{Event: "ADD", Namespace: "ns", State: "captured"}}, wantErr: "namespace and name are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for _, r := range tc.reports {
				last = s.ApplyReport(r)
			}
			if tc.wantErr != "" {
				if last == nil || !strings.Contains(last.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", last, tc.wantErr)
				}
				return
			}
			if last != nil {
				t.Fatal(last)
			}
			r, ok := s.Get("ns", "a")
			if tc.wantState == "" {
				if ok {
					t.Fatalf("record %+v, want none", r)
				}
				return
			}
			if !ok || r.State != tc.wantState || r.Netns != tc.wantNetns || len(r.Rules) != tc.wantRules {
				t.Fatalf("record %+v (ok %v), want state %s netns %q rules %d", r, ok, tc.wantState, tc.wantNetns, tc.wantRules)
			}
		})
	}
}

func TestBound(t *testing.T) {
	s, err := Open(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, 0)
	s.SetClock(func() time.Time { now = now.Add(time.Second); return now })
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if err := s.ApplyReport(add("ns", n, n, n)); err != nil {
			t.Fatal(err)
		}
	}
	got := s.List()
	if len(got) != 3 || got[0].Name != "c" || got[2].Name != "e" {
		t.Fatalf("bounded record: %+v", got)
	}
	long := add("ns", "f", "f", "f")
	long.State, long.Reason = agentapi.StateFailed, strings.Repeat("x", 5000)
	if err := s.ApplyReport(long); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("ns", "f"); len(r.Reason) > maxReason+8 {
		t.Errorf("reason not bounded: %d bytes", len(r.Reason))
	}
}

func TestAlign(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []agentapi.Report{add("ns", "gone", "g", "c1"), add("ns", "kept", "k", "c2"), add("ns", "renewed", "old", "c3")} {
		if err := s.ApplyReport(r); err != nil {
			t.Fatal(err)
		}
	}
	err = s.Sync([]PodInfo{
		{Namespace: "ns", Name: "kept", UID: "k", Injected: true, Running: true},
		{Namespace: "ns", Name: "renewed", UID: "new", Injected: true, Running: false},
		{Namespace: "ns", Name: "early", UID: "e", Injected: true, Running: true, PodIPs: []string{"10.0.0.9"}},
		{Namespace: "ns", Name: "plain", UID: "p", Injected: false, Running: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range s.List() {
		names = append(names, r.Name+"="+r.State)
	}
	if got, want := strings.Join(names, " "), "early=missing kept=captured"; got != want {
		t.Fatalf("after sync: %s, want %s", got, want)
	}
	if r, _ := s.Get("ns", "early"); len(r.PodIPs) != 1 || r.UID != "e" {
		t.Errorf("missing record: %+v", r)
	}
	if err := s.PodDeleted("ns", "kept", "other-uid"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("ns", "kept"); !ok {
		t.Error("delete of another uid removed the record")
	}
	if err := s.PodDeleted("ns", "kept", "k"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("ns", "kept"); ok {
		t.Error("deleted pod still recorded")
	}
}
