package redirect

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/contract"
)

func TestFromAnnotations(t *testing.T) {
	def := Defaults()
	with := func(f func(*Settings)) Settings { s := Defaults(); f(&s); return s }
	pfx := netip.MustParsePrefix
	tests := []struct {
		name string
		ann  map[string]string
		want Settings
	}{
		{"no annotations", nil, def},
		{"defaults written by the injector", DefaultAnnotations(), def},
		{"unrelated annotations ignored", map[string]string{"foo": "bar"}, def},
		{"inbound none", map[string]string{contract.AnnotationInboundPorts: ""},
			with(func(s *Settings) { s.InboundAll = false })},
		{"inbound list sorted and deduplicated", map[string]string{contract.AnnotationInboundPorts: " 8080, 80,8080 "},
			with(func(s *Settings) { s.InboundAll = false; s.InboundPorts = []uint16{80, 8080} })},
		{"exclude inbound keeps the always-excluded ports", map[string]string{contract.AnnotationExcludeInboundPorts: "22,15021"},
			with(func(s *Settings) { s.ExcludeInboundPorts = []uint16{22, 15020, 15021, 15090} })},
		{"outbound none", map[string]string{contract.AnnotationOutboundCIDRs: ""},
			with(func(s *Settings) { s.OutboundAll = false })},
		{"outbound cidrs, masked, v4 and v6, bare addresses", map[string]string{contract.AnnotationOutboundCIDRs: "10.1.2.3/8, fd00::1/64,192.168.1.1"},
			with(func(s *Settings) {
				s.OutboundAll = false
				s.OutboundCIDRs = []netip.Prefix{pfx("10.0.0.0/8"), pfx("192.168.1.1/32"), pfx("fd00::/64")}
			})},
		{"exclude outbound cidrs, mapped v4 unmapped", map[string]string{contract.AnnotationExcludeOutboundCIDRs: "::ffff:10.0.0.0/104"},
			with(func(s *Settings) { s.ExcludeOutboundCIDRs = []netip.Prefix{pfx("10.0.0.0/8")} })},
		{"exclude outbound ports", map[string]string{contract.AnnotationExcludeOutboundPorts: "5432,443"},
			with(func(s *Settings) { s.ExcludeOutboundPorts = []uint16{443, 5432} })},
		{"ids and capture ports", map[string]string{
			contract.AnnotationProxyUID: "2000", contract.AnnotationProxyGID: "0",
			contract.AnnotationInboundCapturePort: "16006", contract.AnnotationOutboundCapturePort: "16001"},
			with(func(s *Settings) {
				s.ProxyUID, s.ProxyGID, s.InboundCapturePort, s.OutboundCapturePort = 2000, 0, 16006, 16001
			})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromAnnotations(tc.ann)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFromAnnotationsErrors(t *testing.T) {
	tests := []struct {
		key, value, reason string
	}{
		{contract.AnnotationInboundPorts, "http", "not a port"},
		{contract.AnnotationInboundPorts, "0", "not a port"},
		{contract.AnnotationInboundPorts, "65536", "not a port"},
		{contract.AnnotationExcludeInboundPorts, "80;443", "not a port"},
		{contract.AnnotationOutboundCIDRs, "10.0.0.0/33", "not a CIDR"},
		{contract.AnnotationExcludeOutboundCIDRs, "not-an-ip", "not a CIDR"},
		{contract.AnnotationExcludeOutboundCIDRs, "fe80::1%eth0", "not a CIDR"},
		{contract.AnnotationExcludeOutboundPorts, "-1", "not a port"},
		{contract.AnnotationProxyUID, "-5", "not a uid"},
		{contract.AnnotationProxyUID, "4294967296", "not a uid"},
		{contract.AnnotationProxyGID, "root", "not a uid"},
		{contract.AnnotationInboundCapturePort, "15001", "must differ"},
		{contract.AnnotationOutboundCapturePort, "", "not a port"},
	}
	for _, tc := range tests {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			_, err := FromAnnotations(map[string]string{tc.key: tc.value})
			if err == nil {
				t.Fatal("expected an error")
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not a *Error", err)
			}
			msg := err.Error()
			for _, want := range []string{tc.key, tc.value, tc.reason} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestFromAnnotationsReportsEveryBadAnnotation(t *testing.T) {
	_, err := FromAnnotations(map[string]string{
		contract.AnnotationInboundPorts: "x", contract.AnnotationProxyGID: "y"})
	if err == nil {
		t.Fatal("expected an error")
	}
	for _, want := range []string{contract.AnnotationInboundPorts, contract.AnnotationProxyGID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestFamilies(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if got := V4(ps); len(got) != 1 || !got[0].Addr().Is4() {
		t.Errorf("V4 = %v", got)
	}
	if got := V6(ps); len(got) != 1 || got[0].Addr().Is4() {
		t.Errorf("V6 = %v", got)
	}
}
