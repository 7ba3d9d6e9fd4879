// Command sidelane-injector is Sidelane's mutating admission webhook (it adds the
// sidelane-proxy container and the redirect annotations to pods of opted-in namespaces) and,
// as `sidelane-injector inject -f app.yaml`, the same injection applied to YAML offline.
// See internal/webhook and docs/injector.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/webhook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := webhook.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
