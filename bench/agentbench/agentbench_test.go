package agentbench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/benchreport"
)

// TestMain lets the test binary serve as the agent child, as the bench binary does.
func TestMain(m *testing.M) {
	if dir := os.Getenv(ChildEnv); dir != "" {
		if err := Child(dir); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunQuick checks that the benchmark runs and reports sane figures; it asserts no timing.
func TestRunQuick(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rows, err := Run(ctx, benchreport.Config{WorkDir: t.TempDir(), Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("rows = %d, want 3", len(rows))
	}
	for _, r := range rows {
		if r.Ours <= 0 {
			t.Errorf("%s: %v %s, want a positive figure", r.Name, r.Ours, r.Unit)
		}
	}
}
