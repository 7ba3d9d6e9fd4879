// Package benchreport is the shape of Sidelane's benchmark results: every area's benchmark
// returns rows, and `make bench` prints them as one side-by-side table and writes them as JSON.
package benchreport

import (
	"slices"
	"time"
)

// Row is one measured figure, with the peer measured in the same run where there is one.
type Row struct {
	Area     string  `json:"area"` // "rules", "cni", "proxy", "injector", "agent"
	Name     string  `json:"name"` // what was measured
	Unit     string  `json:"unit"` // "ms", "µs", "req/s", "MB", "x" ...
	Ours     float64 `json:"ours"` // Sidelane's figure (median over rounds)
	OursMin  float64 `json:"oursMin,omitempty"`
	OursMax  float64 `json:"oursMax,omitempty"`
	Peer     string  `json:"peer,omitempty"` // what Sidelane is compared with
	PeerVal  float64 `json:"peerValue,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"` // median of per-round ratios, oriented so >1 is better for Sidelane unless RatioNote says otherwise
	RatioMin float64 `json:"ratioMin,omitempty"`
	RatioMax float64 `json:"ratioMax,omitempty"`
	Target   string  `json:"target,omitempty"` // e.g. "≥ 8x", "≤ 10 ms"
	Pass     *bool   `json:"pass,omitempty"`   // whether the target is met; nil when there is no target
	Note     string  `json:"note,omitempty"`
	// Latency is an optional latency distribution (for charts): one point per percentile.
	// The proxy benchmark fills it for direct, sidelane-proxy, haproxy and the ReverseProxy
	// baseline, one row each, so that `make bench` can draw them side by side.
	Latency []Point `json:"latency,omitempty"`
}

// Point is one percentile of a latency distribution.
type Point struct {
	Percentile float64 `json:"percentile"` // 50, 90, 99, 99.9 ...
	Millis     float64 `json:"ms"`
}

// Config is what every area's benchmark gets.
type Config struct {
	BinDir  string        // built binaries (bin/)
	WorkDir string        // scratch space for this run
	Rounds  int           // interleaved rounds
	Budget  time.Duration // wall time the area should stay within
	Quick   bool          // fewer rounds/requests, for a smoke run
}

// Pass is a helper for Row.Pass.
func Pass(ok bool) *bool { return &ok }

// Percentile is the p-th percentile (nearest rank) of values, which need not be sorted;
// 0 for no values.
func Percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
