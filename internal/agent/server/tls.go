package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// SelfSignedTLS returns a TLS configuration with a fresh certificate for hosts (IP addresses or
// names), valid for a year, signed by a CA made for it (client-go's util/cert, the mechanism of
// the injector's --self-signed too). It protects the bearer tokens of callers that reach the
// TCP API over the node's network; such callers (kubelet HTTPS probes, scripts with --insecure)
// do not verify it, the tokens are what authenticates.
func SelfSignedTLS(hosts []string) (*tls.Config, error) {
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return h == "" })
	if len(hosts) == 0 {
		hosts = []string{"sidelane-agent"}
	}
	// The first host is the certificate's subject (and a name or address in it), the others
	// are its alternative names.
	opts := certutil.SelfSignedCertKeyOptions{Host: hosts[0], MaxAge: 365*24*time.Hour + time.Hour} // from an hour ago
	for _, h := range hosts[1:] {
		if ip := net.ParseIP(h); ip != nil {
			opts.AlternateIPs = append(opts.AlternateIPs, ip)
		} else {
			opts.AlternateDNS = append(opts.AlternateDNS, h)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKeyWithOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
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
