package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Results of an admission request, the "result" label of sidelane_injector_injections_total
// (plus "skipped-<reason>" with the reasons of package inject, and "skipped-not-pod").
const (
	ResultInjected = "injected"
	ResultRefused  = "refused"
	ResultError    = "error"
	ResultNotPod   = "skipped-not-pod"
)

// Metrics are the injector's Prometheus metrics.
type Metrics struct {
	Injections *prometheus.CounterVec
	Latency    prometheus.Histogram
}

// NewMetrics registers the injector's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_injector_injections_total",
			Help: "Admission requests by result: injected, skipped-<reason>, refused, error.",
		}, []string{"result"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sidelane_injector_admission_duration_seconds",
			Help:    "Time to answer an admission request, from the request read to the response written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	reg.MustRegister(m.Injections, m.Latency)
	return m
}

func (m *Metrics) count(result string) {
	if m != nil {
		m.Injections.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) observe(seconds float64) {
	if m != nil {
		m.Latency.Observe(seconds)
	}
}
