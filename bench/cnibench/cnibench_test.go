package cnibench

import (
	"context"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/testenv"
)

// TestRunQuick runs the benchmark once, small, as a smoke test: every row must carry a
// measured figure. Speed targets are checked by `make bench`, never here.
func TestRunQuick(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rows, err := Run(ctx, benchreport.Config{WorkDir: t.TempDir(), Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 7 {
		t.Fatalf("%d rows, want 7: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Unit == "GETs" {
			// Every pod is in the agent's cache before its ADD: the plugin path makes no GET.
			if r.Ours != 0 || r.Pass == nil || !*r.Pass {
				t.Errorf("pod GETs per ADD on a cache hit: %+v, want 0", r)
			}
			continue
		}
		if r.Area != "cni" || r.Ours <= 0 || r.Unit != "ms" || (r.Peer != "" && r.PeerVal <= 0) {
			t.Errorf("row %+v", r)
		}
		t.Logf("%s: %.2f %s (%s) %s", r.Name, r.Ours, r.Unit, r.Target, r.Note)
	}
}
