// Command sidelane-proxy is the transparent sidecar proxy (see package proxy and
// docs/proxy.md). Every port and limit is a flag with an environment variable beside it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/proxy"
)

func main() {
	cfg := proxy.Defaults()
	fs := flag.NewFlagSet("sidelane-proxy", flag.ExitOnError)
	envErr := proxy.BindFlags(fs, &cfg)
	fs.Parse(os.Args[1:])
	logger := log.New(os.Stderr, "", log.LstdFlags)
	if envErr != nil {
		logger.Fatal(envErr)
	}
	procs, source := proxy.ApplyConcurrency(cfg.Concurrency)
	logger.Printf("sidelane-proxy: %d threads (%s)", procs, source)
	srv, err := proxy.New(cfg, os.Stdout, logger)
	if err != nil {
		logger.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sidelane-proxy:", err)
		os.Exit(1)
	}
}
