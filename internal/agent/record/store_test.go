package record

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// TestReportKeysCannotCollide: the record key joins namespace and name with "/", so a name
// that is not a Kubernetes name is refused: "a" + "b/c" and "a/b" + "c" never share a record.
func TestReportKeysCannotCollide(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ns, name, want string }{
		{"a", "b/c", "not a pod name"},
		{"a/b", "c", "not a namespace name"},
		{"A", "web", "not a namespace name"},
		{"ns", "Web_1", "not a pod name"},
		{"ns", strings.Repeat("x", 300), "not a pod name"},
	} {
		r := add(tc.ns, tc.name, "u", "c1")
		if err := s.ApplyReport(r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("report for %q/%q: err = %v, want %q", tc.ns, cut(tc.name), err, tc.want)
		}
	}
	if n := len(s.List()); n != 0 {
		t.Errorf("%d records after refused reports", n)
	}
	if err := s.ApplyReport(add("ns", "web-1.x", "u", "c1")); err != nil {
		t.Errorf("valid names refused: %v", err)
	}
}

// TestReportStringsBounded: every string a report can store is bounded (the reason is cut, the
// rest refused), so that a record of many large reports stays small.
func TestReportStringsBounded(t *testing.T) {
	big := strings.Repeat("x", maxIdentifier+1)
	for _, tc := range []struct {
		name   string
		modify func(r *agentapi.Report)
		want   string
	}{
		{"uid", func(r *agentapi.Report) { r.UID = big }, `"uid"`},
		{"container ID", func(r *agentapi.Report) { r.ContainerID = big }, `"containerID"`},
		{"netns", func(r *agentapi.Report) { r.Netns = big }, `"netns"`},
		{"backend", func(r *agentapi.Report) { r.Backend = big }, `"backend"`},
		{"many IPs", func(r *agentapi.Report) { r.PodIPs = make([]string, maxPodIPs+1) }, "pod IPs"},
		{"long IP", func(r *agentapi.Report) { r.PodIPs = []string{big} }, "pod IP"},
		{"many rules", func(r *agentapi.Report) { r.Rules = make([]string, maxRules+1) }, "rules"},
		{"long rule", func(r *agentapi.Report) { r.Rules = []string{strings.Repeat("x", maxRule+1)} }, "rule of"},
		{"huge settings", func(r *agentapi.Report) { r.Settings.ExcludeInboundPorts = slices.Repeat([]uint16{15000}, 4000) }, "settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			r := add("ns", "a", "u1", "c1")
			st := *r.Settings
			r.Settings = &st
			tc.modify(&r)
			if err := s.ApplyReport(r); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	// 20 reports with 0.5 MiB reasons keep the record file small.
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r := add("ns", fmt.Sprintf("p%d", i), "u", "c")
		r.State, r.Reason = agentapi.StateFailed, strings.Repeat("x", 512<<10)
		if err := s.ApplyReport(r); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || fi.Size() > 64<<10 {
		t.Errorf("record file after 20 large reports: %v bytes (%v), want at most 64 KiB", fi.Size(), err)
	}
}

// TestWriteBehind: while the record is written behind, a change returns without writing the
// file; stop writes every change in one write; afterwards changes are written at once again.
func TestWriteBehind(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop := s.WriteBehind(time.Hour, func(err error) { t.Errorf("write: %v", err) })
	for i := range 20 {
		if err := s.ApplyReport(add("ns", fmt.Sprintf("p%d", i), "u", "c")); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.writes.Load(); n != 0 {
		t.Fatalf("%d writes while written behind with an hour's delay, want 0", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := s.writes.Load(); n != 1 {
		t.Fatalf("%d writes after stop, want 1", n)
	}
	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s2.List()); got != 20 {
		t.Fatalf("%d records on disk after stop, want 20", got)
	}
	if err := s.Delete("ns", "p0"); err != nil {
		t.Fatal(err)
	}
	if n := s.writes.Load(); n != 2 {
		t.Errorf("%d writes after a change past stop, want 2 (written at once)", n)
	}
}

// TestWriteBehindWritesWithinTheDelay: a change is on disk without stop, and a failed write is
// reported and retried.
func TestWriteBehindWritesWithinTheDelay(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the file goes makes the rename fail until it is removed.
	blocker := filepath.Join(dir, FileName)
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 100)
	stop := s.WriteBehind(5*time.Millisecond, func(err error) {
		select {
		case errs <- err:
		default:
		}
	})
	defer stop()
	if err := s.ApplyReport(add("ns", "a", "u1", "c1")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), FileName) {
			t.Errorf("write error %v does not name %s", err, FileName)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no write error reported")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	deadline, tick := time.After(10*time.Second), time.NewTicker(2*time.Millisecond)
	defer tick.Stop()
	for {
		if data, err := os.ReadFile(blocker); err == nil && strings.Contains(string(data), `"a"`) {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the change was not written after the failed write went away")
		case <-tick.C:
		}
	}
}
