package selection

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/sidelane/sidelane/internal/contract"
)

func TestDecide(t *testing.T) {
	status := map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"],"version":"v1"}`}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	excluded := func(ns string) bool { return slices.Contains([]string{"kube-system", "sidelane-system"}, ns) }
	tests := []struct {
		name    string
		pod     PodFacts
		capture bool
		reason  string
	}{
		{"injected", PodFacts{Namespace: "app", Annotations: status, Containers: []string{"app", "sidelane-proxy"}}, true, "injected"},
		{"native sidecar", PodFacts{Namespace: "app", Annotations: status, Containers: []string{"app"}, NativeSidecars: []string{"sidelane-proxy"}}, true, "injected"},
		{"opt-in label does not replace injection", PodFacts{Namespace: "app", Labels: map[string]string{contract.InjectLabel: "true"}, Containers: []string{"app"}}, false, "no sidelane.io/status"},
		{"no status annotation", PodFacts{Namespace: "app", Containers: []string{"app", "sidelane-proxy"}}, false, "no sidelane.io/status"},
		{"status but no proxy container", PodFacts{Namespace: "app", Annotations: status, Containers: []string{"app"}}, false, "no sidelane-proxy container"},
		{"proxy only as a plain init container", PodFacts{Namespace: "app", Annotations: status, Containers: []string{"app"}, NativeSidecars: nil}, false, "no sidelane-proxy container"},
		{"opted out by label", PodFacts{Namespace: "app", Labels: map[string]string{contract.InjectLabel: "false"}, Annotations: status, Containers: []string{"sidelane-proxy"}}, false, "label"},
		{"opted out by annotation", PodFacts{Namespace: "app", Annotations: with(status, contract.InjectLabel, "false"), Containers: []string{"sidelane-proxy"}}, false, "annotation"},
		{"opt-in annotation true is fine", PodFacts{Namespace: "app", Annotations: with(status, contract.InjectLabel, "true"), Containers: []string{"sidelane-proxy"}}, true, "injected"},
		{"excluded namespace", PodFacts{Namespace: "kube-system", Annotations: status, Containers: []string{"sidelane-proxy"}}, false, "excluded"},
		{"own namespace", PodFacts{Namespace: "sidelane-system", Annotations: status, Containers: []string{"sidelane-proxy"}}, false, "excluded"},
		{"nil everything", PodFacts{}, false, "no sidelane.io/status"},
		{"host network", PodFacts{Namespace: "app", HostNetwork: true, Annotations: status, Containers: []string{"sidelane-proxy"}}, false, "host network"},
		{"opt-out is case-insensitive", PodFacts{Namespace: "app", Labels: map[string]string{contract.InjectLabel: " False"}, Annotations: status, Containers: []string{"sidelane-proxy"}}, false, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.pod, excluded)
			if d.Capture != tt.capture {
				t.Errorf("Capture = %v, want %v (reason %q)", d.Capture, tt.capture, d.Reason)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestOptIn(t *testing.T) {
	m := func(v string) map[string]string { return map[string]string{contract.InjectLabel: v} }
	tests := []struct {
		labels, annotations map[string]string
		want                string
	}{
		{nil, nil, ""},
		{m("true"), nil, "true"},
		{nil, m("TRUE"), "true"},
		{m("false"), m("true"), "false"},
		{m("true"), m(" false "), "false"},
		{m("yes"), m("enabled"), ""},
	}
	for _, tt := range tests {
		if got := OptIn(tt.labels, tt.annotations); got != tt.want {
			t.Errorf("OptIn(%v, %v) = %q, want %q", tt.labels, tt.annotations, got, tt.want)
		}
	}
}

// TestCheckNamespaceName agrees with Kubernetes' own rule for namespace names.
func TestCheckNamespaceName(t *testing.T) {
	for _, ns := range []string{
		"default", "kube-system", "a", "0", "a-b-c", "a1", strings.Repeat("a", 63),
		"", "-a", "a-", "A", "a_b", "a.b", "a b", "ä", "a/b", strings.Repeat("a", 64), "-", "a\x00",
	} {
		want := len(validation.IsDNS1123Label(ns)) == 0
		if err := CheckNamespaceName(ns); (err == nil) != want {
			t.Errorf("CheckNamespaceName(%q) = %v, Kubernetes says valid = %v", ns, err, want)
		}
	}
}
