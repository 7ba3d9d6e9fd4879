// Package proxybench measures sidelane-proxy against direct connections and two peers in one
// run: a net/http/httputil.ReverseProxy baseline and haproxy, each behind real REDIRECT rules
// (nftables, in a network namespace of the benchmark's own) on loopback, so that every proxy
// finds its upstream through SO_ORIGINAL_DST as a sidecar does.
//
// Per target it measures saturation throughput (wrk -t1 -c16), latency at a fixed 1000
// requests/s over 16 connections (fortio), connection churn throughput (wrk with
// "Connection: close"), and for the proxies CPU time per request and resident memory from
// /proc. Rounds are interleaved, each round rotating which target goes first.
package proxybench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/proxy"
)

// FortioVersion is the load generator used for the fixed-rate latency runs.
const FortioVersion = "v1.68.2"

// Ports inside the benchmark namespace. The application listens on every "service" port;
// connections to a service port other than directPort are redirected to one proxy.
const (
	directPort   = 18080
	sidelanePort = 18081 // → sidelane-proxy outbound capture (15001)
	rpPort       = 18082 // → ReverseProxy baseline (16001)
	haproxyPort  = 18083 // → haproxy (17001)
	rpListen     = 16001
	haListen     = 17001
	proxyUID     = 1337
	bypassMark   = 0x1337 // SO_MARK of the in-process baseline's upstream connections
)

// Targets, in the order of the report.
const (
	tDirect   = "direct"
	tSidelane = "sidelane-proxy"
	tRP       = "httputil.ReverseProxy"
	tHAProxy  = "haproxy"
)

var targets = []string{tDirect, tSidelane, tRP, tHAProxy}

var targetPort = map[string]int{tDirect: directPort, tSidelane: sidelanePort, tRP: rpPort, tHAProxy: haproxyPort}

// env is the benchmark's network namespace and everything running in it.
type env struct {
	ns       string
	nsPath   string
	work     string // results (cfg.WorkDir)
	rt       string // binaries and configuration the proxies read
	fortio   string
	procs    map[string]*exec.Cmd // sidelane-proxy, haproxy
	closers  []func()
	response []byte
}

// Run runs the proxy benchmark (root needed).
func Run(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	e, done, err := newEnv(cfg.WorkDir, "proxybench")
	if err != nil {
		return nil, err
	}
	defer done()
	if err := e.setup(ctx, cfg); err != nil {
		return nil, fmt.Errorf("proxy bench setup: %w", err)
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
	res := newResults()
	for r := 0; r < rounds; r++ {
		if r > 0 && !deadline.IsZero() && time.Now().After(deadline) {
			break // over budget: report the rounds done (rows note n)
		}
		for k := range targets {
			t := targets[(r+k)%len(targets)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			sat, err := e.wrk(ctx, t, dur, false)
			if err != nil {
				return nil, err
			}
			res.sat[t] = append(res.sat[t], sat)
			churn, err := e.wrk(ctx, t, dur, true)
			if err != nil {
				return nil, err
			}
			res.churn[t] = append(res.churn[t], churn)
			lat, err := e.fortioLoad(ctx, t, dur)
			if err != nil {
				return nil, err
			}
			res.lat[t] = append(res.lat[t], lat)
		}
	}
	for _, t := range []string{tSidelane, tHAProxy} {
		res.rss[t] = e.rss(t)
	}
	res.rounds = len(res.sat[tDirect])
	rows := res.rows()
	if err := res.writeJSON(filepath.Join(e.work, "proxybench-latency.json")); err != nil {
		return rows, err
	}
	return rows, nil
}

func (e *env) close() {
	for _, c := range e.procs {
		if c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	if e.ns != "" {
		exec.Command("ip", "netns", "del", e.ns).Run()
	}
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (e *env) setup(ctx context.Context, cfg benchreport.Config) error {
	fortio, err := installFortio(ctx)
	if err != nil {
		return err
	}
	e.fortio = fortio
	proxyBin, err := proxyBinary(ctx, cfg.BinDir, e.rt)
	if err != nil {
		return err
	}
	// The redirect rules: each proxied service port goes to its proxy; the proxies' own
	// upstream connections (uid 1337, or the in-process baseline's mark) are not captured.
	ruleset := fmt.Sprintf(`table ip sidelane_bench {
	chain output {
		type nat hook output priority -100; policy accept;
		meta skuid %d return
		meta mark %d return
		tcp dport %d redirect to :15001
		tcp dport %d redirect to :%d
		tcp dport %d redirect to :%d
	}
}
`, proxyUID, bypassMark, sidelanePort, rpPort, rpListen, haproxyPort, haListen)
	if err := e.newNetns(ctx, "sl-pxbench", ruleset); err != nil {
		return err
	}

	// The application: a small, fast net/http server on every service port.
	e.response = []byte("hello from the benchmark app\n")
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(e.response)
	})}
	for _, port := range []int{directPort, sidelanePort, rpPort, haproxyPort} {
		l, err := e.listen(fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		go app.Serve(l)
	}
	e.closers = append(e.closers, func() { app.Close() })

	// The ReverseProxy baseline, in process, reading SO_ORIGINAL_DST.
	if err := e.startReverseProxy(); err != nil {
		return err
	}
	// sidelane-proxy and haproxy as uid/gid 1337, like a sidecar.
	logf, err := os.Create(filepath.Join(e.work, "sidelane-proxy.stderr"))
	if err != nil {
		return err
	}
	e.closers = append(e.closers, func() { logf.Close() })
	if err := e.start(ctx, tSidelane, logf, proxyBin, "-access-log=true", "-concurrency", strconv.Itoa(Threads)); err != nil {
		return err
	}
	hacfg := filepath.Join(e.rt, "haproxy.cfg")
	if err := os.WriteFile(hacfg, []byte(fmt.Sprintf(haproxyConfig, Threads)), 0o644); err != nil {
		return err
	}
	if err := e.start(ctx, tHAProxy, logf, "haproxy", "-db", "-f", hacfg); err != nil {
		return err
	}
	// Every target answers before anything is measured.
	for _, t := range targets {
		if err := e.waitServing(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// Threads is the thread count of both proxies: sidelane-proxy's -concurrency and haproxy's
// nbthread, so that they are compared at the same parallelism (a sidecar's default).
var Threads = 2

const haproxyConfig = `global
	maxconn 4096
	nbthread %d
defaults
	mode http
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind 0.0.0.0:17001
	default_backend be
backend be
	server orig 0.0.0.0:0
`

// newEnv makes a benchmark environment: its work directory (work, or a temporary one named
// after prefix) and the directory of files the proxies (uid 1337) read, which they can reach.
// done closes the environment and removes what newEnv created.
func newEnv(work, prefix string) (e *env, done func(), err error) {
	var cleanup []func()
	done = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			done()
		}
	}()
	if work == "" {
		d, err := os.MkdirTemp("", prefix+"-")
		if err != nil {
			return nil, nil, err
		}
		cleanup = append(cleanup, func() { os.RemoveAll(d) })
		work = d
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, nil, err
	}
	rt, err := os.MkdirTemp("", prefix+"-rt-")
	if err != nil {
		return nil, nil, err
	}
	cleanup = append(cleanup, func() { os.RemoveAll(rt) })
	if err := os.Chmod(rt, 0o755); err != nil {
		return nil, nil, err
	}
	e = &env{work: work, rt: rt, procs: map[string]*exec.Cmd{}}
	cleanup = append(cleanup, e.close)
	return e, done, nil
}

// newNetns creates the benchmark's network namespace (name prefix-<pid>) with loopback up and
// the nftables ruleset in it.
func (e *env) newNetns(ctx context.Context, prefix, ruleset string) error {
	e.ns = fmt.Sprintf("%s-%d", prefix, os.Getpid())
	e.nsPath = "/run/netns/" + e.ns
	if _, err := run(ctx, "ip", "netns", "add", e.ns); err != nil {
		e.ns = ""
		return err
	}
	if _, err := run(ctx, "ip", "-n", e.ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	return nil
}

// listen listens inside the benchmark namespace.
func (e *env) listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := capture.InNetns(e.nsPath, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err == nil {
		e.closers = append(e.closers, func() { l.Close() })
	}
	return l, err
}

type ctxKey struct{}

func (e *env) startReverseProxy() error {
	l, err := e.listen(fmt.Sprintf("127.0.0.1:%d", rpListen))
	if err != nil {
		return err
	}
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, bypassMark) })
		if err != nil {
			return err
		}
		return serr
	}}
	tr := &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		// The socket must be created inside the benchmark namespace.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := capture.InNetns(e.nsPath, func() error {
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			dst, _ := pr.In.Context().Value(ctxKey{}).(netip.AddrPort)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = dst.String()
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		Handler: rp,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*net.TCPConn); ok {
				if dst, err := proxy.OriginalDst(tc); err == nil {
					return context.WithValue(ctx, ctxKey{}, dst)
				}
			}
			return ctx
		},
	}
	go srv.Serve(l)
	e.closers = append(e.closers, func() { srv.Close() })
	return nil
}

// start runs a proxy process in the namespace as uid/gid 1337.
func (e *env) start(ctx context.Context, name string, stderr io.Writer, bin string, args ...string) error {
	a := append([]string{"netns", "exec", e.ns, "setpriv", "--reuid", strconv.Itoa(proxyUID), "--regid", strconv.Itoa(proxyUID), "--clear-groups", bin}, args...)
	cmd := exec.Command("ip", a...)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	e.procs[name] = cmd
	return nil
}

// waitServing polls a target until it answers 200.
func (e *env) waitServing(ctx context.Context, t string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(ctx, "ip", "netns", "exec", e.ns, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
			fmt.Sprintf("http://127.0.0.1:%d/", targetPort[t]))
		if err == nil && out == "200" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer: %v %s", t, err, out)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cpuTicks returns utime+stime of a proxy process (clock ticks), 0 for in-process targets.
func (e *env) cpuTicks(t string) int64 {
	c, ok := e.procs[t]
	if !ok {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// rss returns the resident memory (VmRSS) and peak (VmHWM) of a proxy process in MB.
func (e *env) rss(t string) [2]float64 {
	c, ok := e.procs[t]
	if !ok {
		return [2]float64{}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Process.Pid))
	if err != nil {
		return [2]float64{}
	}
	var out [2]float64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			out[0] = kb / 1024
		case "VmHWM:":
			out[1] = kb / 1024
		}
	}
	return out
}

// clkTck is USER_HZ, 100 on Linux.
const clkTck = 100

// wrkResult is one wrk run.
type wrkResult struct {
	RPS       float64 `json:"rps"`
	Requests  float64 `json:"requests"`
	Errors    float64 `json:"errors"`
	CPUmicros float64 `json:"cpuMicrosPerRequest,omitempty"` // proxies only
	// For direct only: CPU time per request of wrk and of the application.
	ClientMicros float64 `json:"clientCpuMicrosPerRequest,omitempty"`
	AppMicros    float64 `json:"appCpuMicrosPerRequest,omitempty"`
}

func cpuTime(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reRequests = regexp.MustCompile(`(\d+) requests in`)
	reErrors   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)|Non-2xx or 3xx responses: (\d+)`)
)

func (e *env) wrk(ctx context.Context, t string, d time.Duration, churn bool) (wrkResult, error) {
	args := []string{"netns", "exec", e.ns, "wrk", "-t1", "-c16", "-d" + d.String()}
	if churn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, fmt.Sprintf("http://127.0.0.1:%d/", targetPort[t]))
	before := e.cpuTicks(t)
	var self0, self1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &self0)
	cmd := exec.CommandContext(ctx, "ip", args...)
	o, err := cmd.CombinedOutput()
	unix.Getrusage(unix.RUSAGE_SELF, &self1)
	after := e.cpuTicks(t)
	out := string(o)
	if err != nil {
		return wrkResult{}, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	var r wrkResult
	m := reRPS.FindStringSubmatch(out)
	n := reRequests.FindStringSubmatch(out)
	if m == nil || n == nil {
		return r, fmt.Errorf("wrk %s: no result in %q", t, out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	r.Requests, _ = strconv.ParseFloat(n[1], 64)
	for _, em := range reErrors.FindAllStringSubmatch(out, -1) {
		for _, v := range em[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			r.Errors += x
		}
	}
	if r.Requests > 0 && after > before {
		r.CPUmicros = float64(after-before) * (1e6 / clkTck) / r.Requests
	}
	if t == tDirect && r.Requests > 0 {
		// The direct path's own cost: the load generator (ip execs wrk in place) and the
		// application, which is this process (nothing else of it runs meanwhile).
		r.ClientMicros = float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()) / float64(time.Microsecond) / r.Requests
		r.AppMicros = float64(cpuTime(self1)-cpuTime(self0)) / float64(time.Microsecond) / r.Requests
	}
	return r, nil
}

// latency is one fortio run: percentiles in milliseconds.
type latency struct {
	QPS    float64             `json:"qps"`
	Points []benchreport.Point `json:"points"`
}

var percentiles = []float64{50, 75, 90, 99, 99.9}

func (e *env) fortioLoad(ctx context.Context, t string, d time.Duration) (latency, error) {
	out := filepath.Join(e.work, "fortio-"+strings.ReplaceAll(t, "/", "_")+".json")
	var ps []string
	for _, p := range percentiles {
		ps = append(ps, strconv.FormatFloat(p, 'f', -1, 64))
	}
	_, err := run(ctx, "ip", "netns", "exec", e.ns, e.fortio, "load", "-qps", "1000", "-c", "16", "-r", "0.00001",
		"-t", d.String(), "-p", strings.Join(ps, ","), "-json", out, "-quiet",
		fmt.Sprintf("http://127.0.0.1:%d/", targetPort[t]))
	if err != nil {
		return latency{}, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return latency{}, err
	}
	var res struct {
		ActualQPS         float64
		DurationHistogram struct {
			Percentiles []struct{ Percentile, Value float64 }
		}
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return latency{}, fmt.Errorf("fortio result %s: %w", out, err)
	}
	l := latency{QPS: res.ActualQPS}
	for _, p := range res.DurationHistogram.Percentiles {
		l.Points = append(l.Points, benchreport.Point{Percentile: p.Percentile, Millis: p.Value * 1000})
	}
	if len(l.Points) != len(percentiles) {
		return l, fmt.Errorf("fortio %s: %d percentiles, want %d", t, len(l.Points), len(percentiles))
	}
	return l, nil
}

// installFortio installs fortio into a cache directory once (go install).
func installFortio(ctx context.Context) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sidelane-bench", "fortio-"+FortioVersion)
	bin := filepath.Join(dir, "fortio")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "go", "install", "fortio.org/fortio@"+FortioVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install fortio.org/fortio@%s: %w: %s", FortioVersion, err, out)
	}
	return bin, nil
}

// proxyBinary returns bin/sidelane-proxy, building it into work when it is not there.
func proxyBinary(ctx context.Context, binDir, work string) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, "sidelane-proxy")
		if _, err := os.Stat(p); err == nil {
			return filepath.Abs(p)
		}
	}
	p := filepath.Join(work, "sidelane-proxy")
	if _, err := run(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", p, "github.com/sidelane/sidelane/proxy"); err != nil {
		return "", err
	}
	return p, nil
}

// results are the samples of all rounds.
type results struct {
	rounds int
	sat    map[string][]wrkResult
	churn  map[string][]wrkResult
	lat    map[string][]latency
	rss    map[string][2]float64
}

func newResults() *results {
	return &results{sat: map[string][]wrkResult{}, churn: map[string][]wrkResult{}, lat: map[string][]latency{}, rss: map[string][2]float64{}}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func spread(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	return median(xs), slices.Min(xs), slices.Max(xs)
}

// perRound maps each round's sample of target t through f.
func perRound[T any](m map[string][]T, t string, f func(T) float64) []float64 {
	var out []float64
	for _, v := range m[t] {
		out = append(out, f(v))
	}
	return out
}

// ratios are per-round ratios a/b.
func ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

func rps(r wrkResult) float64 { return r.RPS }

// pointAt returns the percentile p of l in ms.
func pointAt(l latency, p float64) float64 {
	for _, pt := range l.Points {
		if pt.Percentile == p {
			return pt.Millis
		}
	}
	return 0
}

// medianPoints is the per-percentile median over rounds.
func (r *results) medianPoints(t string) []benchreport.Point {
	var out []benchreport.Point
	for _, p := range percentiles {
		out = append(out, benchreport.Point{Percentile: p, Millis: median(perRound(r.lat, t, func(l latency) float64 { return pointAt(l, p) }))})
	}
	return out
}

func (r *results) rows() []benchreport.Row {
	n := fmt.Sprintf("n=%d interleaved rounds", r.rounds)
	var rows []benchreport.Row
	sat := func(t string) []float64 { return perRound(r.sat, t, rps) }

	// Saturation throughput.
	om, olo, ohi := spread(sat(tSidelane))
	rd, rdlo, rdhi := spread(ratios(sat(tSidelane), sat(tDirect)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "HTTP throughput at saturation (wrk -t1 -c16), share of direct", Unit: "req/s",
		Ours: om, OursMin: olo, OursMax: ohi, Peer: tDirect, PeerVal: median(sat(tDirect)),
		Ratio: rd, RatioMin: rdlo, RatioMax: rdhi, Target: "≥ 0.75", Pass: benchreport.Pass(rd >= 0.75),
		Note: "ratio = sidelane-proxy / direct; " + n,
	})
	rr, rrlo, rrhi := spread(ratios(sat(tSidelane), sat(tRP)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "HTTP throughput at saturation vs ReverseProxy baseline", Unit: "req/s",
		Ours: om, Peer: tRP, PeerVal: median(sat(tRP)),
		Ratio: rr, RatioMin: rrlo, RatioMax: rrhi, Target: "≥ 3x", Pass: benchreport.Pass(rr >= 3),
		Note: "baseline: httputil.ReverseProxy reading SO_ORIGINAL_DST, MaxIdleConnsPerHost 1024; " + n,
	})
	rh, rhlo, rhhi := spread(ratios(sat(tSidelane), sat(tHAProxy)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "HTTP throughput at saturation vs haproxy", Unit: "req/s",
		Ours: om, Peer: tHAProxy, PeerVal: median(sat(tHAProxy)), Ratio: rh, RatioMin: rhlo, RatioMax: rhhi,
		Note: "haproxy " + "mode http, server 0.0.0.0:0 (original destination); " + n,
	})

	// Added latency at 1000 req/s.
	for _, p := range []float64{50, 90, 99, 99.9} {
		added := func(t string) []float64 {
			var out []float64
			for i := range min(len(r.lat[t]), len(r.lat[tDirect])) {
				out = append(out, pointAt(r.lat[t][i], p)-pointAt(r.lat[tDirect][i], p))
			}
			return out
		}
		am, alo, ahi := spread(added(tSidelane))
		row := benchreport.Row{
			Area: "proxy", Name: fmt.Sprintf("added p%g latency at 1000 req/s, 16 connections (fortio)", p), Unit: "ms",
			Ours: am, OursMin: alo, OursMax: ahi, Peer: tHAProxy, PeerVal: median(added(tHAProxy)),
			Note: fmt.Sprintf("proxy p%g minus direct p%g in the same round; ReverseProxy adds %.3f ms; %s", p, p, median(added(tRP)), n),
		}
		switch p {
		case 50:
			row.Target = "≤ 0.25 ms"
			row.Pass = benchreport.Pass(am <= 0.25)
		case 99.9:
			hm := median(added(tHAProxy))
			row.Target = "≤ haproxy"
			row.Pass = benchreport.Pass(am <= hm)
		}
		rows = append(rows, row)
	}

	// CPU per request and memory (proxy processes only).
	cpu := func(t string) []float64 { return perRound(r.sat, t, func(w wrkResult) float64 { return w.CPUmicros }) }
	cm, clo, chi := spread(cpu(tSidelane))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "proxy CPU per request at saturation", Unit: "µs",
		Ours: cm, OursMin: clo, OursMax: chi, Peer: tHAProxy, PeerVal: median(cpu(tHAProxy)),
		Target: "≤ 40 µs", Pass: benchreport.Pass(cm > 0 && cm <= 40),
		Note: "utime+stime from /proc/<pid>/stat over the wrk run / requests; " + n,
	})
	cr0, crlo0, crhi0 := spread(ratios(cpu(tSidelane), cpu(tHAProxy)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: fmt.Sprintf("proxy CPU per request vs haproxy, both at %d threads", Threads), Unit: "x",
		Ours: cr0, OursMin: crlo0, OursMax: crhi0, Peer: tHAProxy, PeerVal: 1,
		Ratio: cr0, RatioMin: crlo0, RatioMax: crhi0, Target: "≤ 1.0x", Pass: benchreport.Pass(cr0 > 0 && cr0 <= 1),
		Note: fmt.Sprintf("per-round ratio sidelane-proxy/haproxy; -concurrency %d, nbthread %d; %s", Threads, Threads, n),
	})
	// The ceiling the machine puts on the throughput ratio: with both cores busy, a request
	// through a proxy costs the direct path's CPU time plus the proxy's.
	direct := median(perRound(r.sat, tDirect, func(w wrkResult) float64 { return w.ClientMicros + w.AppMicros }))
	if direct > 0 && cm > 0 {
		hm := median(cpu(tHAProxy))
		rows = append(rows, benchreport.Row{
			Area: "proxy", Name: "throughput ceiling from CPU cost on this machine, share of direct", Unit: "x",
			Ours: direct / (direct + cm), Peer: tHAProxy, PeerVal: direct / (direct + hm),
			Note: fmt.Sprintf("direct path %.1f µs CPU per request (wrk %.1f + application %.1f); a proxy costing P µs per request leaves at most D/(D+P) of direct when the cores are the limit; ≥ 0.75 would need P ≤ %.1f µs; %s",
				direct, median(perRound(r.sat, tDirect, func(w wrkResult) float64 { return w.ClientMicros })),
				median(perRound(r.sat, tDirect, func(w wrkResult) float64 { return w.AppMicros })), direct/3, n),
		})
	}
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "proxy resident memory after the run", Unit: "MB",
		Ours: r.rss[tSidelane][0], Peer: tHAProxy, PeerVal: r.rss[tHAProxy][0],
		Target: "≤ 20 MB", Pass: benchreport.Pass(r.rss[tSidelane][0] > 0 && r.rss[tSidelane][0] <= 20),
		Note: fmt.Sprintf("VmRSS; peak (VmHWM) %.1f MB, haproxy peak %.1f MB", r.rss[tSidelane][1], r.rss[tHAProxy][1]),
	})

	// Connection churn.
	churn := func(t string) []float64 { return perRound(r.churn, t, rps) }
	chm, chlo, chhi := spread(churn(tSidelane))
	cr, crlo, crhi := spread(ratios(churn(tSidelane), churn(tDirect)))
	rows = append(rows, benchreport.Row{
		Area: "proxy", Name: "connection churn throughput (Connection: close), share of direct", Unit: "req/s",
		Ours: chm, OursMin: chlo, OursMax: chhi, Peer: tDirect, PeerVal: median(churn(tDirect)),
		Ratio: cr, RatioMin: crlo, RatioMax: crhi,
		Note: fmt.Sprintf("haproxy %.0f req/s, ReverseProxy %.0f req/s; %s", median(churn(tHAProxy)), median(churn(tRP)), n),
	})

	// Latency distributions, one row per target, for the chart.
	for _, t := range targets {
		pts := r.medianPoints(t)
		rows = append(rows, benchreport.Row{
			Area: "proxy", Name: "latency at 1000 req/s: " + t, Unit: "ms", Ours: pointAt(latency{Points: pts}, 50),
			Latency: pts, Note: "p50 shown; per-percentile medians over rounds; " + n,
		})
	}
	return rows
}

// writeJSON writes every sample (for charts and for the record).
func (r *results) writeJSON(path string) error {
	doc := map[string]any{"rounds": r.rounds, "saturation": r.sat, "churn": r.churn, "latency": r.lat, "rssMB": r.rss}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
