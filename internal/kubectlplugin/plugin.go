// Package kubectlplugin is kubectl-sidelane, a kubectl plugin that shows what the Sidelane node
// agents know without the user knowing which node a pod runs on: a pod's rules (expected, live,
// difference), the pods each node's agent has recorded, a cluster-wide check that exits
// non-zero when a captured pod's rules are missing or drifted, and the injector's manual mode.
//
// It finds the agent pod of a node by label in sidelane-system with the user's kubeconfig and
// reaches the agent's TCP API through a port-forward, with the user's own bearer token or a
// short-lived token of the service account sidelane-system/kubectl-sidelane.
package kubectlplugin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/inject"
	"github.com/sidelane/sidelane/internal/inject/manualcmd"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitProblems = 1 // check found pods whose rules are missing or drifted
	ExitUsage    = 2
	ExitError    = 3 // the cluster or an agent could not be asked
)

const usage = `usage: kubectl sidelane <command> [flags]

commands:
  rules POD [-n NAMESPACE]   a pod's redirect rules: settings, expected, live, difference
  pods [--node NODE]         the pods the node agents have recorded (every node by default)
  check                      check every captured pod in the cluster; exit 1 if any pod's
                             rules are missing or drifted
  inject -f FILE             print FILE (YAML, "-" for stdin) with the sidecar injected, as
                             the webhook would (--template FILE, --image IMAGE to override)

flags of every command: -o json (machine-readable output), --kubeconfig, --context
`

// Options are the plugin's dependencies.
type Options struct {
	// NewCluster connects to the cluster of kubeconfig/context.
	NewCluster func(kubeconfig, kubeContext string) (Cluster, error)
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
}

type common struct {
	output, kubeconfig, kubeContext string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.output, "o", "", `output format: "" (human-readable) or json`)
	fs.StringVar(&c.output, "output", "", `output format: "" (human-readable) or json`)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&c.kubeContext, "context", "", "kubeconfig context")
}

type usageError struct{ error }

// parseInterspersed parses flags and positional arguments in any order (kubectl style).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// Main runs the plugin with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, o Options) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(o.Stderr, usage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	fs := flag.NewFlagSet("kubectl sidelane "+args[0], flag.ContinueOnError)
	fs.SetOutput(o.Stderr)
	var c common
	c.register(fs)
	var code int
	var err error
	switch args[0] {
	case "rules":
		ns := fs.String("n", "", "namespace of the pod (default: the kubeconfig's)")
		fs.StringVar(ns, "namespace", "", "namespace of the pod")
		var pos []string
		if pos, err = parseInterspersed(fs, args[1:]); err == nil {
			if len(pos) != 1 {
				err = usageError{fmt.Errorf("want exactly one pod name, got %q", pos)}
			} else {
				code, err = withCluster(ctx, o, c, func(cl Cluster) (int, error) { return rulesCmd(ctx, o, cl, c, *ns, pos[0]) })
			}
		}
	case "pods":
		node := fs.String("node", "", "only this node")
		var pos []string
		if pos, err = parseInterspersed(fs, args[1:]); err == nil {
			if len(pos) != 0 {
				err = usageError{fmt.Errorf("unexpected arguments %q", pos)}
			} else {
				code, err = withCluster(ctx, o, c, func(cl Cluster) (int, error) { return podsCmd(ctx, o, cl, c, *node) })
			}
		}
	case "check":
		var pos []string
		if pos, err = parseInterspersed(fs, args[1:]); err == nil {
			if len(pos) != 0 {
				err = usageError{fmt.Errorf("unexpected arguments %q", pos)}
			} else {
				code, err = withCluster(ctx, o, c, func(cl Cluster) (int, error) { return checkCmd(ctx, o, cl, c) })
			}
		}
	case "inject":
		var m manualcmd.Flags
		m.Register(fs)
		var pos []string
		if pos, err = parseInterspersed(fs, args[1:]); err == nil {
			if len(pos) != 0 || m.File == "" {
				err = usageError{errors.New("want -f FILE")}
			} else {
				code, err = injectCmd(o, m)
			}
		}
	default:
		fmt.Fprintf(o.Stderr, "kubectl sidelane: unknown command %q\n\n%s", args[0], usage)
		return ExitUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(o.Stderr, "kubectl sidelane %s: %v\n", args[0], err)
		var ue usageError
		if errors.As(err, &ue) || strings.Contains(err.Error(), "flag provided but not defined") {
			return ExitUsage
		}
		return ExitError
	}
	return code
}

func withCluster(ctx context.Context, o Options, c common, fn func(Cluster) (int, error)) (int, error) {
	if c.output != "" && c.output != "json" {
		return ExitUsage, usageError{fmt.Errorf("-o %q: want json", c.output)}
	}
	cl, err := o.NewCluster(c.kubeconfig, c.kubeContext)
	if err != nil {
		return ExitError, err
	}
	return fn(cl)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func rulesCmd(ctx context.Context, o Options, cl Cluster, c common, ns, name string) (int, error) {
	if ns == "" {
		ns = cl.Namespace()
	}
	if ns == "" {
		ns = "default"
	}
	node, err := cl.PodNode(ctx, ns, name)
	if err != nil {
		return ExitError, err
	}
	a, err := cl.Agent(ctx, node)
	if err != nil {
		return ExitError, err
	}
	defer a.Close()
	var v agentapi.RulesView
	if err := a.Get(ctx, fmt.Sprintf(agentapi.PathRules, ns, name), &v); err != nil {
		return ExitError, err
	}
	if c.output == "json" {
		return ExitOK, writeJSON(o.Stdout, v)
	}
	return ExitOK, FormatRules(o.Stdout, node, v)
}

// NodePods is one node's pod list, or the error asking its agent.
type NodePods struct {
	Node  string               `json:"node"`
	Items []agentapi.PodRecord `json:"items"`
	Error string               `json:"error,omitempty"`
}

func podsCmd(ctx context.Context, o Options, cl Cluster, c common, node string) (int, error) {
	nodes := []string{node}
	if node == "" {
		var err error
		if nodes, err = agentNodes(ctx, cl); err != nil {
			return ExitError, err
		}
	}
	var out []NodePods
	code := ExitOK
	for _, n := range nodes {
		np := NodePods{Node: n, Items: []agentapi.PodRecord{}}
		var l agentapi.PodList
		if err := agentGet(ctx, cl, n, agentapi.PathPods, &l); err != nil {
			np.Error, code = err.Error(), ExitError
		} else {
			np.Items = l.Items
		}
		out = append(out, np)
	}
	if c.output == "json" {
		return code, writeJSON(o.Stdout, out)
	}
	return code, FormatPods(o.Stdout, out)
}

func agentGet(ctx context.Context, cl Cluster, node, path string, out any) error {
	a, err := cl.Agent(ctx, node)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Get(ctx, path, out)
}

// CheckedPod is one pod's verdict in check.
type CheckedPod struct {
	Node      string   `json:"node"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	State     string   `json:"state"`
	OK        bool     `json:"ok"`
	Diff      []string `json:"diff,omitempty"`
	Problem   string   `json:"problem,omitempty"`
	// Note is information that is not a problem of the rules (a pod the plugin refused).
	Note string `json:"note,omitempty"`
}

// CheckResult is the answer of check.
type CheckResult struct {
	OK     bool              `json:"ok"`
	Pods   []CheckedPod      `json:"pods"`
	Errors map[string]string `json:"errors,omitempty"` // node → why its agent could not be asked
}

// agentNodes is Cluster.AgentNodes, failing when there is no agent at all.
func agentNodes(ctx context.Context, cl Cluster) ([]string, error) {
	nodes, err := cl.AgentNodes(ctx)
	if err == nil && len(nodes) == 0 {
		err = fmt.Errorf("no node agent pods (%s) in namespace %s: is Sidelane installed?", AgentSelector, contract.SystemNamespace)
	}
	return nodes, err
}

func checkCmd(ctx context.Context, o Options, cl Cluster, c common) (int, error) {
	nodes, err := agentNodes(ctx, cl)
	if err != nil {
		return ExitError, err
	}
	res := CheckResult{OK: true, Pods: []CheckedPod{}}
	// Injected pods on nodes without an agent cannot have been captured or checked.
	injected, err := cl.InjectedPods(ctx)
	if err != nil {
		return ExitError, err
	}
	hasAgent := map[string]bool{}
	for _, n := range nodes {
		hasAgent[n] = true
	}
	for _, p := range injected {
		if !hasAgent[p.Node] {
			res.Pods = append(res.Pods, CheckedPod{Node: p.Node, Namespace: p.Namespace, Name: p.Name, State: "unknown",
				Problem: "injected pod on a node without a Sidelane node agent"})
		}
	}
	for _, n := range nodes {
		if err := checkNode(ctx, cl, n, &res); err != nil {
			if res.Errors == nil {
				res.Errors = map[string]string{}
			}
			res.Errors[n] = err.Error()
		}
	}
	code := ExitOK
	for _, p := range res.Pods {
		if !p.OK {
			res.OK, code = false, ExitProblems
		}
	}
	if len(res.Errors) > 0 && code == ExitOK {
		res.OK, code = false, ExitError
	}
	if c.output == "json" {
		return code, writeJSON(o.Stdout, res)
	}
	return code, FormatCheck(o.Stdout, res, len(nodes))
}

func checkNode(ctx context.Context, cl Cluster, node string, res *CheckResult) error {
	a, err := cl.Agent(ctx, node)
	if err != nil {
		return err
	}
	defer a.Close()
	var l agentapi.PodList
	if err := a.Get(ctx, agentapi.PathPods, &l); err != nil {
		return err
	}
	for _, p := range l.Items {
		cp := CheckedPod{Node: node, Namespace: p.Namespace, Name: p.Name, State: p.State}
		switch p.State {
		case agentapi.StateSkipped:
			continue
		case agentapi.StateFailed:
			// Not captured (the plugin refused it, e.g. a bad annotation, and the runtime
			// retries it): not a problem of rules in place, but worth seeing.
			cp.OK, cp.Note = true, "not captured, the plugin failed it: "+p.Reason
		default:
			var v agentapi.RulesView
			if err := a.Get(ctx, fmt.Sprintf(agentapi.PathRules, p.Namespace, p.Name), &v); err != nil {
				cp.Problem = err.Error()
				break
			}
			cp.Diff = v.Diff
			switch {
			case v.LiveErr != "":
				cp.Problem = v.LiveErr
			case !v.InSync:
				cp.Problem = "live rules differ from the expected ones"
			case p.State == agentapi.StateMissing || p.State == agentapi.StateDrifted:
				cp.Problem = "the agent records it as " + p.State + ": " + p.Reason
			default:
				cp.OK = true
			}
		}
		res.Pods = append(res.Pods, cp)
	}
	return nil
}

// injectCmd is the injector's manual mode (package manualcmd, the same as `sidelane-injector
// inject`): YAML in, injected YAML out; nothing is written when a document is malformed or
// refused.
func injectCmd(o Options, m manualcmd.Flags) (int, error) {
	if err := m.Run(inject.DefaultTemplate(), o.Stdin, o.Stdout); err != nil {
		return ExitError, fmt.Errorf("inject %s: %w", m.File, err)
	}
	return ExitOK, nil
}
