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

	areas := []benchreport.Area{
		{Name: "rules", Budget: 90 * time.Second, Run: rulesbench.Run},
		{Name: "cni", Budget: 90 * time.Second, Run: cnibench.Run},
		{Name: "proxy", Budget: 240 * time.Second, Run: proxybench.Run},
		{Name: "proxy", Budget: 120 * time.Second, Run: proxybench.RunGRPC}, // gRPC over HTTP/2
		{Name: "injector", Budget: 45 * time.Second, Run: injectorbench.Run},
		{Name: "agent", Budget: 45 * time.Second, Run: agentbench.Run},
	}
	if *only != "" {
		want := strings.Split(*only, ",")
		areas = slices.DeleteFunc(areas, func(a benchreport.Area) bool { return !slices.Contains(want, a.Name) })
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "sidelane-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	absBin, _ := filepath.Abs(*bin)
	rep := benchreport.RunAreas(ctx, areas, benchreport.Config{BinDir: absBin, WorkDir: work, Rounds: *rounds, Quick: *quick}, os.Stderr)
	if err := rep.WriteTable(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	if name, err := rep.WriteJSON(*out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	} else {
		fmt.Printf("results: %s\n", name)
	}
	chart := benchreport.ChartFromRows("HTTP latency at 1000 rps, 16 connections (proxy benchmark)", rep.AreaRows("proxy"))
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
