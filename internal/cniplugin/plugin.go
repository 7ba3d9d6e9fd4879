// Package cniplugin is the chained CNI plugin sidelane-cni: on ADD it asks the node agent on its
// unix socket (package cnirpc) whether to capture the pod and with which settings and IP
// families, and when the answer is yes installs the redirect rules in the pod's network
// namespace (internal/rules, internal/capture); CHECK compares the live rules with the expected
// ones, DEL removes them, STATUS (is the agent answering?) and GC follow CNI 1.1. Every command
// reports to the agent, best effort. The plugin holds no credential and never talks to the API
// server; it links neither net/http nor crypto/tls nor client-go (a test checks).
//
// The plugin is chained: it requires prevResult and prints it back unchanged, so stdout carries
// only the CNI result. Logs go to stderr at the configured level. Everything that touches the
// outside world (agent, netns, backends) sits behind the fields of Plugin so that unit tests can
// replace it.
package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/capture"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/rules"
)

// About is the plugin's self-description (printed when run without CNI_COMMAND).
const About = "sidelane-cni: chained CNI plugin that installs a sidecar proxy's traffic redirect rules in the pod's network namespace"

// Plugin runs the CNI commands. The zero value is not usable: call New.
type Plugin struct {
	// Stderr receives the logs.
	Stderr io.Writer
	// Stdout receives the CNI result.
	Stdout io.Writer
	// NewBackend returns the capture backend of the given name (capture.New).
	NewBackend func(name string) (capture.Backend, error)
	// InNetns runs fn inside the network namespace at path (capture.InNetns).
	InNetns func(path string, fn func() error) error
	// Agent sends one request to the node agent on socket and waits at most timeout for the
	// answer (cnirpc.Call).
	Agent func(ctx context.Context, socket string, req cnirpc.Request, timeout time.Duration) (cnirpc.Response, error)
	// DecideTimeout bounds the wait for the agent's decision at ADD (the agent's own API
	// lookup on a cache miss is bounded below it).
	DecideTimeout time.Duration
	// ReportTimeout bounds the wait for the agent to take a report (best effort).
	ReportTimeout time.Duration
	// StatusTimeout bounds STATUS's ping of the agent.
	StatusTimeout time.Duration
	// Now is the clock.
	Now func() time.Time
	// Ctx ends the plugin's calls to the node agent early (the runtime stopping the plugin);
	// nil means never.
	Ctx context.Context
}

// ctx is Ctx, or a context that never ends.
func (p *Plugin) ctx() context.Context {
	if p.Ctx == nil {
		return context.Background()
	}
	return p.Ctx
}

// Main runs the CNI command the runtime asked for (CNI_COMMAND and the other variables of the
// CNI spec, the network configuration on standard input) and returns the exit code: 0, or 1
// after the CNI error, as JSON, on stdout. ctx ends the calls to the node agent early.
func Main(ctx context.Context, stdout, stderr io.Writer) int {
	p := New(stdout, stderr)
	p.Ctx = ctx
	e := skel.PluginMainFuncsWithError(p.Funcs(), version.All, About)
	if e == nil {
		return 0
	}
	// What skel.PluginMainFuncs prints (types.Error.Print), on our stdout.
	b, err := json.MarshalIndent(e, "", "    ")
	if err == nil {
		_, err = stdout.Write(b)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sidelane-cni: writing the error %q: %v\n", e.Error(), err)
	}
	return 1
}

// New returns the plugin with its real dependencies, logging to stderr and printing to stdout.
func New(stdout, stderr io.Writer) *Plugin {
	p := &Plugin{
		Stderr:        stderr,
		Stdout:        stdout,
		NewBackend:    capture.New,
		InNetns:       capture.InNetns,
		Agent:         cnirpc.Call,
		DecideTimeout: DefaultDecideTimeout,
		ReportTimeout: time.Second,
		StatusTimeout: time.Second,
		Now:           time.Now,
	}
	return p
}

// DefaultDecideTimeout is how long ADD waits for the agent's decision before it fails with
// CNI error 11 (the runtime retries). The agent bounds its own API lookup below it.
const DefaultDecideTimeout = 5 * time.Second

// Funcs returns the plugin's commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Check: p.Check, Del: p.Del, Status: p.Status, GC: p.GC}
}

// PodIdentity is the pod named by CNI_ARGS.
type PodIdentity struct {
	Namespace string
	Name      string
	UID       string
}

// ParsePodIdentity reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from CNI_ARGS
// ("K=V;K=V"); other keys are ignored.
func ParsePodIdentity(cniArgs string) PodIdentity {
	var id PodIdentity
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			id.Namespace = v
		case "K8S_POD_NAME":
			id.Name = v
		case "K8S_POD_UID":
			id.UID = v
		}
	}
	return id
}

func (p *Plugin) logger(level string, cmd string, args *skel.CmdArgs) *slog.Logger {
	lvl := slog.LevelInfo
	switch level {
	case LevelDebug:
		lvl = slog.LevelDebug
	case LevelWarn:
		lvl = slog.LevelWarn
	case LevelError:
		lvl = slog.LevelError
	}
	h := slog.NewTextHandler(p.Stderr, &slog.HandlerOptions{Level: lvl})
	return slog.New(h).With("plugin", "sidelane-cni", "cmd", cmd, "containerID", args.ContainerID)
}

func configError(err error) error {
	return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
}

// chained parses the configuration and refuses to run without prevResult.
func chained(args *skel.CmdArgs) (*Config, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, configError(err)
	}
	if conf.PrevResult == nil {
		return nil, configError(errors.New("sidelane-cni config: field \"prevResult\": missing: sidelane-cni is a chained plugin and must follow an interface plugin in the conflist"))
	}
	return conf, nil
}

// Add is CNI ADD.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	start := p.Now()
	conf, err := chained(args)
	if err != nil {
		return err
	}
	log := p.logger(conf.LogLevel, "ADD", args)
	id := ParsePodIdentity(args.Args)
	podIPs := sandboxIPs(conf.PrevResult, args.IfName)
	report := agentapi.Report{
		Event: agentapi.EventAdd, Namespace: id.Namespace, Name: id.Name, UID: id.UID,
		ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, PodIPs: podIPs,
	}
	pass := func(state, reason string) error {
		log.Info("pass through", "pod", id.Namespace+"/"+id.Name, "reason", reason)
		if id.Name != "" {
			report.State, report.Reason = state, reason
			p.sendReport(conf, log, report, start)
		}
		return p.printResult(conf)
	}
	fail := func(err error) error {
		log.Error("ADD failed", "pod", id.Namespace+"/"+id.Name, "error", err)
		report.State, report.Reason = agentapi.StateFailed, err.Error()
		p.sendReport(conf, log, report, start)
		return err
	}
	tryAgain := func(format string, a ...any) error {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("sidelane-cni: pod %s/%s: ", id.Namespace, id.Name)+fmt.Sprintf(format, a...), "")
	}

	if id.Namespace == "" || id.Name == "" {
		return pass("", "no pod identity in CNI_ARGS")
	}
	if conf.Excluded(id.Namespace) {
		return pass(agentapi.StateSkipped, "namespace "+id.Namespace+" is excluded")
	}
	decideStart := p.Now()
	resp, err := p.Agent(p.ctx(), conf.AgentSocket, cnirpc.Request{
		Op:       cnirpc.OpDecide,
		Decide:   &cnirpc.DecideRequest{Namespace: id.Namespace, Name: id.Name, UID: id.UID, SandboxIPs: podIPs},
		Warnings: conf.Warnings(),
	}, p.DecideTimeout)
	decideTook := p.Now().Sub(decideStart)
	if err != nil {
		unreachable := errors.Is(err, cnirpc.ErrUnreachable)
		err = tryAgain("cannot decide whether to capture: %v", err)
		if unreachable {
			// Nobody to report to: fail fast and leave the retry to the runtime.
			log.Error("ADD failed", "pod", id.Namespace+"/"+id.Name, "error", err)
			return err
		}
		return fail(err)
	}
	dec := resp.Decision
	if dec == nil {
		return fail(tryAgain("the node agent at %s answered without a decision", conf.AgentSocket))
	}
	if id.UID != "" && dec.UID != "" && dec.UID != id.UID {
		return fail(tryAgain("the node agent knows uid %s, the runtime asks for uid %s (pod replaced)", dec.UID, id.UID))
	}
	if !dec.Capture {
		return pass(agentapi.StateSkipped, dec.Reason)
	}
	if dec.Invalid != "" {
		return fail(fmt.Errorf("sidelane-cni: pod %s/%s: %s", id.Namespace, id.Name, dec.Invalid))
	}
	settings, fams, err := captureSpec(dec)
	if err != nil {
		return fail(tryAgain("the node agent at %s answered: %v", conf.AgentSocket, err))
	}
	v6 := slices.Contains(fams, rules.IPv6)
	report.Settings = &settings
	backend, err := p.NewBackend(conf.Backend)
	if err != nil {
		return fail(fmt.Errorf("sidelane-cni: pod %s/%s: %w", id.Namespace, id.Name, err))
	}
	report.Backend = backend.Name()
	rs := rules.Build(settings, fams...)
	uid := dec.UID
	if uid == "" {
		uid = id.UID
	}
	st := State{
		ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		Namespace: id.Namespace, Name: id.Name, UID: uid, Backend: backend.Name(),
		IPv6: v6, Settings: settings, Time: p.Now().UTC(),
	}
	applyStart := p.Now()
	if err := p.apply(conf, st, backend, rs, log); err != nil {
		return fail(fmt.Errorf("sidelane-cni: pod %s/%s: %w", id.Namespace, id.Name, err))
	}
	report.State, report.Reason = agentapi.StateCaptured, dec.Reason
	report.Rules = backend.Expected(rs)
	log.Info("captured", "pod", id.Namespace+"/"+id.Name, "backend", backend.Name(), "ipv6", v6, "rules", len(report.Rules),
		"decide", decideTook, "cacheMiss", dec.CacheMiss, "apply", p.Now().Sub(applyStart), "total", p.Now().Sub(start))
	p.sendReport(conf, log, report, start)
	return p.printResult(conf)
}

// captureSpec returns the redirect settings and IP families of a decision to capture.
func captureSpec(dec *cnirpc.Decision) (redirect.Settings, []rules.Family, error) {
	if dec.Settings == nil {
		return redirect.Settings{}, nil, errors.New("capture without redirect settings")
	}
	fams, err := parseFamilies(dec.Families)
	if err != nil {
		return redirect.Settings{}, nil, err
	}
	return *dec.Settings, fams, nil
}

// apply records the attachment st and installs rs in its network namespace with backend. The
// state is written first so that a DEL after a failed or interrupted ADD still knows which
// backend to clean up with; when the apply fails, what it may have left is removed and the
// state goes too (nothing can be left in a path that is not a network namespace: missing, a
// regular file, a directory).
func (p *Plugin) apply(conf *Config, st State, backend capture.Backend, rs rules.Ruleset, log *slog.Logger) error {
	if err := saveState(conf.StateDir, st); err != nil {
		return err
	}
	err := p.InNetns(st.Netns, func() error { return backend.Apply(rs) })
	if err == nil {
		return nil
	}
	var cleanErr error
	if netnsExists(st.Netns) {
		cleanErr = p.InNetns(st.Netns, backend.Remove)
	}
	if cleanErr == nil {
		cleanErr = deleteState(conf.StateDir, st.ContainerID, st.IfName)
	}
	if cleanErr != nil {
		log.Error("cleanup after failed apply", "error", cleanErr)
	}
	return fmt.Errorf("apply %s rules: %w", backend.Name(), err)
}

// Check is CNI CHECK: the rules of a captured attachment must be exactly the expected ones.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	start := p.Now()
	conf, err := chained(args)
	if err != nil {
		return err
	}
	log := p.logger(conf.LogLevel, "CHECK", args)
	st, ok, err := loadState(conf.StateDir, args.ContainerID, args.IfName)
	if err != nil {
		return fmt.Errorf("sidelane-cni CHECK: %w", err)
	}
	if !ok {
		log.Debug("attachment not captured by sidelane-cni: nothing to check")
		return nil
	}
	netns := args.Netns
	if netns == "" {
		netns = st.Netns
	}
	backend, err := p.NewBackend(st.Backend)
	if err != nil {
		return fmt.Errorf("sidelane-cni CHECK: pod %s/%s: %w", st.Namespace, st.Name, err)
	}
	rs := rules.Build(st.Settings, families(st.IPv6)...)
	expected := backend.Expected(rs)
	var live []string
	if err := p.InNetns(netns, func() error {
		var err error
		live, err = backend.Live()
		return err
	}); err != nil {
		return fmt.Errorf("sidelane-cni CHECK: pod %s/%s: read %s rules: %w", st.Namespace, st.Name, backend.Name(), err)
	}
	podIPs := sandboxIPs(conf.PrevResult, args.IfName)
	report := agentapi.Report{
		Event: agentapi.EventCheck, Namespace: st.Namespace, Name: st.Name, UID: st.UID,
		ContainerID: args.ContainerID, Netns: netns, IfName: args.IfName, PodIPs: podIPs,
		State: agentapi.StateCaptured, Backend: backend.Name(), Settings: &st.Settings, Rules: live,
	}
	diff := rules.Diff(expected, live)
	if len(diff) == 0 {
		log.Debug("rules in place", "pod", st.Namespace+"/"+st.Name)
		p.sendReport(conf, log, report, start)
		return nil
	}
	report.State = agentapi.StateDrifted
	if len(live) == 0 {
		report.State = agentapi.StateMissing
	}
	err = fmt.Errorf("sidelane-cni CHECK: pod %s/%s: %s rules in netns %s differ from the expected ones (- expected but absent, + present but unexpected):\n%s",
		st.Namespace, st.Name, backend.Name(), netns, strings.Join(diff, "\n"))
	report.Reason = err.Error()
	log.Error("CHECK failed", "pod", st.Namespace+"/"+st.Name, "diff", len(diff))
	p.sendReport(conf, log, report, start)
	return err
}

// Del is CNI DEL: remove our rules when the netns still exists, forget the attachment. It is
// idempotent and tolerates a missing or empty netns.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	start := p.Now()
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return configError(err)
	}
	log := p.logger(conf.LogLevel, "DEL", args)
	id := ParsePodIdentity(args.Args)
	st, ok, err := loadState(conf.StateDir, args.ContainerID, args.IfName)
	if errors.Is(err, errStateCorrupt) && !netnsExists(args.Netns) {
		// Cut by a power loss (state files are not fsynced): its netns is gone, nothing to remove.
		log.Warn("dropping an unreadable state file of an attachment whose netns is gone", "error", err)
		if err := deleteState(conf.StateDir, args.ContainerID, args.IfName); err != nil {
			return fmt.Errorf("sidelane-cni DEL: %w", err)
		}
		ok, err = false, nil
	}
	if err != nil {
		return fmt.Errorf("sidelane-cni DEL: %w", err)
	}
	if !ok {
		log.Debug("attachment not captured by sidelane-cni: nothing to remove")
		if id.Name != "" && !conf.Excluded(id.Namespace) {
			p.sendReport(conf, log, agentapi.Report{Event: agentapi.EventDel, Namespace: id.Namespace, Name: id.Name,
				UID: id.UID, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
				Reason: "deleted (not captured)"}, start)
		}
		return nil
	}
	netns := args.Netns
	if netns == "" {
		netns = st.Netns
	}
	reason := "deleted: rules removed"
	if err := p.removeIn(netns, st.Backend); err != nil {
		return fmt.Errorf("sidelane-cni DEL: pod %s/%s: %w", st.Namespace, st.Name, err)
	} else if !netnsExists(netns) {
		reason = "deleted: network namespace already gone"
	}
	if err := deleteState(conf.StateDir, args.ContainerID, args.IfName); err != nil {
		return fmt.Errorf("sidelane-cni DEL: %w", err)
	}
	log.Info("removed", "pod", st.Namespace+"/"+st.Name, "reason", reason)
	p.sendReport(conf, log, agentapi.Report{Event: agentapi.EventDel, Namespace: st.Namespace, Name: st.Name,
		UID: st.UID, ContainerID: args.ContainerID, Netns: netns, IfName: args.IfName, Backend: st.Backend,
		Reason: reason}, start)
	return nil
}

// removeIn removes our rules from netns with the named backend; a missing or empty (not a
// namespace) path means there is nothing left to remove.
func (p *Plugin) removeIn(netns, backendName string) error {
	if !netnsExists(netns) {
		return nil
	}
	backend, err := p.NewBackend(backendName)
	if err != nil {
		return err
	}
	if err := p.InNetns(netns, backend.Remove); err != nil {
		return fmt.Errorf("remove %s rules: %w", backend.Name(), err)
	}
	return nil
}

// netnsExists reports whether path is a network namespace that can still be entered.
func netnsExists(path string) bool {
	if path == "" {
		return false
	}
	return ns.IsNSorErr(path) == nil
}

// Status is CNI STATUS (1.1): the plugin is not ready (error 50) while the node agent does not
// answer on its socket, since every injected pod's ADD would fail.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return configError(err)
	}
	if _, err := p.Agent(p.ctx(), conf.AgentSocket, cnirpc.Request{Op: cnirpc.OpPing, Warnings: conf.Warnings()}, p.StatusTimeout); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "sidelane-cni not ready: "+err.Error(), "")
	}
	return nil
}

// GC is CNI GC (1.1): forget (and clean, if their netns still exists) the attachments that are
// not in cni.dev/valid-attachments.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return configError(err)
	}
	log := p.logger(conf.LogLevel, "GC", args)
	valid := map[types.GCAttachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a] = true
	}
	paths, err := listStates(conf.StateDir)
	if err != nil {
		return fmt.Errorf("sidelane-cni GC: %w", err)
	}
	validPaths := map[string]bool{}
	for a := range valid {
		if p, err := stateFile(conf.StateDir, a.ContainerID, a.IfName); err == nil {
			validPaths[p] = true
		}
	}
	var errs []error
	for _, path := range paths {
		st, ok, err := readState(path)
		if errors.Is(err, errStateCorrupt) && !validPaths[path] {
			// Cut by a power loss (state files are not fsynced) and not a valid attachment.
			log.Warn("GC: dropping an unreadable state file of a stale attachment", "error", err)
			if err := removeStatePath(path); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		if valid[types.GCAttachment{ContainerID: st.ContainerID, IfName: st.IfName}] {
			continue
		}
		if err := p.removeIn(st.Netns, st.Backend); err != nil {
			log.Warn("GC: could not remove rules of a stale attachment", "pod", st.Namespace+"/"+st.Name, "netns", st.Netns, "error", err)
		}
		if err := deleteState(conf.StateDir, st.ContainerID, st.IfName); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("GC: dropped stale attachment", "pod", st.Namespace+"/"+st.Name, "containerID", st.ContainerID, "ifName", st.IfName)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sidelane-cni GC: %w", err)
	}
	return nil
}

// printResult prints prevResult back unchanged, in the configuration's version: the same as
// types.PrintResult, to p.Stdout.
func (p *Plugin) printResult(conf *Config) error {
	r, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return fmt.Errorf("sidelane-cni: prevResult as version %s: %w", conf.CNIVersion, err)
	}
	return r.PrintTo(p.Stdout)
}

func (p *Plugin) sendReport(conf *Config, log *slog.Logger, r agentapi.Report, start time.Time) {
	r.Time = p.Now().UTC()
	r.Duration = r.Time.Sub(start)
	if _, err := p.Agent(p.ctx(), conf.AgentSocket, cnirpc.Request{Op: cnirpc.OpReport, Report: &r}, p.ReportTimeout); err != nil {
		log.Warn("node agent not told (best effort)", "error", err)
	}
}

// families returns the IP families of a state's ruleset.
func families(v6 bool) []rules.Family {
	if v6 {
		return []rules.Family{rules.IPv4, rules.IPv6}
	}
	return []rules.Family{rules.IPv4}
}

// parseFamilies reads the families of the agent's decision.
func parseFamilies(names []string) ([]rules.Family, error) {
	if len(names) == 0 {
		return nil, errors.New("no IP families in the decision")
	}
	var out []rules.Family
	for _, n := range names {
		f, err := rules.ParseFamily(n)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// sandboxIPs returns the addresses of prevResult that belong to the sandbox interface ifName,
// as the reference portmap plugin picks them: an address whose interface index names another
// interface, or one outside the sandbox (a host-side veth), is skipped; an address without an
// interface index is kept. These addresses are what rules.FamiliesFor decides on, here and in
// the agent (which is told them in the report).
func sandboxIPs(r types.Result, ifName string) []string {
	if r == nil {
		return nil
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil
	}
	var ips []string
	for _, ip := range res.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(res.Interfaces) && (res.Interfaces[i].Name != ifName || res.Interfaces[i].Sandbox == "") {
				continue
			}
		}
		ips = append(ips, ip.Address.IP.String())
	}
	return ips
}
