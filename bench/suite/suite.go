// Package suite is sidelane-bench (`make bench`): it runs every benchmark area in one go —
// each lives in bench/<area>bench — and prints one side-by-side table with
// internal/benchreport, writing the raw figures as JSON and the latency chart beside them.
package suite

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sidelane/sidelane/bench/agentbench"
	"github.com/sidelane/sidelane/bench/cnibench"
	"github.com/sidelane/sidelane/bench/injectorbench"
	"github.com/sidelane/sidelane/bench/proxybench"
	"github.com/sidelane/sidelane/bench/rulesbench"
	"github.com/sidelane/sidelane/internal/benchreport"
)

// Main runs the benchmarks args select and prints the table to stdout; it returns the exit
// code: 0 when every area ran (targets missed are in the table), 1 when one failed, 2 for bad
// flags. An agent child started by agentbench (its environment says so) runs the agent instead.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if dir := os.Getenv(agentbench.ChildEnv); dir != "" { // the agent under test, see agentbench
		if err := agentbench.Child(dir); err != nil {
			fmt.Fprintln(stderr, "agent child:", err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("sidelane-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "bin", "directory of the built binaries")
	out := fs.String("out", "bench/results", "where the JSON results and the chart go")
	only := fs.String("only", "", "comma-separated areas to run (rules,cni,proxy,injector,agent); empty: all")
	quick := fs.Bool("quick", false, "fewer rounds and requests: a smoke run, not a measurement")
	rounds := fs.Int("rounds", 5, "interleaved rounds")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
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
	work, err := os.MkdirTemp("", "sidelane-bench-")
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(work)
	absBin, _ := filepath.Abs(*bin)
	rep := benchreport.RunAreas(ctx, areas, benchreport.Config{BinDir: absBin, WorkDir: work, Rounds: *rounds, Quick: *quick}, stderr)
	if err := rep.WriteTable(stdout); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
	}
	if name, err := rep.WriteJSON(*out); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
	} else {
		fmt.Fprintf(stdout, "results: %s\n", name)
	}
	chart := benchreport.ChartFromRows("HTTP latency at 1000 rps, 16 connections (proxy benchmark)", rep.AreaRows("proxy"))
	if len(chart.Series) > 0 {
		png := filepath.Join(*out, "latency.png")
		if err := chart.WritePNG(png); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
		} else {
			fmt.Fprintf(stdout, "chart:   %s\n", png)
		}
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}
