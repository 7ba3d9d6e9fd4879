package injectorbench

import (
	"fmt"
	"math"

	"github.com/sidelane/sidelane/internal/webhook"
)

// histogram is a snapshot of the injector's admission latency histogram: cumulative counts
// per upper bound (seconds), the last bound +Inf.
type histogram struct {
	bounds []float64
	counts []uint64
}

func serverHistogram(srv *webhook.Server) (histogram, error) {
	mfs, err := srv.Gatherer().Gather()
	if err != nil {
		return histogram{}, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "sidelane_injector_admission_duration_seconds" || len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		var out histogram
		for _, b := range h.GetBucket() {
			out.bounds = append(out.bounds, b.GetUpperBound())
			out.counts = append(out.counts, b.GetCumulativeCount())
		}
		out.bounds = append(out.bounds, math.Inf(1))
		out.counts = append(out.counts, h.GetSampleCount())
		return out, nil
	}
	return histogram{}, fmt.Errorf("the injector exports no admission latency histogram")
}

func (h histogram) sub(o histogram) histogram {
	out := histogram{bounds: h.bounds, counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i]
		if i < len(o.counts) {
			out.counts[i] -= o.counts[i]
		}
	}
	return out
}

// quantile interpolates linearly within the bucket holding quantile q (as Prometheus'
// histogram_quantile does); beyond the last finite bound it returns that bound.
func (h histogram) quantile(q float64) float64 {
	total := h.counts[len(h.counts)-1]
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	for i, c := range h.counts {
		if float64(c) < rank {
			continue
		}
		if math.IsInf(h.bounds[i], 1) {
			return h.bounds[i-1]
		}
		lo, below := 0.0, uint64(0)
		if i > 0 {
			lo, below = h.bounds[i-1], h.counts[i-1]
		}
		in := c - below
		if in == 0 {
			return h.bounds[i]
		}
		return lo + (h.bounds[i]-lo)*(rank-float64(below))/float64(in)
	}
	return h.bounds[len(h.bounds)-2]
}
