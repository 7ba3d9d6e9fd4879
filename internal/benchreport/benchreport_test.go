package benchreport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReport() Report {
	return Report{
		Machine:  Machine{Cores: 2, LoadAvg: "0.10 0.20 0.30", Kernel: "6.1", GoVersion: "go1.26", Start: time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)},
		Duration: 90 * time.Second,
		Rows: []Row{
			{Area: "rules", Name: "programming p50", Unit: "ms", Ours: 0.412, Peer: "iptables-restore (nft)", PeerVal: 4.5,
				Ratio: 10.9, RatioMin: 9.5, RatioMax: 12.25, Target: "≥ 8x", Pass: Pass(true)},
			{Area: "proxy", Name: "sidelane-proxy", Unit: "ms", Ours: 0.2, Target: "≤ 0.25 ms", Pass: Pass(false),
				Latency: []Point{{50, 0.2}, {90, 0.3}, {99, 0.9}}, Note: "noisy"},
			{Area: "proxy", Name: "direct", Unit: "ms", Ours: 0.1, Latency: []Point{{50, 0.1}, {99, 0.5}, {90, 0.2}}},
		},
		Errors: []string{"agent: boom"},
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2 cores, load average 0.10 0.20 0.30",
		"programming p50", "0.412 ms", "iptables-restore (nft): 4.50 ms", "10.9x (9.50–12.2)", "≥ 8x", "yes",
		"NO", "note [proxy] sidelane-proxy: noisy", "ERROR agent: boom", "3 rows, 1 targets missed, 1 areas failed, 1m30s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	name, err := sampleReport().WriteJSON(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(name) != "20261122T010203Z.json" {
		t.Errorf("name = %s", name)
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 3 || *r.Rows[0].Pass != true || r.Rows[1].Latency[2].Millis != 0.9 {
		t.Errorf("round trip: %+v", r)
	}
}

func TestChart(t *testing.T) {
	c := ChartFromRows("latency at 1000 rps", sampleReport().Rows)
	if len(c.Series) != 2 {
		t.Fatalf("series = %d, want the two rows with latency", len(c.Series))
	}
	named := ChartFromRows("t", []Row{{Name: "latency at 1000 req/s: haproxy", Latency: []Point{{50, 1}}}})
	if got := named.Series[0].Name; got != "haproxy" {
		t.Errorf("series name = %q, want the part behind the last \": \"", got)
	}
	path := filepath.Join(t.TempDir(), "chart.png")
	if err := c.WritePNG(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// the first series' colour must be on the picture
	found := false
	for y := 0; y < img.Bounds().Dy() && !found; y++ {
		for x := 0; x < img.Bounds().Dx(); x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 0x1f && g>>8 == 0x77 && b>>8 == 0xb4 {
				found = true
				break
			}
		}
	}
	if !found {
		t.Error("chart has no line of the first series")
	}
	if _, err := (Chart{Title: "empty"}).Image(); err == nil {
		t.Error("empty chart: want an error")
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6} // 1..10, unsorted
	for _, tc := range []struct{ p, want float64 }{{0, 1}, {10, 1}, {50, 5}, {90, 9}, {99, 10}, {100, 10}} {
		if got := Percentile(v, tc.p); got != tc.want {
			t.Errorf("Percentile(p%g) = %g, want %g", tc.p, got, tc.want)
		}
	}
	if v[0] != 5 {
		t.Error("Percentile sorted its argument in place")
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %g", got)
	}
}

func TestRunAreas(t *testing.T) {
	var progress bytes.Buffer
	ok := func(_ context.Context, cfg Config) ([]Row, error) {
		if fi, err := os.Stat(cfg.WorkDir); err != nil || !fi.IsDir() || cfg.Budget != time.Second || cfg.Rounds != 3 {
			return nil, fmt.Errorf("config %+v", cfg)
		}
		return []Row{{Name: "a row"}, {Area: "other", Name: "b"}}, nil
	}
	failing := func(context.Context, Config) ([]Row, error) {
		return []Row{{Name: "partial"}}, errors.New("boom")
	}
	rep := RunAreas(context.Background(), []Area{{"one", time.Second, ok}, {"two", time.Second, failing}},
		Config{WorkDir: t.TempDir(), Rounds: 3}, &progress)
	if len(rep.Rows) != 3 || rep.Rows[0].Area != "one" || rep.Rows[1].Area != "other" || rep.Rows[2].Area != "two" {
		t.Errorf("rows %+v", rep.Rows)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "two: boom") {
		t.Errorf("errors %q", rep.Errors)
	}
	if got := rep.AreaRows("one"); len(got) != 1 || got[0].Name != "a row" {
		t.Errorf("AreaRows(one) = %+v", got)
	}
	if !strings.Contains(progress.String(), "== two (budget 1s)") {
		t.Errorf("progress %q", progress.String())
	}
}
