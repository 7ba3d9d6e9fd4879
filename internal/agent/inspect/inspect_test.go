package inspect

import (
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

type fakeEngine struct{ live []string }

func (f fakeEngine) BackendName(b string) (string, error) { return b, nil }
func (f fakeEngine) Expected(_ string, rs rules.Ruleset) ([]string, error) {
	var out []string
	for _, fam := range rs.Families {
		out = append(out, fam.String())
	}
	return out, nil
}
func (f fakeEngine) Live(string, string) ([]string, error)     { return f.live, nil }
func (f fakeEngine) Apply(string, string, rules.Ruleset) error { return nil }

func TestView(t *testing.T) {
	s := redirect.Defaults()
	for _, tc := range []struct {
		name    string
		rec     record.Record
		live    []string
		inSync  bool
		diff    string
		backend string
		err     string
	}{
		{name: "v4 in sync", rec: rec("captured", &s, "/ns", "", "10.0.0.1"), live: []string{"ipv4"}, inSync: true, backend: "iptables"},
		{name: "dual stack", rec: rec("captured", &s, "/ns", "nftables", "10.0.0.1", "fd00::1"), live: []string{"ipv4"}, diff: "-ipv6", backend: "nftables"},
		{name: "skipped expects nothing", rec: rec("skipped", nil, "/ns", "", "10.0.0.1"), inSync: true, backend: "iptables"},
		{name: "skipped with rules", rec: rec("skipped", nil, "/ns", "", "10.0.0.1"), live: []string{"ipv4"}, diff: "+ipv4", backend: "iptables"},
		{name: "no netns", rec: rec("missing", &s, "", "", "10.0.0.1"), diff: "-ipv4", err: "network namespace of the pod unknown", backend: "iptables"},
		{name: "no settings", rec: rec("failed", nil, "/ns", "", ""), err: "no redirect settings", inSync: false, backend: "iptables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := View(fakeEngine{live: tc.live}, tc.rec, "iptables")
			if v.InSync != tc.inSync || strings.Join(v.Diff, " ") != tc.diff || !strings.Contains(v.LiveErr, tc.err) || v.Backend != tc.backend ||
				v.Expected == nil || v.Live == nil || v.Diff == nil {
				t.Errorf("%+v", v)
			}
		})
	}
}

func rec(state string, s *redirect.Settings, netns, backend string, ips ...string) record.Record {
	return record.Record{PodRecord: agentapi.PodRecord{Namespace: "ns", Name: "p", State: state, Settings: s, Netns: netns, Backend: backend, PodIPs: ips}}
}
