// Package unixhttp is an HTTP client for the node agent's API on its unix socket (kubectl-style
// inspection on the node, tests, benchmarks). The CNI plugin does not use it: it speaks the
// framed protocol of package cnirpc and links no HTTP code.
package unixhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
)

// Client returns an HTTP client that talks to the agent's unix socket.
func Client(socket string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}
}

// PostReport posts r to POST /v1/reports on socket, the route plugins before the cnirpc
// protocol use, waiting at most timeout.
func PostReport(ctx context.Context, socket string, r agentapi.Report, timeout time.Duration) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sidelane-agent"+agentapi.PathReports, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("report request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := Client(socket, timeout).Do(req)
	if err != nil {
		return fmt.Errorf("report to agent at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("report to agent at %s: %s: %s", socket, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
