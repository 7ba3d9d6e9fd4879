package rulesbench

import (
	"context"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/testenv"
)

// TestRunQuick checks that the benchmark runs and reports sane rows; it asserts no timing.
func TestRunQuick(t *testing.T) {
	testenv.RequireRoot(t)
	rows, err := Run(context.Background(), benchreport.Config{Quick: true, Budget: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("got %d rows, want 4: %+v", len(rows), rows)
	}
	targets := 0
	for _, r := range rows {
		t.Logf("%s: ours %.2f %s, %s %.2f, ratio %.1f", r.Name, r.Ours, r.Unit, r.Peer, r.PeerVal, r.Ratio)
		if r.Area != "rules" || r.Ours <= 0 || r.PeerVal <= 0 || r.Peer == "" {
			t.Errorf("bad row %+v", r)
		}
		if r.Target != "" {
			targets++
			if r.Pass == nil || r.Ratio <= 0 {
				t.Errorf("target row without a verdict: %+v", r)
			}
		}
	}
	if targets != 1 {
		t.Errorf("%d rows carry the target, want 1", targets)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 10; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {100, 10}, {0, 1}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if m, lo, hi := ratios([]time.Duration{1, 2, 4}, []time.Duration{10, 10, 10}); m != 5 || lo != 2.5 || hi != 10 {
		t.Errorf("ratios = %v %v %v", m, lo, hi)
	}
}
