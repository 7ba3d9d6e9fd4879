// Command demo-app is the workload of Sidelane's demo and end-to-end tests.
//
//	demo-app serve [-listen :8080,:9090]   HTTP server answering who served and who asked
//	demo-app get URL                        one GET; exit status 1 on failure or non-2xx
//	demo-app loop [-interval 2s] URL        GET forever, one log line per call
//	demo-app pause                          wait for SIGTERM/SIGINT (sandbox image)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sidelane/sidelane/internal/demoapp"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.New(os.Stdout, "", log.LstdFlags)
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	client := &http.Client{Timeout: 5 * time.Second}
	switch os.Args[1] {
	case "serve":
		listen := fs.String("listen", ":8080", "comma-separated listen addresses")
		fs.Parse(os.Args[2:])
		if err := demoapp.Serve(ctx, strings.Split(*listen, ","), logger); err != nil {
			logger.Fatal(err)
		}
	case "get":
		fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		code, body, err := demoapp.Get(ctx, client, fs.Arg(0))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d %s", code, body)
		if code < 200 || code > 299 {
			os.Exit(1)
		}
	case "loop":
		interval := fs.Duration("interval", 2*time.Second, "time between calls")
		fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		demoapp.Loop(ctx, client, fs.Arg(0), *interval, logger)
	case "pause":
		<-ctx.Done()
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demo-app serve [-listen :8080] | get URL | loop [-interval 2s] URL | pause")
	os.Exit(2)
}
