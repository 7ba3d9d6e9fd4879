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

// TestRunGRPCQuick runs the gRPC benchmark once, briefly, and checks that every row is filled
// in; it asserts no timing (speed targets are for `make bench`).
func TestRunGRPCQuick(t *testing.T) {
	testenv.RequireRoot(t)
	work := t.TempDir()
	rows, err := RunGRPC(context.Background(), benchreport.Config{Quick: true, WorkDir: work, Budget: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 + len(gPercentile); len(rows) != want {
		t.Errorf("%d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		t.Logf("%-70s ours %9.3f %-7s peer %s %9.3f ratio %.2f target %q", r.Name, r.Ours, r.Unit, r.Peer, r.PeerVal, r.Ratio, r.Target)
		if r.Area != "proxy" || r.Unit == "" || !strings.HasPrefix(r.Name, "gRPC") || r.Peer != tHAProxy || r.PeerVal == 0 {
			t.Errorf("bad row %+v", r)
		}
		if !strings.Contains(r.Name, "added") && r.Ours <= 0 {
			t.Errorf("row without a figure: %+v", r)
		}
		if r.Target != "" && r.Pass == nil {
			t.Errorf("row with a target but no verdict: %+v", r)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "proxybench-grpc.json")); err != nil {
		t.Error(err)
	}
}
