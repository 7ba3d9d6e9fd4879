// Command sidelane-proxy is the transparent sidecar proxy (see package proxy and
// docs/proxy.md). Every port and limit is a flag with an environment variable beside it.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := proxy.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
