package proxy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// Main runs sidelane-proxy with the command-line args (without the program name) until ctx is
// done (SIGTERM, SIGINT: a graceful drain) or a drain is asked for on the admin port. The access
// log goes to stdout, the proxy's own messages to stderr. It returns the exit code: 0 after a
// drain, 2 for a bad command line, 1 for any other failure.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := Defaults()
	fs := flag.NewFlagSet("sidelane-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envErr := BindFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if envErr != nil {
		fmt.Fprintln(stderr, "sidelane-proxy:", envErr)
		return 1
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "sidelane-proxy:", err)
		return 1
	}
	logger := NewLogger(stderr, cfg.LogLevel)
	procs, source := ApplyConcurrency(cfg.Concurrency)
	logger.Info("threads", "gomaxprocs", procs, "from", source)
	srv, err := New(cfg, stdout, logger)
	if err != nil {
		fmt.Fprintln(stderr, "sidelane-proxy:", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "sidelane-proxy:", err)
		return 1
	}
	return 0
}
