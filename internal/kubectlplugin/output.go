package kubectlplugin

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/redirect"
)

// FormatRules writes a RulesView for people.
func FormatRules(w io.Writer, node string, v agentapi.RulesView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := v.Pod
	sync := "yes"
	if !v.InSync {
		sync = "NO"
	}
	fmt.Fprintf(tw, "Pod:\t%s/%s\n", p.Namespace, p.Name)
	fmt.Fprintf(tw, "Node:\t%s\n", node)
	fmt.Fprintf(tw, "State:\t%s\n", p.State)
	if p.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", firstLine(p.Reason))
	}
	fmt.Fprintf(tw, "Backend:\t%s\n", v.Backend)
	fmt.Fprintf(tw, "Netns:\t%s\n", orDash(p.Netns))
	fmt.Fprintf(tw, "Last applied:\t%s\n", when(p.LastApplied))
	if v.Settings != nil {
		fmt.Fprintf(tw, "Settings:\t%s\n", Settings(*v.Settings))
	}
	fmt.Fprintf(tw, "In sync:\t%s\n", sync)
	if v.LiveErr != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", v.LiveErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	section := func(title string, lines []string) {
		fmt.Fprintf(w, "\n%s (%d):\n", title, len(lines))
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	section("Expected rules", v.Expected)
	section("Live rules", v.Live)
	if len(v.Diff) == 0 {
		fmt.Fprintln(w, "\nDifference: none")
		return nil
	}
	section("Difference (- expected but absent, + present but unexpected)", v.Diff)
	return nil
}

// Settings is a one-line summary of redirect settings.
func Settings(s redirect.Settings) string {
	in := "none"
	if s.InboundAll {
		in = "all ports"
	} else if len(s.InboundPorts) > 0 {
		in = "ports " + ports(s.InboundPorts)
	}
	out := "none"
	if s.OutboundAll {
		out = "all destinations"
	} else if len(s.OutboundCIDRs) > 0 {
		out = prefixes(s.OutboundCIDRs)
	}
	b := fmt.Sprintf("inbound %s → :%d", in, s.InboundCapturePort)
	if len(s.ExcludeInboundPorts) > 0 {
		b += " (except " + ports(s.ExcludeInboundPorts) + ")"
	}
	b += fmt.Sprintf("; outbound %s → :%d", out, s.OutboundCapturePort)
	var ex []string
	if len(s.ExcludeOutboundCIDRs) > 0 {
		ex = append(ex, prefixes(s.ExcludeOutboundCIDRs))
	}
	if len(s.ExcludeOutboundPorts) > 0 {
		ex = append(ex, "ports "+ports(s.ExcludeOutboundPorts))
	}
	if len(ex) > 0 {
		b += " (except " + strings.Join(ex, ", ") + ")"
	}
	return b + fmt.Sprintf("; proxy uid/gid %d/%d", s.ProxyUID, s.ProxyGID)
}

func ports(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// FormatPods writes the pod lists of nodes as one table.
func FormatPods(w io.Writer, nodes []NodePods) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tNAME\tSTATE\tBACKEND\tLAST APPLIED\tREASON")
	for _, n := range nodes {
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\terror\t-\t-\t%s\n", n.Node, firstLine(n.Error))
			continue
		}
		for _, p := range n.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, p.Namespace, p.Name, p.State, orDash(p.Backend), when(p.LastApplied), orDash(clip(firstLine(p.Reason), 80)))
		}
	}
	return tw.Flush()
}

// FormatCheck writes check's verdict.
func FormatCheck(w io.Writer, r CheckResult, nodes int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tNAME\tSTATE\tRESULT")
	bad := 0
	for _, p := range r.Pods {
		res := "ok"
		if p.Note != "" {
			res = clip(firstLine(p.Note), 100)
		}
		if !p.OK {
			res = "PROBLEM: " + clip(firstLine(p.Problem), 100)
			bad++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Node, p.Namespace, p.Name, p.State, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Pods {
		if len(p.Diff) > 0 {
			fmt.Fprintf(w, "\n%s/%s on %s (- expected but absent, + present but unexpected):\n", p.Namespace, p.Name, p.Node)
			for _, d := range p.Diff {
				fmt.Fprintf(w, "  %s\n", d)
			}
		}
	}
	for node, e := range r.Errors {
		fmt.Fprintf(w, "\nnode %s: could not ask its agent: %s\n", node, e)
	}
	captured := 0
	for _, p := range r.Pods {
		if p.State != agentapi.StateFailed {
			captured++
		}
	}
	switch {
	case bad > 0:
		fmt.Fprintf(w, "\n%d of %d captured pods on %d nodes have a problem\n", bad, captured, nodes)
	case len(r.Errors) > 0:
		fmt.Fprintf(w, "\n%d captured pods ok, but %d of %d nodes could not be checked\n", captured, len(r.Errors), nodes)
	default:
		fmt.Fprintf(w, "\nall %d captured pods on %d nodes have their rules in place\n", captured, nodes)
	}
	return nil
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func clip(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
