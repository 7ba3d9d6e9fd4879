package selfsigned

import (
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hosts    []string
		validity time.Duration
		wantDNS  []string
		wantIPs  []string
		wantErr  string
	}{
		{name: "service names", hosts: []string{"svc.ns.svc", "svc", "svc.ns"}, validity: time.Hour, wantDNS: []string{"svc.ns.svc", "svc", "svc.ns"}},
		{name: "addresses and a name", hosts: []string{"127.0.0.1", "", "node-1", "192.0.2.7"}, validity: 24 * time.Hour, wantDNS: []string{"node-1"}, wantIPs: []string{"127.0.0.1", "192.0.2.7"}},
		{name: "no host", hosts: []string{""}, validity: time.Hour, wantErr: "no host"},
		{name: "no validity", hosts: []string{"x"}, wantErr: "validity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.hosts, tc.validity)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(p.Cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(p.CAPEM) {
				t.Fatal("CAPEM holds no certificate")
			}
			for _, h := range append(slices.Clone(tc.wantDNS), tc.wantIPs...) {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
					t.Errorf("%s: %v", h, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
				t.Error("the certificate verifies for a name it was not made for")
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			for _, want := range tc.wantIPs {
				if !slices.ContainsFunc(ips, func(s string) bool { return net.ParseIP(s).Equal(net.ParseIP(want)) }) {
					t.Errorf("IP %s missing from %v", want, ips)
				}
			}
			now := time.Now()
			if leaf.NotBefore.After(now.Add(-59*time.Minute)) || leaf.NotAfter.Before(now.Add(tc.validity-time.Minute)) || leaf.NotAfter.After(now.Add(tc.validity+time.Minute)) {
				t.Errorf("valid %v – %v, want from an hour ago for %v", leaf.NotBefore, leaf.NotAfter, tc.validity)
			}
		})
	}
}
