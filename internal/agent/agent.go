// Package agent is the Sidelane node agent (sidelane-agent): it installs the CNI plugin and
// keeps it installed (package install), keeps the record of the node's pods (record, podwatch),
// serves the agent API on the plugin's unix socket and on TCP behind Kubernetes
// authentication (server, auth), and repairs injected pods whose rules are missing or drifted
// (repair). Main parses the subcommands: run (the DaemonSet), install and uninstall (the same
// install code, once, with no API server).
package agent

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/sidelane/sidelane/install"
	"github.com/sidelane/sidelane/internal/agent/auth"
	"github.com/sidelane/sidelane/internal/agent/inspect"
	"github.com/sidelane/sidelane/internal/agent/metrics"
	"github.com/sidelane/sidelane/internal/agent/podwatch"
	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agent/repair"
	"github.com/sidelane/sidelane/internal/agent/server"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
)

// Config is the configuration of `sidelane-agent run`.
type Config struct {
	Node string
	// Kubeconfig of the agent itself; empty: in-cluster.
	Kubeconfig string
	// Socket is the unix socket of the API (the plugin's agent_socket).
	Socket string
	// Listen are the TCP addresses of the authenticated API (none: no TCP API).
	Listen []string
	// SelfSignedTLS serves the non-loopback TCP listeners over TLS with a self-signed
	// certificate (loopback, where port-forwards arrive, stays plain HTTP).
	SelfSignedTLS bool
	// StateDir holds the record (record.FileName).
	StateDir string
	// ProcRoot is where the host's /proc is (hostPID).
	ProcRoot       string
	RepairMode     repair.Mode
	RepairInterval time.Duration
	// DeleteAfter is how long a pod's rules must have been missing, with no netns found or the
	// apply failing, before the pod is deleted.
	DeleteAfter time.Duration
	// Backend is the plugin's configured backend, used for pods recorded without one.
	Backend  string
	Excluded []string
	// Install configures the plugin install (conf/bin dirs, binary, plugin config).
	Install install.Config
	// OnExit is OnExitAuto, OnExitUninstall or OnExitKeep.
	OnExit string
	// PodNamespace and PodName are the agent's own pod (downward API), for OnExitAuto.
	PodNamespace, PodName string
	// AuthCacheTTL is how long review answers are cached.
	AuthCacheTTL time.Duration
	// MaxRecords bounds the record.
	MaxRecords int
	Log        *slog.Logger
}

// Run is the DaemonSet: everything until ctx ends (or a part fails), then uninstall or keep
// the plugin as cfg.OnExit says.
func Run(ctx context.Context, cfg Config, client kubernetes.Interface) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Node == "" {
		return errors.New("node name is required (--node-name)")
	}
	store, err := record.Open(cfg.StateDir, cfg.MaxRecords)
	if err != nil {
		return err
	}
	// Reports are answered once in memory; the file follows within record.DefaultWriteDelay
	// and is written for the last time after every part has stopped.
	stopWriteBehind := store.WriteBehind(record.DefaultWriteDelay, func(err error) { log.Error("record", "error", err) })
	defer func() {
		if stopWriteBehind != nil {
			stopWriteBehind()
		}
	}()
	emit, stopEvents := podwatch.Recorder(client, cfg.Node)
	defer stopEvents()
	p, err := newParts(cfg, client, log, store, emit)
	if err != nil {
		return err
	}
	ul, tcp, err := listen(cfg)
	if err != nil {
		return err
	}
	// The parts run until ctx ends or one of them stops; then they all stop, and the first
	// error, named after its part, is Run's.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, runCtx := errgroup.WithContext(runCtx)
	part := func(name string, fn func(context.Context) error) {
		g.Go(func() error {
			defer stop()
			if err := fn(runCtx); err != nil {
				log.Error("agent part failed; stopping", "part", name, "error", err)
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	part("unix API", func(ctx context.Context) error { return p.srv.ServeUnix(ctx, ul, p.srv.UnixHandler()) })
	if len(tcp) > 0 {
		h := p.srv.TCPHandler(auth.New(client, cfg.AuthCacheTTL))
		for _, tl := range tcp {
			part("TCP API "+tl.Addr().String(), func(ctx context.Context) error { return server.Serve(ctx, tl, h) })
		}
	}
	part("install watcher", p.watcher.Run)
	part("pod watcher", p.pods.Run)
	log.Info("agent started", "node", cfg.Node, "socket", cfg.Socket, "listen", cfg.Listen, "repairMode", cfg.RepairMode)
	runErr := g.Wait()

	err, stopWriteBehind = stopWriteBehind(), nil
	if err != nil {
		log.Error("record", "error", err)
		runErr = errors.Join(runErr, err)
	}
	mode, why := exitMode(context.WithoutCancel(ctx), client, cfg.OnExit, cfg.PodNamespace, cfg.PodName)
	if err := install.Uninstall(cfg.Install, mode); err != nil {
		log.Error("uninstall", "error", err)
		runErr = errors.Join(runErr, fmt.Errorf("uninstall: %w", err))
	} else {
		log.Info("stopped", "uninstalled", mode == install.RemoveAll, "because", why)
	}
	return runErr
}

// parts are the agent's long-running pieces, wired to each other.
type parts struct {
	watcher *install.Watcher
	pods    *podwatch.Watcher
	srv     *server.Server
}

// newParts builds the install watcher, metrics, repairer, pod watcher and API server around
// store, with emit for Kubernetes events.
func newParts(cfg Config, client kubernetes.Interface, log *slog.Logger, store *record.Store, emit podwatch.Emit) (*parts, error) {
	watcher, err := install.NewWatcher(cfg.Install, log.With("component", "install"))
	if err != nil {
		return nil, err
	}
	m := metrics.New(func() map[string]int {
		out := map[string]int{}
		for _, r := range store.List() {
			out[r.State]++
		}
		return out
	}, func() metrics.InstallStats {
		s := watcher.Stats()
		return metrics.InstallStats{Writes: s.Writes, Overwrites: s.Overwrites, Fights: s.Fights, Errors: s.Errors, Fighting: s.Fighting, Backoff: s.Backoff}
	})
	engine := &inspect.Capture{}
	watcher.OnFight(func(f install.Fight) { emit(selfRef(cfg), true, FightReason, f.String()) })
	procRoot := cfg.ProcRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	rep := &repair.Repairer{
		Store: store, Engine: engine, Mode: cfg.RepairMode, DeleteAfter: cfg.DeleteAfter, DefaultBackend: cfg.Backend, Metrics: m,
		Log:       log.With("component", "repair"),
		FindNetns: func(ips []string) (string, error) { return repair.FindNetnsByIP(procRoot, ips) },
		DeletePod: podwatch.DeletePod(client),
		Event:     podwatch.PodEvents(emit),
	}
	pw := podwatch.NewWatcher()
	pw.Client, pw.Node, pw.Excluded, pw.Store, pw.Interval = client, cfg.Node, cfg.Excluded, store, cfg.RepairInterval
	pw.Log = log.With("component", "podwatch")
	pw.OnMiss = func(reason string) { m.CacheMisses.WithLabelValues(reason).Inc() }
	pw.Check = func(ctx context.Context, p record.PodInfo) (time.Duration, error) {
		res, err := rep.Check(ctx, p)
		return res.RetryAfter, err
	}
	srv := &server.Server{
		Node: cfg.Node, Store: store, Engine: engine, DefaultBackend: cfg.Backend, Metrics: m,
		Log: log.With("component", "api"),
		Ready: func() error {
			if err := watcher.Ready(); err != nil {
				return fmt.Errorf("plugin install: %w", err)
			}
			if !pw.Synced() {
				return errors.New("pod informer not synced yet")
			}
			return nil
		},
		OnReport: func(r agentapi.Report) {
			if r.Event != agentapi.EventDel {
				pw.Enqueue(r.Namespace, r.Name)
			}
		},
		Decider: pw.Decide,
	}
	return &parts{watcher: watcher, pods: pw, srv: srv}, nil
}

// listen opens the unix socket and the TCP listeners (TLS on the non-loopback ones with
// SelfSignedTLS); on error nothing is left open.
func listen(cfg Config) (net.Listener, []net.Listener, error) {
	var tlsConfig *cryptotls.Config
	if cfg.SelfSignedTLS {
		hosts := []string{cfg.Node}
		for _, a := range cfg.Listen {
			if host, _, err := net.SplitHostPort(a); err == nil && host != "" {
				hosts = append(hosts, host)
			}
		}
		var err error
		if tlsConfig, err = server.SelfSignedTLS(hosts); err != nil {
			return nil, nil, err
		}
	}
	ul, err := server.ListenUnix(cfg.Socket)
	if err != nil {
		return nil, nil, err
	}
	var tcp []net.Listener
	for _, addr := range cfg.Listen {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			ul.Close()
			for _, l := range tcp {
				l.Close()
			}
			return nil, nil, fmt.Errorf("agent TCP API: %w", err)
		}
		if tlsConfig != nil && !server.IsLoopback(addr) {
			tl = cryptotls.NewListener(tl, tlsConfig)
		}
		tcp = append(tcp, tl)
	}
	return ul, tcp, nil
}

// DefaultListen is the TCP API address for a node IP ("" listens on every address).
func DefaultListen(nodeIP string) string {
	return net.JoinHostPort(nodeIP, strconv.Itoa(contract.AgentPort))
}

// FightReason is the reason of the Warning event the agent emits when another component keeps
// removing the plugin's entry from the primary conflist.
const FightReason = "CNIConfigFight"

// selfRef is what the agent's own events are about: its pod when it knows it (downward API),
// else its node.
func selfRef(cfg Config) *corev1.ObjectReference {
	if cfg.PodName != "" && cfg.PodNamespace != "" {
		return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: cfg.PodNamespace, Name: cfg.PodName}
	}
	return &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: cfg.Node, UID: types.UID(cfg.Node)}
}
