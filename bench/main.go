// Command sidelane-bench runs every Sidelane benchmark in one go and prints one side-by-side
// table (`make bench`). Wiring only: the run is bench/suite, each area bench/<area>bench, the
// report internal/benchreport.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/bench/suite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := suite.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
