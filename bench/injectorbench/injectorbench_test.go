package injectorbench

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/benchreport"
)

// TestRunQuick runs the benchmark once, small, as a smoke test: every row carries a measured
// figure and every answer was checked. The p99 target is checked by `make bench`, not here.
func TestRunQuick(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rows, err := Run(ctx, benchreport.Config{WorkDir: t.TempDir(), Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 7 {
		t.Fatalf("%d rows, want 7", len(rows))
	}
	for _, r := range rows {
		if r.Area != "injector" || r.Ours <= 0 {
			t.Errorf("row %+v", r)
		}
		t.Logf("%s: %.3f %s %s", r.Name, r.Ours, r.Unit, r.Target)
	}
	if rows[2].Pass == nil || rows[2].Target == "" {
		t.Error("the p99 row has no target")
	}
	if len(rows[0].Latency) == 0 {
		t.Error("no latency distribution")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	h := histogram{bounds: []float64{0.001, 0.005, inf}, counts: []uint64{50, 90, 100}}
	for _, tc := range []struct{ q, want float64 }{
		{0.5, 0.001},   // exactly the first bucket's top
		{0.25, 0.0005}, // halfway into the first bucket
		{0.7, 0.003},   // halfway into the second
		{0.99, 0.005},  // in +Inf: the last finite bound
	} {
		if got := h.quantile(tc.q); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	d := h.sub(histogram{bounds: h.bounds, counts: []uint64{50, 50, 50}})
	if d.counts[0] != 0 || d.counts[2] != 50 || math.Abs(d.quantile(0.5)-0.0035) > 1e-12 {
		t.Errorf("sub: %+v quantile %v", d.counts, d.quantile(0.5))
	}
	if (histogram{bounds: []float64{inf}, counts: []uint64{0}}).quantile(0.99) != 0 {
		t.Error("empty histogram")
	}
}
