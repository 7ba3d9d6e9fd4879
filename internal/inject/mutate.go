package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

// Port names of the injected container (at most 15 characters, IANA_SVC_NAME).
const (
	PromPortName   = "sidelane-prom"
	HealthPortName = "sidelane-health"
)

// PatchOp is one RFC 6902 JSON Patch operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// RefusedError is a pod that must not be admitted (with or without injection). Its message
// is what the user sees at `kubectl apply` time.
type RefusedError struct {
	Msg string
	Err error // the underlying error, if any (a *redirect.Error for a bad annotation)
}

func (e *RefusedError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *RefusedError) Unwrap() error { return e.Err }

// IsRefused reports whether err is a refusal (as opposed to an internal error).
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// Patch returns the JSON Patch that injects the proxy into pod. It is a pure function of the
// pod and the template; it does not check selection (see Select). It refuses a pod whose
// redirect annotations are malformed or whose application containers would run as the
// proxy's uid or gid (their traffic would bypass the capture), and a pod that already has a
// container named sidelane-proxy without the injector's status annotation.
func Patch(pod *corev1.Pod, tpl Template) ([]PatchOp, error) {
	if err := tpl.Validate(); err != nil {
		return nil, err
	}
	settings, err := redirect.FromAnnotations(pod.Annotations)
	if err != nil {
		return nil, &RefusedError{Msg: "sidelane: malformed redirect annotation", Err: err}
	}
	if err := checkPod(pod, settings); err != nil {
		return nil, err
	}
	if v, ok := pod.Annotations[contract.AnnotationProxyConcurrency]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > contract.MaxProxyConcurrency {
			return nil, &RefusedError{Msg: fmt.Sprintf("sidelane: annotation %s=%q: want an integer from 1 to %d",
				contract.AnnotationProxyConcurrency, v, contract.MaxProxyConcurrency)}
		}
		tpl.Concurrency = n
	}

	var ops []PatchOp
	// Annotations: the status, and every redirect annotation the user did not set.
	status := contract.Status{Version: tpl.InjectorVersion, NativeSidecar: tpl.NativeSidecar}
	if tpl.NativeSidecar {
		status.Containers = []string{} // "containers": [] rather than null
		status.InitContainers = []string{contract.ProxyContainerName}
	} else {
		status.Containers = []string{contract.ProxyContainerName}
	}
	statusJSON, err := json.Marshal(status)
	if err != nil {
		return nil, fmt.Errorf("encoding the status annotation: %w", err)
	}
	add := redirect.DefaultAnnotations()
	for k := range pod.Annotations {
		delete(add, k)
	}
	add[contract.StatusAnnotation] = string(statusJSON)
	// An empty map or list is absent from the object the API server patches (omitempty), and
	// "add" of a path that does exist replaces it: adding the whole value is right either way.
	switch {
	case reflect.DeepEqual(pod.ObjectMeta, metav1.ObjectMeta{}): // metadata may be absent
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata", Value: map[string]any{"annotations": add}})
	case len(pod.Annotations) == 0:
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: add})
	default:
		for _, k := range slices.Sorted(maps.Keys(add)) {
			ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(k), Value: add[k]})
		}
	}

	c := ProxyContainer(tpl, settings)
	switch {
	case tpl.NativeSidecar && len(pod.Spec.InitContainers) == 0:
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers", Value: []corev1.Container{c}})
	case tpl.NativeSidecar:
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers/0", Value: c})
	default:
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/containers/-", Value: c})
	}
	return ops, nil
}

// PatchJSON is Patch encoded as JSON.
func PatchJSON(pod *corev1.Pod, tpl Template) ([]byte, error) {
	ops, err := Patch(pod, tpl)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch: %w", err)
	}
	return b, nil
}

// checkPod refuses pods the proxy cannot work in.
func checkPod(pod *corev1.Pod, s redirect.Settings) error {
	if len(pod.Spec.Containers) == 0 {
		return &RefusedError{Msg: "sidelane: the pod has no containers"}
	}
	if s.ProxyUID == 0 {
		return &RefusedError{Msg: fmt.Sprintf("sidelane: annotation %s is 0: the proxy does not run as root", contract.AnnotationProxyUID)}
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == contract.ProxyContainerName {
			return &RefusedError{Msg: fmt.Sprintf("sidelane: the pod already has a container named %s but no %s annotation; the name is reserved for the injected proxy",
				contract.ProxyContainerName, contract.StatusAnnotation)}
		}
	}
	// Application containers must not run as the proxy's uid or gid: the redirect rules let
	// that traffic through uncaptured. Init containers (other than native sidecars) run before
	// the proxy exists, so running them as the proxy's uid is the usual way to let them reach
	// the network, and is allowed.
	var podUID, podGID *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		podUID, podGID = psc.RunAsUser, psc.RunAsGroup
	}
	check := func(kind string, c corev1.Container) error {
		uid, gid := podUID, podGID
		uidFrom, gidFrom := "pod securityContext", "pod securityContext"
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				uid, uidFrom = sc.RunAsUser, "its securityContext"
			}
			if sc.RunAsGroup != nil {
				gid, gidFrom = sc.RunAsGroup, "its securityContext"
			}
		}
		if uid != nil && *uid == int64(s.ProxyUID) {
			return &RefusedError{Msg: fmt.Sprintf("sidelane: %s %q would run as uid %d (runAsUser from %s), the proxy's uid: its traffic would bypass the capture; use another uid or set %s",
				kind, c.Name, *uid, uidFrom, contract.AnnotationProxyUID)}
		}
		if gid != nil && *gid == int64(s.ProxyGID) {
			return &RefusedError{Msg: fmt.Sprintf("sidelane: %s %q would run as gid %d (runAsGroup from %s), the proxy's gid: its traffic would bypass the capture; use another gid or set %s",
				kind, c.Name, *gid, gidFrom, contract.AnnotationProxyGID)}
		}
		return nil
	}
	for _, c := range pod.Spec.Containers {
		if err := check("container", c); err != nil {
			return err
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			if err := check("sidecar container", c); err != nil {
				return err
			}
		}
	}
	return nil
}

// ProxyContainer is the injected sidelane-proxy container for a pod with redirect settings s:
// it runs as the settings' proxy uid/gid, listens on their capture ports, and satisfies the
// PodSecurity "restricted" profile on its own (non-root, no privilege escalation, every
// capability dropped, RuntimeDefault seccomp, read-only root filesystem).
func ProxyContainer(tpl Template, s redirect.Settings) corev1.Container {
	uid, gid := int64(s.ProxyUID), int64(s.ProxyGID)
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_IP", "status.podIP"),
		{Name: "SIDELANE_PROXY_INBOUND_PORT", Value: strconv.Itoa(int(s.InboundCapturePort))},
		{Name: "SIDELANE_PROXY_OUTBOUND_PORT", Value: strconv.Itoa(int(s.OutboundCapturePort))},
	}
	if tpl.LogLevel != "" {
		env = append(env, corev1.EnvVar{Name: "SIDELANE_PROXY_LOG_LEVEL", Value: tpl.LogLevel})
	}
	if tpl.Concurrency > 0 {
		env = append(env, corev1.EnvVar{Name: "SIDELANE_PROXY_CONCURRENCY", Value: strconv.Itoa(tpl.Concurrency)})
	}
	ready := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: contract.HealthPath, Port: intstr.FromInt32(contract.HealthPort), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    2,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
		FailureThreshold: 3,
	}
	c := corev1.Container{
		Name:            contract.ProxyContainerName,
		Image:           tpl.Image,
		ImagePullPolicy: tpl.ImagePullPolicy,
		Ports: []corev1.ContainerPort{
			{Name: PromPortName, ContainerPort: contract.PrometheusPort, Protocol: corev1.ProtocolTCP},
			{Name: HealthPortName, ContainerPort: contract.HealthPort, Protocol: corev1.ProtocolTCP},
		},
		Env:            env,
		Resources:      *tpl.Resources.DeepCopy(),
		ReadinessProbe: ready,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &gid,
			RunAsNonRoot:             ptr(true),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if tpl.NativeSidecar {
		// The kubelet starts the next container once the sidecar's startup probe passes: the
		// application starts with its proxy ready.
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		startup := *ready
		startup.PeriodSeconds, startup.FailureThreshold = 1, 120
		c.StartupProbe = &startup
	}
	return c
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

// escapePointer escapes one RFC 6901 reference token.
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func ptr[T any](v T) *T { return &v }
