// Package demoapp is the small workload of Sidelane's demo and end-to-end tests: an HTTP
// server that says who answered and who asked, a client that calls a URL once or in a loop,
// and a pause mode used as the local cluster's sandbox image.
//
// It needs no privileges and no capabilities, so it runs under the "restricted" Pod Security
// Standard; with Sidelane its traffic goes through the injected proxy without it knowing.
package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// Reply is what the server answers to every request (except /healthz).
type Reply struct {
	// Server is the host name of the server (the pod name in Kubernetes).
	Server string `json:"server"`
	// Client is the remote address the server saw.
	Client string `json:"client"`
	// Path is the request path.
	Path string `json:"path"`
	// Local is the local address the connection was accepted on.
	Local string `json:"local"`
}

// Handler returns the server's HTTP handler; host is reported in every reply.
func Handler(host string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local := ""
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = a.String()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Reply{Server: host, Client: r.RemoteAddr, Path: r.URL.Path, Local: local})
	})
	return mux
}

// Serve answers HTTP on each of addrs (e.g. ":8080", ":9090") until ctx ends.
func Serve(ctx context.Context, addrs []string, logger *slog.Logger) error {
	if len(addrs) == 0 {
		return errors.New("serve: no listen address")
	}
	host, _ := os.Hostname()
	errc := make(chan error, len(addrs))
	var servers []*http.Server
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return fmt.Errorf("serve: listen on %s: %w", a, err)
		}
		srv := &http.Server{Handler: Handler(host), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		logger.Info("serving HTTP", "addr", ln.Addr().String(), "host", host)
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		for _, s := range servers {
			s.Close()
		}
		return nil
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	}
}

// Get calls url once and returns the status code and body.
func Get(ctx context.Context, client *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("request %q: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("GET %s: read body: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

// Loop calls url every interval until ctx ends, logging one line per call. Failures are
// logged, not fatal: the client keeps trying (servers come and go).
func Loop(ctx context.Context, client *http.Client, url string, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		code, body, err := Get(ctx, client, url)
		if err != nil {
			logger.Warn("GET failed", "url", url, "err", err)
		} else {
			logger.Info("GET", "url", url, "status", code, "body", trimNewline(body))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func trimNewline(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}
