// Command sidelane-agent is the Sidelane node agent (see package internal/agent).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := agent.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
