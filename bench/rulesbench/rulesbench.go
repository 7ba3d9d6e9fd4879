// Package rulesbench measures how long it takes to program a pod's redirect rules into a fresh
// network namespace with each capture backend: native nftables over netlink (the default,
// "auto"), the iptables backend with iptables-nft-restore, and with iptables-legacy-restore.
// Rounds are interleaved (one sample of each backend per round, in rotating order) so that a
// noisy neighbour hits all backends alike. Needs root.
package rulesbench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/vishvananda/netns"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// MinRounds is the number of samples per backend of a full run.
const MinRounds = 50

// quickRounds is the number of samples per backend of a smoke run (cfg.Quick).
const quickRounds = 5

// targetRatio is how many times faster than iptables-nft-restore the default backend must be.
const targetRatio = 8

type contender struct {
	name string
	b    capture.Backend
}

// Run measures Apply of the default ruleset (IPv4 and IPv6) into a fresh network namespace.
func Run(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	rounds := max(cfg.Rounds, MinRounds)
	if cfg.Quick {
		rounds = quickRounds
	}
	nft, err := capture.New("auto")
	if err != nil {
		return nil, err
	}
	iptNFT, err := capture.NewIPTables(capture.VariantNFT)
	if err != nil {
		return nil, err
	}
	iptLegacy, err := capture.NewIPTables(capture.VariantLegacy)
	if err != nil {
		return nil, err
	}
	cs := []contender{{"nftables", nft}, {"iptables-nft-restore", iptNFT}, {"iptables-legacy-restore", iptLegacy}}
	rs := rules.Build(redirect.Defaults(), rules.IPv4, rules.IPv6)

	var deadline time.Time
	if cfg.Budget > 0 {
		deadline = time.Now().Add(cfg.Budget)
	}
	samples := make([][]time.Duration, len(cs))
	// The namespaces stay open until the end: a namespace's teardown runs asynchronously in
	// the kernel and would otherwise overlap (and slow down) the next samples.
	var keep []netns.NsHandle
	defer func() {
		for _, h := range keep {
			h.Close()
		}
	}()
	for r := 0; r < rounds; r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !deadline.IsZero() && time.Now().After(deadline) && r >= quickRounds {
			break // over budget: report what we have (the row notes n)
		}
		for k := range cs {
			i := (r + k) % len(cs) // rotate who goes first
			d, h, err := applyFresh(cs[i].b, rs, r == 0)
			if h.IsOpen() {
				keep = append(keep, h)
			}
			if err != nil {
				return nil, fmt.Errorf("rules bench, %s, round %d: %w", cs[i].name, r, err)
			}
			samples[i] = append(samples[i], d)
		}
	}
	return rows(cs, samples), nil
}

// applyFresh creates a network namespace and times Apply in it. On the first round it also
// checks that the rules read back are the expected ones. The caller closes the namespace.
func applyFresh(b capture.Backend, rs rules.Ruleset, verify bool) (time.Duration, netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, netns.None(), fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	fresh, err := netns.New() // unshare: this thread is now in the new namespace
	if err != nil {
		runtime.UnlockOSThread()
		return 0, netns.None(), fmt.Errorf("new netns: %w", err)
	}
	defer func() {
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread() // only a thread back home may be reused
		}
	}()
	start := time.Now()
	if err := b.Apply(rs); err != nil {
		return 0, fresh, err
	}
	d := time.Since(start)
	if verify {
		live, err := b.Live()
		if err != nil {
			return 0, fresh, err
		}
		if diff := rules.Diff(b.Expected(rs), live); diff != nil {
			return 0, fresh, errors.New("rules read back differ from the expected ones: " + fmt.Sprint(diff))
		}
	}
	return d, fresh, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile returns the p-th percentile (nearest rank) of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func stats(ds []time.Duration) (median, p90, lo, hi time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return percentile(s, 50), percentile(s, 90), s[0], s[len(s)-1]
}

// ratios returns the median, min and max of the per-round ratios peer/ours.
func ratios(ours, peer []time.Duration) (med, lo, hi float64) {
	var rs []float64
	for i := range min(len(ours), len(peer)) {
		if ours[i] > 0 {
			rs = append(rs, float64(peer[i])/float64(ours[i]))
		}
	}
	if len(rs) == 0 {
		return 0, 0, 0
	}
	slices.Sort(rs)
	return rs[len(rs)/2], rs[0], rs[len(rs)-1]
}

func rows(cs []contender, samples [][]time.Duration) []benchreport.Row {
	var out []benchreport.Row
	om, op90, olo, ohi := stats(samples[0])
	for i := 1; i < len(cs); i++ {
		pm, pp90, _, _ := stats(samples[i])
		rmed, rlo, rhi := ratios(samples[0], samples[i])
		n := len(samples[0])
		row := benchreport.Row{
			Area: "rules", Name: "program rules, fresh netns, median (vs " + cs[i].name + ")", Unit: "ms",
			Ours: ms(om), OursMin: ms(olo), OursMax: ms(ohi),
			Peer: cs[i].name, PeerVal: ms(pm),
			Ratio: rmed, RatioMin: rlo, RatioMax: rhi,
			Note: fmt.Sprintf("capture.Apply of the default IPv4+IPv6 ruleset (%s), n=%d per backend, interleaved rounds", cs[0].name, n),
		}
		if cs[i].name == "iptables-nft-restore" {
			row.Target = fmt.Sprintf("≥ %dx", targetRatio)
			row.Pass = benchreport.Pass(rmed >= targetRatio)
		}
		out = append(out, row, benchreport.Row{
			Area: "rules", Name: "program rules, fresh netns, p90 (vs " + cs[i].name + ")", Unit: "ms",
			Ours: ms(op90), Peer: cs[i].name, PeerVal: ms(pp90),
			Note: fmt.Sprintf("n=%d per backend", n),
		})
	}
	return out
}
