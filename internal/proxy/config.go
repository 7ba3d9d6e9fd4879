// Package proxy is sidelane-proxy, the transparent sidecar proxy of docs/design.md: it accepts the
// connections the redirect rules send to its inbound (15006) and outbound (15001) capture
// ports, finds each connection's original destination (SO_ORIGINAL_DST), and forwards it there:
// HTTP/1.x through its own small codec (package httpcodec) with per-request access log and
// Prometheus metrics, anything else as a raw TCP relay with half-close. It also serves
// readiness, Prometheus and admin endpoints and drains gracefully.
package proxy

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/flagenv"
)

// Config is every port and limit of the proxy.
type Config struct {
	InboundPort    int    `json:"inboundPort"`
	OutboundPort   int    `json:"outboundPort"`
	AdminAddr      string `json:"adminAddr"`      // 127.0.0.1 only by default
	HealthAddr     string `json:"healthAddr"`     // :15021
	PrometheusAddr string `json:"prometheusAddr"` // :15090

	// InboundSourceIPv4/IPv6 are the source addresses inbound traffic is forwarded to the
	// application from (docs/design.md: 127.0.0.6 and ::6).
	InboundSourceIPv4 string `json:"inboundSourceIPv4"`
	InboundSourceIPv6 string `json:"inboundSourceIPv6"`

	MaxConnections int           `json:"maxConnections"` // accepted connections at once, per capture port
	MaxHeaderBytes int           `json:"maxHeaderBytes"` // request/response head limit (431 beyond)
	PeekTimeout    time.Duration `json:"peekTimeout"`    // wait for a client's first bytes before raw TCP
	HeaderTimeout  time.Duration `json:"headerTimeout"`  // whole request head (slowloris)
	IdleTimeout    time.Duration `json:"idleTimeout"`    // keep-alive client connection between requests
	DialTimeout    time.Duration `json:"dialTimeout"`    // upstream connect
	UpstreamIdle   time.Duration `json:"upstreamIdle"`   // pooled upstream connection kept idle
	MaxIdlePerDest int           `json:"maxIdlePerDest"` // pooled upstream connections per destination
	DrainTimeout   time.Duration `json:"drainTimeout"`   // SIGTERM: in-flight work gets this long
	// StreamIdleTimeout bounds every read and write of an HTTP request or response on either
	// side (a silent app gets 504, a silent client 408).
	StreamIdleTimeout time.Duration `json:"streamIdleTimeout"`
	// TCPIdleTimeout closes a raw TCP relay or an upgraded tunnel in which no byte moved in
	// either direction for this long.
	TCPIdleTimeout time.Duration `json:"tcpIdleTimeout"`
	// ExpectContinueTimeout is how long a request with "Expect: 100-continue" waits for the
	// app's answer before the proxy sends the body anyway.
	ExpectContinueTimeout time.Duration `json:"expectContinueTimeout"`
	// Concurrency is the number of threads running Go code (GOMAXPROCS) when the container
	// has no CPU limit; a CPU limit, or GOMAXPROCS in the environment, wins (see ApplyConcurrency).
	Concurrency int  `json:"concurrency"`
	AccessLog   bool `json:"accessLog"` // JSON line per HTTP request on stdout
	// LogLevel filters the proxy's own messages (not the access log): debug and info show
	// start-up and drain, warn adds per-connection failures, error only accept failures.
	LogLevel string `json:"logLevel"`
}

// LogLevels are the values of Config.LogLevel, most verbose first.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Defaults returns docs/design.md's ports and the default limits.
func Defaults() Config {
	return Config{
		InboundPort:           contract.InboundCapturePort,
		OutboundPort:          contract.OutboundCapturePort,
		AdminAddr:             fmt.Sprintf("127.0.0.1:%d", contract.AdminPort),
		HealthAddr:            fmt.Sprintf(":%d", contract.HealthPort),
		PrometheusAddr:        fmt.Sprintf(":%d", contract.PrometheusPort),
		InboundSourceIPv4:     contract.InboundPassthroughIPv4,
		InboundSourceIPv6:     contract.InboundPassthroughIPv6,
		MaxConnections:        16384,
		MaxHeaderBytes:        64 << 10,
		PeekTimeout:           200 * time.Millisecond,
		HeaderTimeout:         10 * time.Second,
		IdleTimeout:           120 * time.Second,
		DialTimeout:           5 * time.Second,
		UpstreamIdle:          30 * time.Second,
		MaxIdlePerDest:        256,
		DrainTimeout:          25 * time.Second,
		StreamIdleTimeout:     5 * time.Minute,
		TCPIdleTimeout:        time.Hour,
		ExpectContinueTimeout: time.Second,
		Concurrency:           2,
		AccessLog:             true,
		LogLevel:              "info",
	}
}

// BindFlags registers a flag for every field of c, with c's values as defaults, and applies
// the environment through flagenv: flag -some-flag reads SIDELANE_PROXY_SOME_FLAG; the flag
// wins over the variable, the variable over the default. A bad environment value is an error
// naming the variable.
func BindFlags(fs *flag.FlagSet, c *Config) error {
	fs.IntVar(&c.InboundPort, "inbound-port", c.InboundPort, "inbound capture port")
	fs.IntVar(&c.OutboundPort, "outbound-port", c.OutboundPort, "outbound capture port")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "admin listen address")
	fs.StringVar(&c.HealthAddr, "health-addr", c.HealthAddr, "readiness listen address")
	fs.StringVar(&c.PrometheusAddr, "prometheus-addr", c.PrometheusAddr, "Prometheus listen address")
	fs.StringVar(&c.InboundSourceIPv4, "inbound-source-ipv4", c.InboundSourceIPv4, "source address of inbound forwarding (IPv4)")
	fs.StringVar(&c.InboundSourceIPv6, "inbound-source-ipv6", c.InboundSourceIPv6, "source address of inbound forwarding (IPv6)")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "connections accepted at once, per capture port")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "largest request or response head")
	fs.DurationVar(&c.PeekTimeout, "peek-timeout", c.PeekTimeout, "wait for a client's first bytes before relaying raw TCP")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", c.HeaderTimeout, "time to read a whole request head")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "idle keep-alive client connection timeout")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "upstream connect timeout")
	fs.DurationVar(&c.UpstreamIdle, "upstream-idle-timeout", c.UpstreamIdle, "pooled upstream connection idle time")
	fs.IntVar(&c.MaxIdlePerDest, "max-idle-per-destination", c.MaxIdlePerDest, "pooled upstream connections per destination")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "time in-flight work gets after SIGTERM")
	fs.DurationVar(&c.StreamIdleTimeout, "stream-idle-timeout", c.StreamIdleTimeout, "longest wait for a read or write of an HTTP request or response")
	fs.DurationVar(&c.TCPIdleTimeout, "tcp-idle-timeout", c.TCPIdleTimeout, "close a raw TCP relay or tunnel idle in both directions this long")
	fs.DurationVar(&c.ExpectContinueTimeout, "expect-continue-timeout", c.ExpectContinueTimeout, "wait for the app's 100 Continue before sending the body anyway")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "threads running Go code when the container has no CPU limit")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "JSON access-log line per HTTP request on stdout")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "the proxy's own messages: debug, info, warn or error")
	if err := flagenv.Bind(fs, "proxy"); err != nil {
		return fmt.Errorf("proxy configuration: %w", err)
	}
	return nil
}

// Validate checks c and names the first bad field.
func (c Config) Validate() error {
	for _, p := range []struct {
		name string
		v    int
	}{{"inbound-port", c.InboundPort}, {"outbound-port", c.OutboundPort}} {
		if p.v < 1 || p.v > 65535 {
			return fmt.Errorf("%s %d: not a port", p.name, p.v)
		}
	}
	if c.InboundPort == c.OutboundPort {
		return fmt.Errorf("inbound-port and outbound-port are both %d", c.InboundPort)
	}
	if !slices.Contains(LogLevels, c.LogLevel) {
		return fmt.Errorf("log-level %q: want one of %v", c.LogLevel, LogLevels)
	}
	if c.MaxConnections < 1 {
		return fmt.Errorf("max-connections %d: must be at least 1", c.MaxConnections)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("concurrency %d: must be at least 1", c.Concurrency)
	}
	if c.MaxHeaderBytes < 1024 {
		return fmt.Errorf("max-header-bytes %d: must be at least 1024", c.MaxHeaderBytes)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"peek-timeout", c.PeekTimeout}, {"header-timeout", c.HeaderTimeout}, {"idle-timeout", c.IdleTimeout},
		{"dial-timeout", c.DialTimeout}, {"upstream-idle-timeout", c.UpstreamIdle}, {"drain-timeout", c.DrainTimeout},
		{"stream-idle-timeout", c.StreamIdleTimeout}, {"tcp-idle-timeout", c.TCPIdleTimeout}, {"expect-continue-timeout", c.ExpectContinueTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s %s: must be positive", d.name, d.v)
		}
	}
	return nil
}

// ApplyConcurrency sets GOMAXPROCS to n unless the Go runtime already holds it below the
// machine's CPU count (a container CPU limit, which Go reads from the cgroup, or GOMAXPROCS in
// the environment). A sidecar sized by the node's core count wakes more threads than its
// share of work needs; Envoy sidecars likewise run two workers by default. It returns the
// value in force and where it came from.
func ApplyConcurrency(n int) (int, string) {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		return runtime.GOMAXPROCS(0), "GOMAXPROCS environment"
	}
	cur := runtime.GOMAXPROCS(0)
	if cur < runtime.NumCPU() {
		return cur, "CPU limit"
	}
	if n < cur {
		runtime.GOMAXPROCS(n)
		return n, "concurrency setting"
	}
	return cur, "CPU count"
}
