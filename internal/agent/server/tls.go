package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/sidelane/sidelane/internal/selfsigned"
)

// SelfSignedTLS returns a TLS configuration with a fresh certificate for hosts (IP addresses or
// names), valid for a year, signed by a CA made for it (internal/selfsigned). It protects the
// bearer tokens of callers that reach the TCP API over the node's network; such callers (kubelet
// HTTPS probes, scripts with --insecure) do not verify it, the tokens are what authenticates.
func SelfSignedTLS(hosts []string) (*tls.Config, error) {
	if !slices.ContainsFunc(hosts, func(h string) bool { return h != "" }) {
		hosts = []string{"sidelane-agent"}
	}
	p, err := selfsigned.New(hosts, 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Cert}}, nil
}

// IsLoopback reports whether a listen address ("host:port") is on the loopback interface only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
