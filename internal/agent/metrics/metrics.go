// Package metrics holds the node agent's Prometheus metrics: plugin installs and reinstalls
// (from the install watcher's counters), pods by state, plugin reports and ADD latency,
// drift detections, repairs by result and their duration, and API requests.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// InstallStats is what the metrics read from the install watcher.
type InstallStats struct {
	Writes, Overwrites, Fights, Errors uint64
	Fighting                           bool
	// Backoff is the watcher's current wait between reinserts (0 unless fighting).
	Backoff time.Duration
}

// Metrics are the agent's collectors on their own registry.
type Metrics struct {
	Registry       *prometheus.Registry
	Reports        *prometheus.CounterVec   // event, state
	AddDuration    prometheus.Histogram     // plugin ADD latency as reported
	Drift          *prometheus.CounterVec   // state: missing|drifted
	Repairs        *prometheus.CounterVec   // result
	RepairDuration *prometheus.HistogramVec // result: from detection to rules applied
	APIRequests    *prometheus.CounterVec   // listener, route, code
	Decisions      *prometheus.CounterVec   // result: capture|skip|error (plugin Decide requests)
	CacheMisses    *prometheus.CounterVec   // reason: not_synced|not_found|uid_mismatch (pod GETs to the API server)
}

// New registers the agent's metrics. pods returns the number of recorded pods by state;
// install returns the install watcher's counters (nil: no install metrics).
func New(pods func() map[string]int, install func() InstallStats) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		Reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_plugin_reports_total", Help: "Reports received from the CNI plugin, by event and state.",
		}, []string{"event", "state"}),
		AddDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sidelane_agent_plugin_add_duration_seconds", Help: "Duration of the plugin's ADD as reported by the plugin.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		Drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_drift_detected_total", Help: "Injected pods found with missing or drifted rules.",
		}, []string{"state"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_repairs_total", Help: "Repairs by result: inplace, deleted, failed, skipped (repair-mode off).",
		}, []string{"result"}),
		RepairDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sidelane_agent_repair_duration_seconds", Help: "Time from detecting missing or drifted rules to the repair done.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_api_requests_total", Help: "API requests by listener (unix, tcp), route and status code.",
		}, []string{"listener", "route", "code"}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_plugin_decisions_total", Help: "Capture decisions asked by the CNI plugin at ADD, by result (capture, skip, error).",
		}, []string{"result"}),
		CacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidelane_agent_pod_cache_misses_total", Help: "Plugin decisions the pod informer's cache could not answer, each one pod GET to the API server, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Reports, m.AddDuration, m.Drift, m.Repairs, m.RepairDuration, m.APIRequests, m.Decisions, m.CacheMisses)
	if pods != nil {
		reg.MustRegister(&podsCollector{pods: pods, desc: prometheus.NewDesc("sidelane_agent_pods",
			"Pods in the agent's record, by state.", []string{"state"}, nil)})
	}
	if install != nil {
		counter := func(name, help string, get func(InstallStats) float64) {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return get(install()) }))
		}
		counter("sidelane_agent_install_writes_total", "Writes of the sidelane-cni entry into the primary conflist (installs and reinstalls).",
			func(s InstallStats) float64 { return float64(s.Writes) })
		counter("sidelane_agent_reinstalls_total", "Times the entry was found removed by another writer and put back.",
			func(s InstallStats) float64 { return float64(s.Overwrites) })
		counter("sidelane_agent_install_fights_total", "Times the overwrite rate crossed the fight threshold.",
			func(s InstallStats) float64 { return float64(s.Fights) })
		counter("sidelane_agent_install_errors_total", "Failed install reconciles.",
			func(s InstallStats) float64 { return float64(s.Errors) })
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sidelane_agent_install_fighting", Help: "1 while another component keeps overwriting our entry."},
			func() float64 {
				if install().Fighting {
					return 1
				}
				return 0
			}))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sidelane_agent_install_backoff_seconds",
			Help: "The install watcher's current wait before putting the entry back (0 unless fighting; bounded by the backoff maximum)."},
			func() float64 { return install().Backoff.Seconds() }))
	}
	return m
}

// ObserveRepair counts a repair and its duration.
func (m *Metrics) ObserveRepair(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.Repairs.WithLabelValues(result).Inc()
	if d > 0 {
		m.RepairDuration.WithLabelValues(result).Observe(d.Seconds())
	}
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

type podsCollector struct {
	pods func() map[string]int
	desc *prometheus.Desc
}

func (c *podsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *podsCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range c.pods() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}
