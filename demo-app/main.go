// Command demo-app is the workload of Sidelane's demo and end-to-end tests.
//
//	demo-app serve [-listen :8080,:9090]   HTTP server answering who served and who asked
//	demo-app get URL                        one GET; exit status 1 on failure or non-2xx
//	demo-app loop [-interval 2s] URL        GET forever, one log line per call
//	demo-app pause                          wait for SIGTERM/SIGINT (sandbox image)
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/demoapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := demoapp.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
