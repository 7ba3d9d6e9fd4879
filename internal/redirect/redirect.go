// Package redirect turns a pod's redirect annotations into validated redirect settings.
//
// The annotations and their defaults are docs/design.md's "Redirect settings" table; the keys live
// in package contract. Absent annotations take the defaults. A malformed value is an error
// that names the annotation and the value, so a pod is refused (by the injector) or its ADD
// failed (by the plugin) before anything is written.
package redirect

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sidelane/sidelane/internal/contract"
)

// Settings are the validated redirect settings of one pod.
type Settings struct {
	// InboundAll captures every inbound port; otherwise only InboundPorts (empty: none).
	InboundAll   bool     `json:"inboundAll"`
	InboundPorts []uint16 `json:"inboundPorts,omitempty"`
	// ExcludeInboundPorts are never captured inbound. It always includes
	// contract.AlwaysExcludedInboundPorts.
	ExcludeInboundPorts []uint16 `json:"excludeInboundPorts"`
	// OutboundAll captures every outbound destination; otherwise only OutboundCIDRs (empty: none).
	OutboundAll          bool           `json:"outboundAll"`
	OutboundCIDRs        []netip.Prefix `json:"outboundCIDRs,omitempty"`
	ExcludeOutboundCIDRs []netip.Prefix `json:"excludeOutboundCIDRs,omitempty"`
	ExcludeOutboundPorts []uint16       `json:"excludeOutboundPorts,omitempty"`
	ProxyUID             uint32         `json:"proxyUID"`
	ProxyGID             uint32         `json:"proxyGID"`
	InboundCapturePort   uint16         `json:"inboundCapturePort"`
	OutboundCapturePort  uint16         `json:"outboundCapturePort"`
}

// Defaults returns the settings of a pod without redirect annotations.
func Defaults() Settings {
	return Settings{
		InboundAll:          true,
		ExcludeInboundPorts: slices.Clone(contract.AlwaysExcludedInboundPorts),
		OutboundAll:         true,
		ProxyUID:            contract.ProxyUID,
		ProxyGID:            contract.ProxyGID,
		InboundCapturePort:  contract.InboundCapturePort,
		OutboundCapturePort: contract.OutboundCapturePort,
	}
}

// DefaultAnnotations returns the redirect annotations with their default values, as the
// injector writes them.
func DefaultAnnotations() map[string]string {
	return map[string]string{
		contract.AnnotationInboundPorts:         "*",
		contract.AnnotationExcludeInboundPorts:  "",
		contract.AnnotationOutboundCIDRs:        "*",
		contract.AnnotationExcludeOutboundCIDRs: "",
		contract.AnnotationExcludeOutboundPorts: "",
		contract.AnnotationProxyUID:             strconv.Itoa(contract.ProxyUID),
		contract.AnnotationProxyGID:             strconv.Itoa(contract.ProxyGID),
		contract.AnnotationInboundCapturePort:   strconv.Itoa(contract.InboundCapturePort),
		contract.AnnotationOutboundCapturePort:  strconv.Itoa(contract.OutboundCapturePort),
	}
}

// Error is a malformed redirect annotation.
type Error struct {
	Annotation string
	Value      string
	Reason     string
}

func (e *Error) Error() string {
	return fmt.Sprintf("annotation %s: invalid value %q: %s", e.Annotation, e.Value, e.Reason)
}

// FromAnnotations validates the redirect annotations of a pod and returns its settings.
// Annotations that are absent take the defaults; other annotations are ignored. Every
// malformed annotation is reported (joined), each naming the annotation and its value.
func FromAnnotations(ann map[string]string) (Settings, error) {
	s := Defaults()
	var errs []error
	get := func(key string) (string, bool) {
		v, ok := ann[key]
		return strings.TrimSpace(v), ok
	}
	if v, ok := get(contract.AnnotationInboundPorts); ok {
		all, ports, err := parsePortsOrAll(v)
		if err != nil {
			errs = append(errs, &Error{contract.AnnotationInboundPorts, ann[contract.AnnotationInboundPorts], err.Error()})
		}
		s.InboundAll, s.InboundPorts = all, ports
	}
	if v, ok := get(contract.AnnotationExcludeInboundPorts); ok {
		ports, err := parsePorts(v)
		if err != nil {
			errs = append(errs, &Error{contract.AnnotationExcludeInboundPorts, ann[contract.AnnotationExcludeInboundPorts], err.Error()})
		}
		s.ExcludeInboundPorts = mergePorts(s.ExcludeInboundPorts, ports)
	}
	if v, ok := get(contract.AnnotationOutboundCIDRs); ok {
		all, cidrs, err := parseCIDRsOrAll(v)
		if err != nil {
			errs = append(errs, &Error{contract.AnnotationOutboundCIDRs, ann[contract.AnnotationOutboundCIDRs], err.Error()})
		}
		s.OutboundAll, s.OutboundCIDRs = all, cidrs
	}
	if v, ok := get(contract.AnnotationExcludeOutboundCIDRs); ok {
		cidrs, err := parseCIDRs(v)
		if err != nil {
			errs = append(errs, &Error{contract.AnnotationExcludeOutboundCIDRs, ann[contract.AnnotationExcludeOutboundCIDRs], err.Error()})
		}
		s.ExcludeOutboundCIDRs = cidrs
	}
	if v, ok := get(contract.AnnotationExcludeOutboundPorts); ok {
		ports, err := parsePorts(v)
		if err != nil {
			errs = append(errs, &Error{contract.AnnotationExcludeOutboundPorts, ann[contract.AnnotationExcludeOutboundPorts], err.Error()})
		}
		s.ExcludeOutboundPorts = ports
	}
	for _, id := range []struct {
		key string
		dst *uint32
	}{{contract.AnnotationProxyUID, &s.ProxyUID}, {contract.AnnotationProxyGID, &s.ProxyGID}} {
		if v, ok := get(id.key); ok {
			n, err := parseID(v)
			if err != nil {
				errs = append(errs, &Error{id.key, ann[id.key], err.Error()})
				continue
			}
			*id.dst = n
		}
	}
	for _, p := range []struct {
		key string
		dst *uint16
	}{{contract.AnnotationInboundCapturePort, &s.InboundCapturePort}, {contract.AnnotationOutboundCapturePort, &s.OutboundCapturePort}} {
		if v, ok := get(p.key); ok {
			n, err := parsePort(v)
			if err != nil {
				errs = append(errs, &Error{p.key, ann[p.key], err.Error()})
				continue
			}
			*p.dst = n
		}
	}
	if len(errs) > 0 {
		return Settings{}, joinErrors(errs)
	}
	if s.InboundCapturePort == s.OutboundCapturePort {
		return Settings{}, &Error{contract.AnnotationInboundCapturePort, strconv.Itoa(int(s.InboundCapturePort)),
			"inbound and outbound capture ports must differ"}
	}
	return s, nil
}

// joinErrors joins errors so that errors.As still finds the first *Error.
type multiError []error

func (m multiError) Error() string {
	msgs := make([]string, len(m))
	for i, e := range m {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (m multiError) Unwrap() []error { return m }

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return multiError(errs)
}

func parsePort(v string) (uint16, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", v)
	}
	return uint16(n), nil
}

func parseID(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > 2147483647 {
		return 0, fmt.Errorf("%q is not a uid/gid (0-2147483647)", v)
	}
	return uint32(n), nil
}

// parsePorts parses a comma-separated list of ports; "" is the empty list.
func parsePorts(v string) ([]uint16, error) {
	if v == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := parsePort(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return mergePorts(nil, out), nil
}

func parsePortsOrAll(v string) (bool, []uint16, error) {
	if v == "*" {
		return true, nil, nil
	}
	ports, err := parsePorts(v)
	return false, ports, err
}

// parseCIDRs parses a comma-separated list of CIDRs or addresses; "" is the empty list.
func parseCIDRs(v string) ([]netip.Prefix, error) {
	if v == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR", f)
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a CIDR or an IP address (without zone)", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out, nil
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 prefix loses when unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

func parseCIDRsOrAll(v string) (bool, []netip.Prefix, error) {
	if v == "*" {
		return true, nil, nil
	}
	cidrs, err := parseCIDRs(v)
	return false, cidrs, err
}

// mergePorts returns the sorted union of a and b without duplicates.
func mergePorts(a, b []uint16) []uint16 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// V4 returns the prefixes of ps that are IPv4.
func V4(ps []netip.Prefix) []netip.Prefix { return family(ps, true) }

// V6 returns the prefixes of ps that are IPv6.
func V6(ps []netip.Prefix) []netip.Prefix { return family(ps, false) }

func family(ps []netip.Prefix, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			out = append(out, p)
		}
	}
	return out
}
