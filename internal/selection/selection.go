// Package selection decides which pods Sidelane captures (docs/design.md "Pod selection"). It is
// the one place the rule lives: the CNI plugin applies it at ADD, the node agent when it
// looks for pods to repair, the injector when it reads a pod's opt-in or opt-out. It takes
// plain values, not Kubernetes objects.
package selection

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sidelane/sidelane/internal/contract"
)

// PodFacts are the plain values the capture decision depends on.
type PodFacts struct {
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
	// HostNetwork pods share the node's network namespace and are never captured.
	HostNetwork bool
	// Containers are the names of the regular containers.
	Containers []string
	// NativeSidecars are the names of the init containers with restartPolicy Always.
	NativeSidecars []string
}

// Decision is whether a pod is captured, and why (for logs and the agent report).
type Decision struct {
	Capture bool
	Reason  string
}

// Decide is the capture decision (docs/design.md "Pod selection"): a pod is captured when its
// namespace is not excluded, it is not on the host network, it has not opted out (label or
// annotation sidelane.io/inject: "false"), it carries the sidelane.io/status annotation and it
// has a container named sidelane-proxy (regular, or a native sidecar init container).
func Decide(p PodFacts, excluded func(namespace string) bool) Decision {
	switch {
	case excluded(p.Namespace):
		return Decision{Reason: "namespace " + p.Namespace + " is excluded"}
	case p.HostNetwork:
		return Decision{Reason: "host network pod"}
	case optValue(p.Labels) == "false":
		return Decision{Reason: "opted out by label " + contract.InjectLabel + "=false"}
	case optValue(p.Annotations) == "false":
		return Decision{Reason: "opted out by annotation " + contract.InjectLabel + "=false"}
	}
	if _, ok := p.Annotations[contract.StatusAnnotation]; !ok {
		return Decision{Reason: "not injected: no " + contract.StatusAnnotation + " annotation"}
	}
	if !slices.Contains(p.Containers, contract.ProxyContainerName) && !slices.Contains(p.NativeSidecars, contract.ProxyContainerName) {
		return Decision{Reason: "not injected: no " + contract.ProxyContainerName + " container"}
	}
	return Decision{Capture: true, Reason: "injected pod"}
}

// OptIn reads a pod's own choice from its sidelane.io/inject label and annotation: "false"
// when either opts it out (opting out wins), "true" when either opts it in, "" otherwise.
// Values are compared case-insensitively; other values are ignored.
func OptIn(labels, annotations map[string]string) string {
	vals := []string{optValue(labels), optValue(annotations)}
	if slices.Contains(vals, "false") {
		return "false"
	}
	if slices.Contains(vals, "true") {
		return "true"
	}
	return ""
}

func optValue(m map[string]string) string {
	return strings.ToLower(strings.TrimSpace(m[contract.InjectLabel]))
}

// CheckNamespaceName says why ns is not a namespace name (an RFC 1123 DNS label: at most 63
// lowercase letters, digits and '-', starting and ending with a letter or digit), or returns
// nil. It is the namespace-name rule of the plugin's exclude_namespaces and of the agent's
// reports, written out so that the CNI plugin does not link Kubernetes' validation package
// (its initialisation is a sizeable part of the plugin's start-up).
func CheckNamespaceName(ns string) error {
	switch {
	case ns == "":
		return errors.New("empty")
	case len(ns) > 63:
		return fmt.Errorf("%d characters, at most 63 allowed", len(ns))
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case c == '-' && i != 0 && i != len(ns)-1:
		case c == '-':
			return errors.New("must start and end with a lowercase letter or digit")
		default:
			return fmt.Errorf("character %q at %d: only lowercase letters, digits and '-' allowed", c, i)
		}
	}
	return nil
}
