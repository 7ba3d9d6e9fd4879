package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sidelane/sidelane/install"
	"github.com/sidelane/sidelane/internal/agent/repair"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/flagenv"
	"github.com/sidelane/sidelane/internal/kubeclient"
)

const usage = `usage: sidelane-agent <command> [flags]

commands:
  run        the DaemonSet: install the CNI plugin and keep it installed, serve the API,
             record and repair the node's pods; on SIGTERM uninstall when the DaemonSet is
             gone (--on-exit=auto), always (uninstall) or never (keep, --upgrade)
  install    install the plugin once (binary, conflist entry) and exit; no API server needed
  uninstall  remove the plugin (conflist entry, binary) and exit

Run 'sidelane-agent <command> -h' for the flags of a command.
`

// installFlags are the flags shared by run, install and uninstall.
type installFlags struct {
	confDir, binDir, binary, confName, stateDir string
}

func (f *installFlags) register(fs *flag.FlagSet, withBinary bool) {
	fs.StringVar(&f.confDir, "cni-conf-dir", contract.DefaultCNIConfDir, "host CNI configuration directory")
	fs.StringVar(&f.binDir, "cni-bin-dir", contract.DefaultCNIBinDir, "host CNI binary directory")
	fs.StringVar(&f.confName, "cni-conf-name", "", "primary conflist file name (default: the first in lexical order)")
	fs.StringVar(&f.stateDir, "install-state-dir", install.DefaultStateDir, "directory of the install state (the primary's original bytes)")
	if withBinary {
		def := ""
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), contract.PluginBinary); fileExists(p) {
				def = p
			}
		}
		fs.StringVar(&f.binary, "plugin-binary", def, "sidelane-cni binary to copy into the CNI bin dir (default: next to this binary)")
	}
}

func (f *installFlags) config() install.Config {
	return install.Config{CNIConfDir: f.confDir, CNIBinDir: f.binDir, SourceBinary: f.binary, ConfName: f.confName, StateDir: f.stateDir}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// Main runs the command line args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(ctx, args[1:], stderr)
	case "install":
		err = installCmd(ctx, args[1:], stdout, stderr)
	case "uninstall":
		err = uninstallCmd(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "sidelane-agent: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "sidelane-agent %s: %v\n", args[0], err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "sidelane-agent %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

type usageError struct{ error }

// parse binds the flags to their SIDELANE_AGENT_* variables (package flagenv) and parses args.
func parse(fs *flag.FlagSet, args []string) error {
	if err := flagenv.Bind(fs, "agent"); err != nil {
		return usageError{err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

func installCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f installFlags
	f.register(fs, true)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for a primary CNI configuration")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := install.Install(ctx, f.config()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sidelane-cni installed (conf dir %s, bin dir %s)\n", f.confDir, f.binDir)
	return nil
}

func uninstallCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f installFlags
	f.register(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := install.Uninstall(f.config(), install.RemoveAll); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sidelane-cni uninstalled (conf dir %s, bin dir %s)\n", f.confDir, f.binDir)
	return nil
}

// RunFlags parses the flags of `run` into a Config (exported for tests and documentation).
func RunFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f installFlags
	f.register(fs, true)
	var cfg Config
	var mode, excluded, logLevel, listen, nodeIP string
	fs.StringVar(&cfg.Node, "node-name", "", "this node's name (the DaemonSet sets it from the downward API)")
	fs.StringVar(&nodeIP, "node-ip", "", "this node's IP (the DaemonSet sets it from the downward API): the default of --listen")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the agent (default: in-cluster)")
	fs.StringVar(&cfg.Socket, "socket", contract.DefaultAgentSocket, "unix socket of the API (the plugin's agent_socket); its directory is made 0700")
	fs.StringVar(&listen, "listen", "", `comma-separated TCP addresses of the authenticated API (default 127.0.0.1:15080,<node-ip>:15080 with --node-ip, else :15080; loopback is where port-forwards arrive; "off" disables it)`)
	tlsMode := fs.String("tls", "off", "TLS of the non-loopback TCP listeners: off or self-signed (a certificate made at start; loopback stays plain HTTP for port-forwards)")
	fs.StringVar(&cfg.StateDir, "state-dir", contract.AgentStateDir, "directory of the pod record")
	fs.StringVar(&cfg.ProcRoot, "proc", "/proc", "the host's /proc (the agent runs with hostPID)")
	fs.StringVar(&mode, "repair-mode", string(repair.ModeInPlace), "what to do with pods whose rules are missing or drifted: inplace (delete when impossible), delete or off")
	fs.DurationVar(&cfg.RepairInterval, "repair-interval", 30*time.Second, "period of the drift check of every pod")
	fs.DurationVar(&cfg.DeleteAfter, "delete-after", 30*time.Second, "in inplace mode, how long a pod's rules must have been missing with no netns found (or the apply failing) before the pod is deleted")
	fs.StringVar(&cfg.Backend, "backend", contract.BackendAuto, "plugin backend written into the conflist: auto, nftables or iptables")
	fs.StringVar(&excluded, "exclude-namespaces", strings.Join(contract.DefaultExcludeNamespaces, ","), "namespaces never captured (comma-separated)")
	upgrade := fs.Bool("upgrade", false, "same as --on-exit=keep")
	fs.StringVar(&cfg.OnExit, "on-exit", OnExitAuto, "when the agent stops: auto (uninstall only when its DaemonSet is gone or being deleted), uninstall, or keep")
	fs.StringVar(&cfg.PodNamespace, "pod-namespace", "", "the agent's own pod namespace (from the downward API), for --on-exit=auto")
	fs.StringVar(&cfg.PodName, "pod-name", "", "the agent's own pod name (from the downward API), for --on-exit=auto")
	fs.DurationVar(&cfg.AuthCacheTTL, "auth-cache-ttl", 10*time.Second, "how long token and access review answers are cached")
	fs.IntVar(&cfg.MaxRecords, "max-records", 0, "bound of the pod record (default 4096)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	switch *tlsMode {
	case "off":
	case "self-signed":
		cfg.SelfSignedTLS = true
	default:
		return cfg, usageError{fmt.Errorf("--tls %q: want off or self-signed", *tlsMode)}
	}
	if *upgrade {
		cfg.OnExit = OnExitKeep
	}
	switch cfg.OnExit {
	case OnExitAuto, OnExitUninstall, OnExitKeep:
	default:
		return cfg, usageError{fmt.Errorf("--on-exit %q: want auto, uninstall or keep", cfg.OnExit)}
	}
	m, err := repair.ParseMode(mode)
	if err != nil {
		return cfg, usageError{fmt.Errorf("--repair-mode: %w", err)}
	}
	cfg.RepairMode = m
	switch cfg.Backend {
	case contract.BackendAuto, contract.BackendNFTables, contract.BackendIPTables:
	default:
		return cfg, usageError{fmt.Errorf("--backend %q: want auto, nftables or iptables", cfg.Backend)}
	}
	if cfg.RepairInterval < time.Second {
		return cfg, usageError{fmt.Errorf("--repair-interval %s: must be at least 1s", cfg.RepairInterval)}
	}
	if cfg.Node == "" {
		return cfg, usageError{errors.New("--node-name (or SIDELANE_AGENT_NODE_NAME) is required")}
	}
	if listen == "" {
		listen = DefaultListen("")
		if nodeIP != "" {
			listen = DefaultListen("127.0.0.1") + "," + DefaultListen(nodeIP)
		}
	}
	if listen != "off" {
		for _, a := range strings.Split(listen, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Listen = append(cfg.Listen, a)
			}
		}
	}
	for _, ns := range strings.Split(excluded, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			cfg.Excluded = append(cfg.Excluded, ns)
		}
	}
	cfg.Install = f.config()
	pc := install.DefaultPluginConfig()
	pc["agent_socket"], pc["backend"], pc["exclude_namespaces"], pc["log_level"] = cfg.Socket, cfg.Backend, cfg.Excluded, logLevel
	cfg.Install.PluginConfig = pc
	if cfg.Log, err = newLogger(stderr, logLevel); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

func runCmd(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := RunFlags(args, stderr)
	if err != nil {
		return err
	}
	client, err := kubeclient.New(cfg.Kubeconfig, "sidelane-agent")
	if err != nil {
		return err
	}
	return Run(ctx, cfg, client)
}
