// Command sidelane-cni is Sidelane's chained CNI plugin; see internal/cniplugin and
// docs/cni-plugin.md. The container runtime execs it with CNI_COMMAND set.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/cniplugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := cniplugin.Main(ctx, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
