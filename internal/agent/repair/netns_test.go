package repair

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agent/server"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/testenv"
)

// podNetns is a network namespace standing in for a pod's: a veth end with a unique address
// inside, and a process (the "pause" container) living in it.
type podNetns struct {
	name, path, ip string
	pid            int
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newPodNetns(t testing.TB) podNetns {
	t.Helper()
	id := rand.Uint32()
	p := podNetns{
		name: fmt.Sprintf("slagt-%08x", id),
		// A random address of 100.64.0.0/10 only this namespace holds (other tests' namespaces
		// are not mistaken for ours by the /proc scan).
		ip: fmt.Sprintf("100.%d.%d.%d", 64+id%64, (id>>8)%256, 1+(id>>16)%254),
	}
	p.path = "/var/run/netns/" + p.name
	host, peer := fmt.Sprintf("slh%08x", id), fmt.Sprintf("slp%08x", id)
	run(t, "ip", "netns", "add", p.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.name).Run() })
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run(t, "ip", "link", "set", peer, "netns", p.name)
	run(t, "ip", "-n", p.name, "addr", "add", p.ip+"/32", "dev", peer)
	run(t, "ip", "-n", p.name, "link", "set", peer, "up")
	run(t, "ip", "-n", p.name, "link", "set", "lo", "up")
	cmd := exec.Command("ip", "netns", "exec", p.name, "sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p.pid = cmd.Process.Pid
	// Wait until the process has entered the namespace (ip exec's itself into sleep).
	deadline := time.Now().Add(10 * time.Second)
	for !sameFile(fmt.Sprintf("/proc/%d/ns/net", p.pid), p.path) {
		if time.Now().After(deadline) {
			t.Fatal("process did not enter the namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return false
	}
	sa, sb := fa.Sys().(*syscall.Stat_t), fb.Sys().(*syscall.Stat_t)
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func rulesView(t *testing.T, srv *server.Server, ns, name string) agentapi.RulesView {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.UnixHandler().ServeHTTP(rec, httptest.NewRequest("GET", fmt.Sprintf(agentapi.PathRules, ns, name), nil))
	if rec.Code != 200 {
		t.Fatalf("GET rules: %d %s", rec.Code, rec.Body)
	}
	var v agentapi.RulesView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLiveRulesDriftRepair applies rules with package capture in a real netns, reads them back
// through the API handler, tampers with them, sees the drift and repairs it in place.
func TestLiveRulesDriftRepair(t *testing.T) {
	testenv.RequireRoot(t)
	for _, backend := range []string{"auto", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			pn := newPodNetns(t)
			eng := &inspect.Capture{}
			settings := redirect.Defaults()
			rs := inspect.Ruleset(settings, []string{pn.ip})
			if err := eng.Apply(backend, pn.path, rs); err != nil {
				t.Fatal(err)
			}
			st, err := record.Open(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			name, _ := eng.BackendName(backend)
			exp, _ := eng.Expected(backend, rs)
			if err := st.ApplyReport(agentapi.Report{Event: "ADD", Namespace: "ns", Name: "web", UID: "u1", ContainerID: "c1", Netns: pn.path,
				PodIPs: []string{pn.ip}, State: "captured", Backend: name, Settings: &settings, Rules: exp}); err != nil {
				t.Fatal(err)
			}
			srv := &server.Server{Node: "n", Store: st, Engine: eng}
			v := rulesView(t, srv, "ns", "web")
			if !v.InSync || len(v.Live) == 0 || strings.Join(v.Live, "\n") != strings.Join(v.Expected, "\n") || v.LiveErr != "" {
				t.Fatalf("fresh rules not in sync: %+v", v)
			}
			if !strings.Contains(strings.Join(v.Live, "\n"), "15006") {
				t.Errorf("live rules do not mention the inbound capture port:\n%s", strings.Join(v.Live, "\n"))
			}

			// Tamper: someone rewrites the rules with another capture port.
			other := settings
			other.InboundCapturePort = 15999
			if err := eng.Apply(backend, pn.path, inspect.Ruleset(other, nil)); err != nil {
				t.Fatal(err)
			}
			v = rulesView(t, srv, "ns", "web")
			if v.InSync || len(v.Diff) == 0 || !strings.Contains(strings.Join(v.Diff, "\n"), "15999") {
				t.Fatalf("tampered rules: %+v", v)
			}

			r := &Repairer{Store: st, Engine: eng, Mode: ModeInPlace, DefaultBackend: "auto"}
			pod := record.PodInfo{Namespace: "ns", Name: "web", UID: "u1", PodIPs: []string{pn.ip}, Injected: true, Running: true, Settings: &settings}
			res, err := r.Check(context.Background(), pod)
			if err != nil || res.Action != ActionInPlace || res.State != agentapi.StateDrifted || res.NetnsFrom != "record" {
				t.Fatalf("repair: %+v %v", res, err)
			}
			t.Logf("%s: drift repaired in place in %v", backend, res.Duration)
			if v := rulesView(t, srv, "ns", "web"); !v.InSync || v.Pod.State != agentapi.StateCaptured {
				t.Fatalf("after repair: %+v", v)
			}
			// Cleanup of the rules themselves goes with the netns.
		})
	}
}

// TestRepairMissingViaProc repairs a pod that started before the plugin was installed: no
// report, no rules; its netns is found by scanning /proc for the pod IP.
func TestRepairMissingViaProc(t *testing.T) {
	testenv.RequireRoot(t)
	pn := newPodNetns(t)
	path, err := FindNetnsByIP("/proc", []string{pn.ip})
	if err != nil {
		t.Fatal(err)
	}
	if !sameFile(path, pn.path) {
		t.Fatalf("found %s, which is not the pod's netns", path)
	}
	if _, err := FindNetnsByIP("/proc", []string{"100.127.255.254"}); err == nil || !strings.Contains(err.Error(), "100.127.255.254") {
		t.Errorf("absent IP: err = %v", err)
	}

	st, err := record.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	eng := &inspect.Capture{}
	var events []string
	r := &Repairer{Store: st, Engine: eng, Mode: ModeInPlace, DefaultBackend: "auto",
		FindNetns: func(ips []string) (string, error) { return FindNetnsByIP("/proc", ips) },
		Event:     func(_ record.PodInfo, _ bool, reason, msg string) { events = append(events, reason+": "+msg) },
	}
	settings := redirect.Defaults()
	pod := record.PodInfo{Namespace: "ns", Name: "early", UID: "u9", PodIPs: []string{pn.ip}, Injected: true, Running: true, Settings: &settings}
	res, err := r.Check(context.Background(), pod)
	if err != nil || res.Action != ActionInPlace || res.State != agentapi.StateMissing || res.NetnsFrom != "proc" {
		t.Fatalf("repair: %+v %v", res, err)
	}
	t.Logf("missing rules repaired in place in %v (netns %s via /proc)", res.Duration, res.Netns)
	exp, _ := eng.Expected("auto", inspect.Ruleset(settings, pod.PodIPs))
	live, err := eng.Live("auto", pn.path)
	if err != nil || strings.Join(live, "\n") != strings.Join(exp, "\n") {
		t.Fatalf("live rules after repair (%v):\n%s\nwant:\n%s", err, strings.Join(live, "\n"), strings.Join(exp, "\n"))
	}
	if len(events) != 1 || !strings.HasPrefix(events[0], "RulesRepaired") {
		t.Errorf("events %q", events)
	}
	if rec, _ := st.Get("ns", "early"); rec.State != agentapi.StateCaptured || rec.Netns != res.Netns {
		t.Errorf("record %+v", rec)
	}

}

// BenchmarkRepairInPlace measures a repair from detection to rules applied (and verified), the
// rules having been removed before each iteration.
func BenchmarkRepairInPlace(b *testing.B) {
	testenv.RequireRoot(b)
	pn := newPodNetns(b)
	st, err := record.Open(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	eng := &inspect.Capture{}
	settings := redirect.Defaults()
	pod := record.PodInfo{Namespace: "ns", Name: "web", UID: "u1", PodIPs: []string{pn.ip}, Injected: true, Running: true, Settings: &settings}
	if err := st.ApplyReport(agentapi.Report{Event: "ADD", Namespace: "ns", Name: "web", UID: "u1", Netns: pn.path, State: "captured", Backend: "nftables", Settings: &settings}); err != nil {
		b.Fatal(err)
	}
	r := &Repairer{Store: st, Engine: eng, Mode: ModeInPlace, DefaultBackend: "auto"}
	nft, _ := capture.New("auto")
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := capture.InNetns(pn.path, nft.Remove); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := r.Check(context.Background(), pod)
		if err != nil || res.Action != ActionInPlace {
			b.Fatalf("%+v %v", res, err)
		}
		total += res.Duration
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-detect-to-applied/op")
}

// TestEngineKeepsNamespacesApart uses one engine (backends created once) for two pods: what is
// applied in one namespace never shows up in, or lands in, the other.
func TestEngineKeepsNamespacesApart(t *testing.T) {
	testenv.RequireRoot(t)
	for _, backend := range []string{"auto", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			a, b := newPodNetns(t), newPodNetns(t)
			eng := &inspect.Capture{}
			s := redirect.Defaults()
			if err := eng.Apply(backend, a.path, inspect.Ruleset(s, nil)); err != nil {
				t.Fatal(err)
			}
			if live, err := eng.Live(backend, b.path); err != nil || len(live) != 0 {
				t.Fatalf("other namespace after apply: %v %q", err, live)
			}
			other := s
			other.OutboundCapturePort = 15555
			if err := eng.Apply(backend, b.path, inspect.Ruleset(other, nil)); err != nil {
				t.Fatal(err)
			}
			la, _ := eng.Live(backend, a.path)
			lb, _ := eng.Live(backend, b.path)
			ea, _ := eng.Expected(backend, inspect.Ruleset(s, nil))
			eb, _ := eng.Expected(backend, inspect.Ruleset(other, nil))
			if strings.Join(la, "\n") != strings.Join(ea, "\n") || strings.Join(lb, "\n") != strings.Join(eb, "\n") {
				t.Fatalf("namespaces mixed up:\nA:\n%s\nB:\n%s", strings.Join(la, "\n"), strings.Join(lb, "\n"))
			}
		})
	}
}
