package proxybench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/testenv"
)

// TestRunQuick runs the whole benchmark once, briefly, and checks that every row is filled
// in; it asserts no timing (speed targets are for `make bench`).
func TestRunQuick(t *testing.T) {
	testenv.RequireRoot(t)
	work := t.TempDir()
	rows, err := Run(context.Background(), benchreport.Config{Quick: true, WorkDir: work, Budget: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	latencyRows, ceilings := 0, 0
	for _, r := range rows {
		if strings.HasPrefix(r.Name, "throughput ceiling") {
			// Measured from the direct path's CPU time: a share of direct, for us and haproxy.
			ceilings++
			if r.Ours <= 0 || r.Ours >= 1 || r.PeerVal <= 0 || r.PeerVal >= 1 {
				t.Errorf("ceiling row %+v", r)
			}
		}
		t.Logf("%-70s ours %9.3f %-5s peer %s %9.3f ratio %.2f target %q", r.Name, r.Ours, r.Unit, r.Peer, r.PeerVal, r.Ratio, r.Target)
		if r.Area != "proxy" || r.Unit == "" {
			t.Errorf("bad row %+v", r)
		}
		if r.Target != "" && r.Pass == nil {
			t.Errorf("row with a target but no verdict: %+v", r)
		}
		if strings.HasPrefix(r.Name, "latency at") {
			latencyRows++
			if len(r.Latency) != len(percentiles) || r.Ours <= 0 {
				t.Errorf("latency row %+v", r)
			}
		} else if !strings.HasPrefix(r.Name, "added") && r.Ours <= 0 {
			t.Errorf("row without a figure: %+v", r)
		}
	}
	if ceilings != 1 {
		t.Errorf("%d throughput ceiling rows, want 1", ceilings)
	}
	if latencyRows != len(targets) {
		t.Errorf("%d latency rows, want %d", latencyRows, len(targets))
	}
	if _, err := os.Stat(filepath.Join(work, "proxybench-latency.json")); err != nil {
		t.Error(err)
	}
}
