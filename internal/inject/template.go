package inject

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/sidelane/sidelane/internal/contract"
)

// DefaultImage is the proxy image injected when neither the template file nor the caller
// names one.
const DefaultImage = "sidelane/proxy:dev"

// LogLevels are the accepted values of Template.LogLevel.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Template is what the injector adds to a pod besides the fixed parts of docs/design.md (container
// name, ports, uid/gid, security context). It is read from a YAML or JSON file, for example:
//
//	image: registry.example/sidelane/proxy:v0.1.0
//	imagePullPolicy: IfNotPresent
//	nativeSidecar: true
//	logLevel: info
//	concurrency: 2
//	resources:
//	  requests: {cpu: 20m, memory: 64Mi}
//	  limits: {memory: 256Mi}
//
// The proxy's ports are not part of the template: they are a contract with the CNI plugin
// (docs/design.md "Ports of the proxy"); the capture ports and uid/gid follow the pod's redirect
// annotations.
type Template struct {
	Image           string                      `json:"image,omitempty"`
	ImagePullPolicy corev1.PullPolicy           `json:"imagePullPolicy,omitempty"`
	Resources       corev1.ResourceRequirements `json:"resources,omitempty"`
	// NativeSidecar injects the proxy as the first init container with restartPolicy Always
	// (Kubernetes ≥ 1.29), so that it is up before the application's containers start;
	// otherwise it is appended to the regular containers.
	NativeSidecar bool `json:"nativeSidecar"`
	// LogLevel is passed to the proxy as SIDELANE_PROXY_LOG_LEVEL.
	LogLevel string `json:"logLevel,omitempty"`
	// Concurrency is passed to the proxy as SIDELANE_PROXY_CONCURRENCY (0: the proxy's own
	// default, 2). A pod's proxy.sidelane.io/concurrency annotation overrides it.
	Concurrency int `json:"concurrency,omitempty"`

	// InjectorVersion is written into the status annotation. It is set by the program, not
	// by the template file.
	InjectorVersion string `json:"-"`
}

// DefaultTemplate returns the template used when no file is given.
func DefaultTemplate() Template {
	return Template{
		Image:           DefaultImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("40Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("256Mi"),
			},
		},
		NativeSidecar:   true,
		LogLevel:        "info",
		InjectorVersion: "dev",
	}
}

// ParseTemplate reads a template file's contents (YAML or JSON) over base: the fields the file
// sets replace base's, resource lists are merged key by key. Unknown fields are errors, and so
// are bad values; an empty file (or one with only comments) yields base.
func ParseTemplate(data []byte, base Template) (Template, error) {
	t := base
	t.Resources = *base.Resources.DeepCopy()
	if len(bytes.TrimSpace(data)) > 0 {
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			return Template{}, fmt.Errorf("template: %w", err)
		}
		if string(bytes.TrimSpace(js)) != "null" {
			if err := yaml.UnmarshalStrict(js, &t); err != nil {
				return Template{}, fmt.Errorf("template: %w", err)
			}
		}
	}
	if err := t.Validate(); err != nil {
		return Template{}, err
	}
	return t, nil
}

// LoadTemplateFile reads and parses a template file over base (see ParseTemplate).
func LoadTemplateFile(path string, base Template) (Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Template{}, fmt.Errorf("template: %w", err)
	}
	t, err := ParseTemplate(data, base)
	if err != nil {
		return Template{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Validate names the first bad field of t.
func (t Template) Validate() error {
	if t.Image == "" {
		return fmt.Errorf("template: image is empty")
	}
	switch t.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("template: imagePullPolicy %q is not Always, IfNotPresent or Never", t.ImagePullPolicy)
	}
	if t.LogLevel != "" && !slices.Contains(LogLevels, t.LogLevel) {
		return fmt.Errorf("template: logLevel %q is not one of %v", t.LogLevel, LogLevels)
	}
	if t.Concurrency < 0 || t.Concurrency > contract.MaxProxyConcurrency {
		return fmt.Errorf("template: concurrency %d is not between 0 and %d", t.Concurrency, contract.MaxProxyConcurrency)
	}
	for _, rl := range []struct {
		name string
		list corev1.ResourceList
	}{{"requests", t.Resources.Requests}, {"limits", t.Resources.Limits}} {
		for name, q := range rl.list {
			if name != corev1.ResourceCPU && name != corev1.ResourceMemory && name != corev1.ResourceEphemeralStorage {
				return fmt.Errorf("template: resources.%s: unsupported resource %q (cpu, memory, ephemeral-storage)", rl.name, name)
			}
			if q.Sign() < 0 {
				return fmt.Errorf("template: resources.%s.%s: negative quantity %s", rl.name, name, q.String())
			}
		}
	}
	for name, req := range t.Resources.Requests {
		if lim, ok := t.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Errorf("template: resources.requests.%s %s exceeds resources.limits.%s %s", name, req.String(), name, lim.String())
		}
	}
	return nil
}
