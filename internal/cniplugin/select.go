package cniplugin

import (
	"slices"

	"github.com/sidelane/sidelane/internal/contract"
)

// PodFacts are the plain values the capture decision depends on.
type PodFacts struct {
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
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

// Decide is the plugin's pod selection (DESIGN.md "Pod selection"): a pod is captured when its
// namespace is not excluded, it has not opted out (label or annotation sidelane.io/inject:
// "false"), it carries the sidelane.io/status annotation and it has a container named
// sidelane-proxy (regular, or a native sidecar init container).
func Decide(p PodFacts, excluded func(namespace string) bool) Decision {
	switch {
	case excluded(p.Namespace):
		return Decision{Reason: "namespace " + p.Namespace + " is excluded"}
	case p.Labels[contract.InjectLabel] == "false":
		return Decision{Reason: "opted out by label " + contract.InjectLabel + "=false"}
	case p.Annotations[contract.InjectLabel] == "false":
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
