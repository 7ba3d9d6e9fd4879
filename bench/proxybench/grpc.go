package proxybench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/proxy/grpcecho"
)

// The gRPC benchmark: unary calls of the grpcecho service (grpc-go server and load client,
// both in this process) over HTTP/2 prior knowledge, direct and through sidelane-proxy and
// haproxy (mode http, proto h2 on both sides), behind REDIRECT rules in a namespace of its
// own.
const (
	gDirectPort   = 19080
	gSidelanePort = 19081 // → sidelane-proxy outbound capture (15001)
	gHAProxyPort  = 19083 // → haproxy (17002)
	gHAListen     = 17002
	gConns        = 4    // client connections (gRPC channels)
	gCallers      = 16   // concurrent callers at saturation
	gRate         = 1000 // calls per second for the latency runs
)

var (
	gTargets    = []string{tDirect, tSidelane, tHAProxy}
	gTargetPort = map[string]int{tDirect: gDirectPort, tSidelane: gSidelanePort, tHAProxy: gHAProxyPort}
	gPercentile = []float64{50, 99, 99.9}
)

const haproxyGRPCConfig = `global
	maxconn 4096
defaults
	mode http
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind 0.0.0.0:17002 proto h2
	default_backend be
backend be
	server orig 0.0.0.0:0 proto h2
`

// grpcRound is one target's figures in one round.
type grpcRound struct {
	CallsPerSec  float64   `json:"callsPerSec"`
	CPUMicros    float64   `json:"cpuMicrosPerCall,omitempty"` // proxies only
	LatencyMs    []float64 `json:"latencyMs"`                  // at gPercentile, fixed rate
	Errors       int64     `json:"errors"`
	AchievedRate float64   `json:"achievedRate"`
}

// RunGRPC runs the gRPC benchmark (root needed).
func RunGRPC(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	e, done, err := newEnv(cfg.WorkDir, "proxybench-grpc")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := e.setupGRPC(ctx, cfg); err != nil {
		return nil, fmt.Errorf("grpc bench setup: %w", err)
	}
	conns := map[string][]*grpc.ClientConn{}
	for _, t := range gTargets {
		for range gConns {
			cc, err := grpc.NewClient(fmt.Sprintf("passthrough:///127.0.0.1:%d", gTargetPort[t]),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					var c net.Conn
					err := capture.InNetns(e.nsPath, func() error {
						var err error
						c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
						return err
					})
					return c, err
				}))
			if err != nil {
				return nil, err
			}
			defer cc.Close()
			conns[t] = append(conns[t], cc)
		}
		// Every target answers before anything is measured.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := grpcecho.Unary(cctx, conns[t][0], []byte("ready"), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s does not answer: %w", t, err)
		}
	}

	rounds := max(cfg.Rounds, 3)
	dur := 5 * time.Second
	if cfg.Quick {
		rounds, dur = 1, time.Second
	}
	var deadline time.Time
	if cfg.Budget > 0 && !cfg.Quick {
		deadline = time.Now().Add(cfg.Budget)
	}
	res := map[string][]grpcRound{}
	for r := 0; r < rounds; r++ {
		if r > 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		for k := range gTargets {
			t := gTargets[(r+k)%len(gTargets)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var gr grpcRound
			before := e.cpuTicks(t)
			calls, errs := saturate(ctx, conns[t], dur)
			after := e.cpuTicks(t)
			gr.CallsPerSec = float64(calls) / dur.Seconds()
			gr.Errors = errs
			if calls > 0 && after > before {
				gr.CPUMicros = float64(after-before) * (1e6 / clkTck) / float64(calls)
			}
			lat, rate, errs := fixedRate(ctx, conns[t], dur)
			gr.Errors += errs
			gr.AchievedRate = rate
			for _, p := range gPercentile {
				gr.LatencyMs = append(gr.LatencyMs, benchreport.Percentile(lat, p))
			}
			if gr.Errors > 0 {
				return nil, fmt.Errorf("%s: %d failed calls", t, gr.Errors)
			}
			res[t] = append(res[t], gr)
		}
	}
	if err := writeJSONFile(filepath.Join(e.work, "proxybench-grpc.json"), res); err != nil {
		return nil, err
	}
	return grpcRows(res), nil
}

// saturate makes unary calls back to back from gCallers goroutines spread over conns for d.
func saturate(ctx context.Context, conns []*grpc.ClientConn, d time.Duration) (calls, errs int64) {
	var n, failed atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	msg := []byte("hello from the benchmark client")
	for i := range gCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := conns[i%len(conns)]
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := grpcecho.Unary(ctx, cc, msg); err != nil {
					failed.Add(1)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), failed.Load()
}

// fixedRate starts gRate calls per second for d, round-robin over conns, and returns each
// call's latency in ms measured from when it was due (no coordinated omission).
func fixedRate(ctx context.Context, conns []*grpc.ClientConn, d time.Duration) (lat []float64, rate float64, errs int64) {
	var mu sync.Mutex
	var failed atomic.Int64
	var wg sync.WaitGroup
	msg := []byte("hello from the benchmark client")
	interval := time.Second / gRate
	start := time.Now()
	total := int(d / interval)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w) // pacing the load generator, not synchronisation
		}
		wg.Add(1)
		go func(cc *grpc.ClientConn) {
			defer wg.Done()
			if _, err := grpcecho.Unary(ctx, cc, msg); err != nil {
				failed.Add(1)
				return
			}
			ms := float64(time.Since(due)) / float64(time.Millisecond)
			mu.Lock()
			lat = append(lat, ms)
			mu.Unlock()
		}(conns[i%len(conns)])
	}
	wg.Wait()
	return lat, float64(len(lat)) / time.Since(start).Seconds(), failed.Load()
}

func (e *env) setupGRPC(ctx context.Context, cfg benchreport.Config) error {
	proxyBin, err := proxyBinary(ctx, cfg.BinDir, e.rt)
	if err != nil {
		return err
	}
	ruleset := fmt.Sprintf(`table ip sidelane_bench {
	chain output {
		type nat hook output priority -100; policy accept;
		meta skuid %d return
		tcp dport %d redirect to :15001
		tcp dport %d redirect to :%d
	}
}
`, proxyUID, gSidelanePort, gHAProxyPort, gHAListen)
	if err := e.newNetns(ctx, "sl-pxgrpc", ruleset); err != nil {
		return err
	}
	// The application: the grpcecho service on every service port.
	gs := grpc.NewServer()
	grpcecho.Register(gs, &grpcecho.Handler{})
	for _, port := range []int{gDirectPort, gSidelanePort, gHAProxyPort} {
		l, err := e.listen(fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		go gs.Serve(l)
	}
	e.closers = append(e.closers, gs.Stop)
	logf, err := os.Create(filepath.Join(e.work, "grpc-proxies.stderr"))
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() { logf.Close() })
	if err := e.start(ctx, tSidelane, logf, proxyBin, "-access-log=true"); err != nil {
		return err
	}
	hacfg := filepath.Join(e.rt, "haproxy-grpc.cfg")
	if err := os.WriteFile(hacfg, []byte(haproxyGRPCConfig), 0o644); err != nil {
		return err
	}
	return e.start(ctx, tHAProxy, logf, "haproxy", "-db", "-f", hacfg)
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func grpcRows(res map[string][]grpcRound) []benchreport.Row {
	n := fmt.Sprintf("n=%d interleaved rounds", len(res[tDirect]))
	get := func(t string, f func(grpcRound) float64) []float64 { return perRound(res, t, f) }
	cps := func(g grpcRound) float64 { return g.CallsPerSec }
	cpu := func(g grpcRound) float64 { return g.CPUMicros }
	var rows []benchreport.Row

	om, olo, ohi := spread(get(tSidelane, cps))
	rh, rhlo, rhhi := spread(ratios(get(tSidelane, cps), get(tHAProxy, cps)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: fmt.Sprintf("gRPC unary calls/s at saturation (%d callers, %d connections) vs haproxy", gCallers, gConns), Unit: "calls/s",
		Ours: om, OursMin: olo, OursMax: ohi, Peer: tHAProxy, PeerVal: median(get(tHAProxy, cps)),
		Ratio: rh, RatioMin: rhlo, RatioMax: rhhi, Target: "≥ 0.9x", Pass: benchreport.Pass(rh >= 0.9),
		Note: fmt.Sprintf("direct %.0f calls/s; haproxy mode http, proto h2 on bind and server, server 0.0.0.0:0; grpc-go client and server in-process; %s", median(get(tDirect, cps)), n),
	})
	cm, clo, chi := spread(get(tSidelane, cpu))
	cr, crlo, crhi := spread(ratios(get(tSidelane, cpu), get(tHAProxy, cpu)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "gRPC proxy CPU per unary call at saturation", Unit: "µs",
		Ours: cm, OursMin: clo, OursMax: chi, Peer: tHAProxy, PeerVal: median(get(tHAProxy, cpu)),
		Ratio: cr, RatioMin: crlo, RatioMax: crhi, Target: "≤ 1.2x haproxy", Pass: benchreport.Pass(cm > 0 && cr <= 1.2),
		Note: "ratio = sidelane-proxy / haproxy (lower is better); utime+stime from /proc/<pid>/stat / calls; " + n,
	})
	for i, p := range gPercentile {
		added := func(t string) []float64 {
			var out []float64
			for r := range min(len(res[t]), len(res[tDirect])) {
				out = append(out, res[t][r].LatencyMs[i]-res[tDirect][r].LatencyMs[i])
			}
			return out
		}
		am, alo, ahi := spread(added(tSidelane))
		hm := median(added(tHAProxy))
		row := benchreport.Row{
			Area: "proxy", Name: fmt.Sprintf("gRPC added p%g latency at %d calls/s, %d connections", p, gRate, gConns), Unit: "ms",
			Ours: am, OursMin: alo, OursMax: ahi, Peer: tHAProxy, PeerVal: hm,
			Note: fmt.Sprintf("proxy p%g minus direct p%g in the same round (direct p%g %.3f ms); %s", p, p, p,
				median(get(tDirect, func(g grpcRound) float64 { return g.LatencyMs[i] })), n),
		}
		if p == 99 {
			row.Target = "≤ haproxy + 0.1 ms"
			row.Pass = benchreport.Pass(am <= hm+0.1)
		}
		rows = append(rows, row)
	}
	return rows
}
