package inspect

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

func TestView(t *testing.T) {
	s := redirect.Defaults()
	netns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The real renderings of one family, and a diff of them with a sign.
	lines := func(backend string, fams ...rules.Family) []string {
		b, err := capture.NewFake().New(backend)
		if err != nil {
			t.Fatal(err)
		}
		return b.Expected(rules.Build(s, fams...))
	}
	signed := func(sign string, l []string) string {
		var out []string
		for _, x := range l {
			out = append(out, sign+x)
		}
		return strings.Join(out, " ")
	}
	iptV4, nftV4 := lines("iptables", rules.IPv4), lines("nftables", rules.IPv4)
	nftV6 := lines("nftables", rules.IPv4, rules.IPv6)[len(nftV4):] // the ip6 table
	for _, tc := range []struct {
		name    string
		rec     record.Record
		live    []string
		inSync  bool
		diff    string
		backend string
		err     string
	}{
		{name: "v4 in sync", rec: rec("captured", &s, netns, "", "10.0.0.1"), live: iptV4, inSync: true, backend: "iptables"},
		{name: "dual stack", rec: rec("captured", &s, netns, "nftables", "10.0.0.1", "fd00::1"), live: nftV4, diff: signed("-", nftV6), backend: "nftables"},
		{name: "skipped expects nothing", rec: rec("skipped", nil, netns, "", "10.0.0.1"), inSync: true, backend: "iptables"},
		{name: "skipped with rules", rec: rec("skipped", nil, netns, "", "10.0.0.1"), live: iptV4, diff: signed("+", iptV4), backend: "iptables"},
		{name: "no netns", rec: rec("missing", &s, "", "", "10.0.0.1"), diff: signed("-", iptV4), err: "network namespace of the pod unknown", backend: "iptables"},
		{name: "no settings", rec: rec("failed", nil, netns, "", ""), err: "no redirect settings", inSync: false, backend: "iptables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := capture.NewFake()
			fake.SetLive(netns, tc.live)
			v := View(&Capture{Fake: fake}, tc.rec, "iptables")
			if v.InSync != tc.inSync || strings.Join(v.Diff, " ") != tc.diff || !strings.Contains(v.LiveErr, tc.err) || v.Backend != tc.backend ||
				v.Expected == nil || v.Live == nil || v.Diff == nil {
				t.Errorf("%+v\nwant diff %q\ngot  diff %q", v, tc.diff, strings.Join(v.Diff, " "))
			}
		})
	}
}

func rec(state string, s *redirect.Settings, netns, backend string, ips ...string) record.Record {
	return record.Record{PodRecord: agentapi.PodRecord{Namespace: "ns", Name: "p", State: state, Settings: s, Netns: netns, Backend: backend, PodIPs: ips}}
}
