// Command sidelane-bench runs every Sidelane benchmark in one go and prints one side-by-side
// table (`make bench`). Wiring only: each area lives in bench/<area>bench, the report in
// internal/benchreport.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sidelane/sidelane/bench/agentbench"
	"github.com/sidelane/sidelane/bench/cnibench"
	"github.com/sidelane/sidelane/bench/injectorbench"
	"github.com/sidelane/sidelane/bench/proxybench"
	"github.com/sidelane/sidelane/bench/rulesbench"
	"github.com/sidelane/sidelane/internal/benchreport"
)

type area struct {
	name   string
	budget time.Duration
	run    func(context.Context, benchreport.Config) ([]benchreport.Row, error)
}

func main() {
	if dir := os.Getenv(agentbench.ChildEnv); dir != "" { // the agent under test, see agentbench
		if err := agentbench.Child(dir); err != nil {
			fmt.Fprintln(os.Stderr, "agent child:", err)
			os.Exit(1)
		}
		return
	}
	bin := flag.String("bin", "bin", "directory of the built binaries")
	out := flag.String("out", "bench/results", "where the JSON results and the chart go")
	only := flag.String("only", "", "comma-separated areas to run (rules,cni,proxy,injector,agent); empty: all")
	quick := flag.Bool("quick", false, "fewer rounds and requests: a smoke run, not a measurement")
	rounds := flag.Int("rounds", 5, "interleaved rounds")
	flag.Parse()

	areas := []area{
		{"rules", 90 * time.Second, rulesbench.Run},
		{"cni", 90 * time.Second, cnibench.Run},
		{"proxy", 240 * time.Second, proxybench.Run},
		{"injector", 45 * time.Second, injectorbench.Run},
		{"agent", 45 * time.Second, agentbench.Run},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep := benchreport.Report{Machine: benchreport.ReadMachine(start)}
	work, err := os.MkdirTemp("", "sidelane-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	absBin, _ := filepath.Abs(*bin)
	want := strings.Split(*only, ",")
	for _, a := range areas {
		if *only != "" && !slices.Contains(want, a.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s (budget %s)\n", a.name, a.budget)
		cfg := benchreport.Config{BinDir: absBin, WorkDir: filepath.Join(work, a.name), Rounds: *rounds, Budget: a.budget, Quick: *quick}
		if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", a.name, err))
			continue
		}
		t0 := time.Now()
		rows, err := a.run(ctx, cfg)
		for i := range rows {
			if rows[i].Area == "" {
				rows[i].Area = a.name
			}
		}
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", a.name, err))
		}
		fmt.Fprintf(os.Stderr, "   %s: %d rows in %s\n", a.name, len(rows), time.Since(t0).Round(time.Second))
	}
	rep.Duration = time.Since(start)
	if err := rep.WriteTable(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	if name, err := rep.WriteJSON(*out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	} else {
		fmt.Printf("results: %s\n", name)
	}
	var proxyRows []benchreport.Row
	for _, r := range rep.Rows {
		if r.Area == "proxy" {
			proxyRows = append(proxyRows, r)
		}
	}
	chart := benchreport.ChartFromRows("HTTP latency at 1000 rps, 16 connections (proxy benchmark)", proxyRows)
	if len(chart.Series) > 0 {
		png := filepath.Join(*out, "latency.png")
		if err := chart.WritePNG(png); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		} else {
			fmt.Printf("chart:   %s\n", png)
		}
	}
	if len(rep.Errors) > 0 {
		os.Exit(1)
	}
}
