package inject

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/selection"
)

// Reasons a pod is not injected (also the suffix of the injector's "skipped-<reason>" metric).
const (
	SkipExcludedNamespace   = "excluded-namespace"
	SkipAlreadyInjected     = "already-injected"
	SkipHostNetwork         = "host-network"
	SkipOptedOut            = "opted-out"
	SkipNamespaceNotOptedIn = "namespace-not-enabled"
)

// Decision is whether a pod is injected and, if not, why.
type Decision struct {
	Inject bool
	// Reason is one of the Skip* constants when Inject is false, "" otherwise.
	Reason string
}

// Select applies docs/design.md's pod selection to a pod of namespace ns: excluded namespaces,
// pods already injected and hostNetwork pods are never injected; a pod label or annotation
// sidelane.io/inject "false" opts out (it wins over "true"), "true" opts in; otherwise the
// namespace label sidelane.io/inject=enabled decides. nsLabels is called only in that last
// case, so that a caller that fetches labels from the API server does so only when needed.
func Select(pod *corev1.Pod, ns string, exclude []string, nsLabels func() (map[string]string, error)) (Decision, error) {
	if slices.Contains(exclude, ns) {
		return Decision{Reason: SkipExcludedNamespace}, nil
	}
	if AlreadyInjected(pod) {
		return Decision{Reason: SkipAlreadyInjected}, nil
	}
	if pod.Spec.HostNetwork {
		return Decision{Reason: SkipHostNetwork}, nil
	}
	switch podOptIn(pod) {
	case "false":
		return Decision{Reason: SkipOptedOut}, nil
	case "true":
		return Decision{Inject: true}, nil
	}
	labels, err := nsLabels()
	if err != nil {
		return Decision{}, err
	}
	if labels[contract.InjectLabel] == contract.InjectEnabled {
		return Decision{Inject: true}, nil
	}
	return Decision{Reason: SkipNamespaceNotOptedIn}, nil
}

// podOptIn is the pod's own opt-in ("true"), opt-out ("false") or neither ("").
func podOptIn(pod *corev1.Pod) string { return selection.OptIn(pod.Labels, pod.Annotations) }

// AlreadyInjected reports whether the pod carries the status annotation (the injector's mark).
func AlreadyInjected(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[contract.StatusAnnotation]
	return ok
}
