package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Direction of a captured connection.
type Direction uint8

// The two directions, as docs/design.md names them in the direction label.
const (
	Inbound Direction = iota
	Outbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// metrics are docs/design.md's Prometheus series, on a registry of the proxy's own.
type metrics struct {
	registry    *prometheus.Registry
	connections *prometheus.CounterVec
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reqBytes    *prometheus.CounterVec
	respBytes   *prometheus.CounterVec

	// Per-direction children resolved once (label lookups are not free).
	connBy      [2]prometheus.Counter
	durationBy  [2]prometheus.Observer
	reqBytesBy  [2]prometheus.Counter
	respBytesBy [2]prometheus.Counter
	// requestsBy caches requests_total children by direction, method and status code.
	requestsBy  [2][numMethods][600]atomic.Pointer[prometheus.Counter]
	retriesBy   [2]prometheus.Counter
	discardedBy [2][numDiscardReasons]prometheus.Counter
	nonHTTP     nonHTTPMetrics // HTTP/2 streams and TLS connections (nonhttp.go)

	activeBy [2]atomic.Int64 // open client connections per capture port
	http     atomic.Int64    // HTTP requests proxied
	raw      atomic.Int64    // raw TCP connections relayed
	refused  atomic.Int64    // connections refused (limit, loop, no original destination)
	upstream atomic.Int64    // upstream connections dialled
}

func newMetrics() *metrics {
	m := &metrics{registry: prometheus.NewRegistry()}
	m.connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_connections_total",
		Help: "Connections accepted on the capture ports, HTTP or not.",
	}, []string{"direction"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_requests_total",
		Help: "HTTP requests (HTTP/2: streams) proxied, by method, response status code and gRPC status (\"\" when not gRPC).",
	}, []string{"direction", "method", "code", "grpc_status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sidelane_proxy_request_duration_seconds",
		Help:    "Time from the request head to the end of the response.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"direction"})
	m.reqBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_request_bytes_total",
		Help: "HTTP request body bytes received from clients.",
	}, []string{"direction"})
	m.respBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_response_bytes_total",
		Help: "HTTP response body bytes sent to clients.",
	}, []string{"direction"})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_upstream_retries_total",
		Help: "Requests sent a second time, on a new upstream connection, because a pooled one failed before any response byte (idempotent requests without a body only).",
	}, []string{"direction"})
	discarded := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sidelane_proxy_upstream_discarded_total",
		Help: "Upstream connections not reused because bytes came that answer no request: unsolicited (while idle in the pool, or its end) or leftover (after the end of a response).",
	}, []string{"direction", "reason"})
	m.registry.MustRegister(m.connections, m.requests, m.duration, m.reqBytes, m.respBytes, retries, discarded)
	m.registerNonHTTP()
	for _, d := range []Direction{Inbound, Outbound} {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sidelane_proxy_active_connections",
			Help:        "Client connections open now, per capture port.",
			ConstLabels: prometheus.Labels{"direction": d.String()},
		}, func() float64 { return float64(m.activeBy[d].Load()) }))
		m.retriesBy[d] = retries.WithLabelValues(d.String())
		for r := range numDiscardReasons {
			m.discardedBy[d][r] = discarded.WithLabelValues(d.String(), discardReasons[r])
		}
		m.connBy[d] = m.connections.WithLabelValues(d.String())
		m.durationBy[d] = m.duration.WithLabelValues(d.String())
		m.reqBytesBy[d] = m.reqBytes.WithLabelValues(d.String())
		m.respBytesBy[d] = m.respBytes.WithLabelValues(d.String())
	}
	return m
}

// Why an upstream connection was not reused.
const (
	discardUnsolicited = iota
	discardLeftover
	numDiscardReasons
)

var discardReasons = [numDiscardReasons]string{"unsolicited", "leftover"}

// active returns the open client connections of both capture ports.
func (m *metrics) active() int64 { return m.activeBy[Inbound].Load() + m.activeBy[Outbound].Load() }

// Methods get a bounded label set: anything unknown is "OTHER".
const numMethods = 10

var methodNames = [numMethods]string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "OTHER"}

func methodIndex(m []byte) int {
	for i, n := range methodNames[:numMethods-1] {
		if string(m) == n {
			return i
		}
	}
	return numMethods - 1
}

func (m *metrics) request(d Direction, method []byte, code int, reqBytes, respBytes int64, seconds float64) {
	mi := methodIndex(method)
	if code < 0 || code >= 600 {
		code = 0
	}
	slot := &m.requestsBy[d][mi][code]
	c := slot.Load()
	if c == nil {
		counter := m.requests.WithLabelValues(d.String(), methodNames[mi], strconv.Itoa(code), "")
		slot.Store(&counter)
		c = &counter
	}
	(*c).Inc()
	m.exchanged(d, reqBytes, respBytes, seconds)
}

// exchanged records what every request or stream adds besides its counter: the duration,
// the bytes each way and the total.
func (m *metrics) exchanged(d Direction, reqBytes, respBytes int64, seconds float64) {
	m.durationBy[d].Observe(seconds)
	if reqBytes > 0 {
		m.reqBytesBy[d].Add(float64(reqBytes))
	}
	if respBytes > 0 {
		m.respBytesBy[d].Add(float64(respBytes))
	}
	m.http.Add(1)
}
