// Package selfsigned makes a CA and a serving certificate it signed, with client-go's
// util/cert: the one mechanism behind the injector's --self-signed and the node agent's
// --tls=self-signed.
package selfsigned

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// Pair is a CA made for one process and the serving certificate it signed.
type Pair struct {
	CAPEM []byte          // the CA certificate, PEM (what clients trust: a caBundle)
	Cert  tls.Certificate // the serving certificate and its key
}

// New makes a Pair whose serving certificate names hosts: the first is its subject and every
// host (IP address or DNS name) an alternative name. Both certificates are valid from an hour
// ago (clock skew) until validity from now.
func New(hosts []string, validity time.Duration) (*Pair, error) {
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return h == "" })
	if len(hosts) == 0 {
		return nil, errors.New("self-signed certificate: no host name or address")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("self-signed certificate: validity %v", validity)
	}
	// util/cert's certificates start an hour ago and last MaxAge from then; it adds Host
	// itself to the alternative names.
	opts := certutil.SelfSignedCertKeyOptions{Host: hosts[0], MaxAge: validity + time.Hour}
	for _, h := range hosts[1:] {
		if ip := net.ParseIP(h); ip != nil {
			opts.AlternateIPs = append(opts.AlternateIPs, ip)
		} else {
			opts.AlternateDNS = append(opts.AlternateDNS, h)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKeyWithOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	// util/cert returns the serving certificate followed by its CA.
	leaf, rest := pem.Decode(certPEM)
	ca, _ := pem.Decode(rest)
	if leaf == nil || ca == nil {
		return nil, errors.New("self-signed certificate: want a certificate and its CA")
	}
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(leaf), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	return &Pair{CAPEM: pem.EncodeToMemory(ca), Cert: cert}, nil
}
