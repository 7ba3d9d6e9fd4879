package injectorbench

import (
	"context"
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
