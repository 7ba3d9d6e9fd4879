package demoapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

const usage = "usage: demo-app serve [-listen :8080] | get URL | loop [-interval 2s] URL | pause"

// Main runs the demo-app command line (args without the program name) until ctx ends and
// returns the exit code: 0 ok, 1 a failed call or a non-2xx answer, 2 usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stdout, nil))
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := &http.Client{Timeout: 5 * time.Second}
	// parse returns -1 when the flags are fine, else the exit code (0 for -h).
	parse := func(urls int) int {
		err := fs.Parse(args[1:])
		switch {
		case errors.Is(err, flag.ErrHelp):
			return 0
		case err != nil || fs.NArg() != urls:
			fmt.Fprintln(stderr, usage)
			return 2
		}
		return -1
	}
	switch args[0] {
	case "serve":
		listen := fs.String("listen", ":8080", "comma-separated listen addresses")
		if code := parse(0); code >= 0 {
			return code
		}
		if err := Serve(ctx, strings.Split(*listen, ","), logger); err != nil {
			logger.Error("serve", "err", err)
			return 1
		}
	case "get":
		if code := parse(1); code >= 0 {
			return code
		}
		code, body, err := Get(ctx, client, fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%d %s", code, body)
		if code < 200 || code > 299 {
			return 1
		}
	case "loop":
		interval := fs.Duration("interval", 2*time.Second, "time between calls")
		if code := parse(1); code >= 0 {
			return code
		}
		Loop(ctx, client, fs.Arg(0), *interval, logger)
	case "pause":
		<-ctx.Done()
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	return 0
}
