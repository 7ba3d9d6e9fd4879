package inject

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
)

func testTemplate(native bool) Template {
	t := DefaultTemplate()
	t.Image = "registry.test/sidelane/proxy:v1"
	t.NativeSidecar = native
	t.InjectorVersion = "test"
	return t
}

// restrictedApp is an application container that passes PodSecurity restricted on its own.
func restrictedApp(name string) corev1.Container {
	return corev1.Container{
		Name:  name,
		Image: "app:1",
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func newPod(mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{restrictedApp("app")}},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

// applyPatch applies Patch's result to pod the way the API server does and returns the pod.
func applyPatch(t *testing.T, pod *corev1.Pod, tpl Template) (*corev1.Pod, []PatchOp) {
	t.Helper()
	ops, err := Patch(pod, tpl)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	raw, _ := json.Marshal(pod)
	pj, _ := json.Marshal(ops)
	p, err := jsonpatch.DecodePatch(pj)
	if err != nil {
		t.Fatalf("decoding the patch: %v\n%s", err, pj)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying the patch: %v\n%s", err, pj)
	}
	var res corev1.Pod
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return &res, ops
}

func proxyOf(t *testing.T, p *corev1.Pod, native bool) corev1.Container {
	t.Helper()
	list := p.Spec.Containers
	if native {
		list = p.Spec.InitContainers
	}
	var found []corev1.Container
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == contract.ProxyContainerName {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s container, found %d", contract.ProxyContainerName, len(found))
	}
	for _, c := range list {
		if c.Name == contract.ProxyContainerName {
			return c
		}
	}
	t.Fatalf("%s is not in the expected list (native=%v)", contract.ProxyContainerName, native)
	return corev1.Container{}
}

func checkSecurity(t *testing.T, c corev1.Container, uid, gid int64) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("proxy has no securityContext")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != uid {
		t.Errorf("runAsUser = %v, want %d", sc.RunAsUser, uid)
	}
	if sc.RunAsGroup == nil || *sc.RunAsGroup != gid {
		t.Errorf("runAsGroup = %v, want %d", sc.RunAsGroup, gid)
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities = %+v, want drop [ALL] and no add", sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

func checkRestricted(t *testing.T, p *corev1.Pod) {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	res := policy.AggregateCheckResults(ev.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &p.ObjectMeta, &p.Spec))
	if !res.Allowed {
		t.Errorf("injected pod violates PodSecurity restricted: %s: %s", res.ForbiddenReason(), res.ForbiddenDetail())
	}
}

func TestPatchInjects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		native bool
		pod    *corev1.Pod
		// annotations expected on the result beyond the defaults and the status
		wantAnn   map[string]string
		wantUID   int64
		wantGID   int64
		wantPorts [2]string // inbound, outbound capture port env values
		firstInit bool      // native: the proxy must be the first init container
		nInit     int
		nCont     int
	}{
		{name: "no annotations, regular container", pod: newPod(nil), wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, nCont: 2},
		{name: "no annotations, native sidecar", native: true, pod: newPod(nil), wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, firstInit: true, nInit: 1, nCont: 1},
		{name: "native sidecar placed before existing init containers", native: true, pod: newPod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{restrictedApp("migrate"), restrictedApp("seed")}
		}), wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, firstInit: true, nInit: 3, nCont: 1},
		{name: "user annotations kept, others defaulted, keys escaped", pod: newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{
				contract.AnnotationInboundPorts:         "8080,9090",
				contract.AnnotationExcludeOutboundCIDRs: "10.0.0.0/8",
				"example.com/a~b":                       "kept",
			}
		}), wantAnn: map[string]string{
			contract.AnnotationInboundPorts:         "8080,9090",
			contract.AnnotationExcludeOutboundCIDRs: "10.0.0.0/8",
			"example.com/a~b":                       "kept",
		}, wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, nCont: 2},
		{name: "empty annotation map", pod: newPod(func(p *corev1.Pod) { p.Annotations = map[string]string{} }),
			wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, nCont: 2},
		{name: "proxy uid/gid and capture ports follow the annotations", native: true, pod: newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{
				contract.AnnotationProxyUID:            "2000",
				contract.AnnotationProxyGID:            "2001",
				contract.AnnotationInboundCapturePort:  "16006",
				contract.AnnotationOutboundCapturePort: "16001",
			}
			// The application may then run as 1337.
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1337)), RunAsGroup: ptr(int64(1337))}
		}), wantAnn: map[string]string{
			contract.AnnotationProxyUID:            "2000",
			contract.AnnotationProxyGID:            "2001",
			contract.AnnotationInboundCapturePort:  "16006",
			contract.AnnotationOutboundCapturePort: "16001",
		}, wantUID: 2000, wantGID: 2001, wantPorts: [2]string{"16006", "16001"}, firstInit: true, nInit: 1, nCont: 1},
		{name: "pod securityContext 1337 overridden by every container", pod: newPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1337)), RunAsGroup: ptr(int64(1337))}
			p.Spec.Containers[0].SecurityContext.RunAsUser = ptr(int64(1000))
			p.Spec.Containers[0].SecurityContext.RunAsGroup = ptr(int64(1000))
		}), wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, nCont: 2},
		{name: "init container as 1337 is allowed", native: true, pod: newPod(func(p *corev1.Pod) {
			c := restrictedApp("fetch")
			c.SecurityContext.RunAsUser = ptr(int64(1337))
			p.Spec.InitContainers = []corev1.Container{c}
		}), wantUID: 1337, wantGID: 1337, wantPorts: [2]string{"15006", "15001"}, firstInit: true, nInit: 2, nCont: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl := testTemplate(tc.native)
			orig := tc.pod.DeepCopy()
			got, ops := applyPatch(t, tc.pod, tpl)
			if len(got.Spec.InitContainers) != tc.nInit || len(got.Spec.Containers) != tc.nCont {
				t.Errorf("init containers %d, containers %d; want %d, %d", len(got.Spec.InitContainers), len(got.Spec.Containers), tc.nInit, tc.nCont)
			}
			c := proxyOf(t, got, tc.native)
			if tc.firstInit && got.Spec.InitContainers[0].Name != contract.ProxyContainerName {
				t.Errorf("first init container is %s, want the proxy", got.Spec.InitContainers[0].Name)
			}
			// The user's containers are unchanged and keep their order.
			for i, oc := range orig.Spec.Containers {
				if got.Spec.Containers[i].Name != oc.Name {
					t.Errorf("container %d is %s, want %s", i, got.Spec.Containers[i].Name, oc.Name)
				}
			}
			checkSecurity(t, c, tc.wantUID, tc.wantGID)
			if c.Image != tpl.Image || c.ImagePullPolicy != tpl.ImagePullPolicy {
				t.Errorf("image %s %s, want %s %s", c.Image, c.ImagePullPolicy, tpl.Image, tpl.ImagePullPolicy)
			}
			if tc.native {
				if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Error("native sidecar without restartPolicy Always")
				}
				if c.StartupProbe == nil || c.StartupProbe.HTTPGet == nil || c.StartupProbe.HTTPGet.Path != contract.HealthPath {
					t.Errorf("native sidecar startup probe = %+v", c.StartupProbe)
				}
			} else if c.RestartPolicy != nil {
				t.Error("regular container with a restartPolicy")
			}
			rp := c.ReadinessProbe
			if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz/ready" || rp.HTTPGet.Port.IntValue() != 15021 {
				t.Errorf("readiness probe = %+v, want GET :15021/healthz/ready", rp)
			}
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports[PromPortName] != 15090 || ports[HealthPortName] != 15021 || len(ports) != 2 {
				t.Errorf("ports = %v", ports)
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"} {
				if e, ok := env[name]; !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
					t.Errorf("env %s = %+v, want the downward API %s", name, e, path)
				}
			}
			if env["SIDELANE_PROXY_INBOUND_PORT"].Value != tc.wantPorts[0] || env["SIDELANE_PROXY_OUTBOUND_PORT"].Value != tc.wantPorts[1] {
				t.Errorf("capture port env = %v %v, want %v", env["SIDELANE_PROXY_INBOUND_PORT"], env["SIDELANE_PROXY_OUTBOUND_PORT"], tc.wantPorts)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources = %+v, want the template's", c.Resources)
			}

			// Annotations: user values kept, every redirect annotation present, status JSON.
			want := redirect.DefaultAnnotations()
			for k, v := range tc.wantAnn {
				want[k] = v
			}
			for k, v := range want {
				if got.Annotations[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
				}
			}
			if _, err := redirect.FromAnnotations(got.Annotations); err != nil {
				t.Errorf("annotations of the injected pod do not parse: %v", err)
			}
			var st contract.Status
			if err := json.Unmarshal([]byte(got.Annotations[contract.StatusAnnotation]), &st); err != nil {
				t.Fatalf("status annotation: %v", err)
			}
			names := st.Containers
			if tc.native {
				names = st.InitContainers
			}
			if st.Version != "test" || st.NativeSidecar != tc.native || len(names) != 1 || names[0] != contract.ProxyContainerName {
				t.Errorf("status = %+v", st)
			}

			// The patch is minimal: only adds, no op touching the user's containers.
			for _, op := range ops {
				if op.Op != "add" {
					t.Errorf("op %s %s: want only adds", op.Op, op.Path)
				}
			}

			// Re-injection is a no-op: the injected pod is recognised.
			d, err := Select(got, "shop", contract.DefaultExcludeNamespaces, enabledNS)
			if err != nil || d.Inject || d.Reason != SkipAlreadyInjected {
				t.Errorf("Select(injected pod) = %+v, %v; want skipped %s", d, err, SkipAlreadyInjected)
			}
			checkRestricted(t, got)
		})
	}
}

func enabledNS() (map[string]string, error) {
	return map[string]string{contract.InjectLabel: contract.InjectEnabled}, nil
}

func TestPatchMinimalOps(t *testing.T) {
	// No annotations at all: one op for the whole map, one for the container.
	ops, err := Patch(newPod(nil), testTemplate(false))
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0].Path != "/metadata/annotations" || ops[1].Path != "/spec/containers/-" {
		t.Fatalf("ops = %+v", ops)
	}
	// Annotations present: one op per missing key, with escaped keys.
	p := newPod(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.AnnotationInboundPorts: "*"} })
	ops, err = Patch(p, testTemplate(true))
	if err != nil {
		t.Fatal(err)
	}
	want := len(redirect.DefaultAnnotations()) - 1 + 1 + 1 // missing defaults + status + container
	if len(ops) != want {
		t.Fatalf("%d ops, want %d: %+v", len(ops), want, ops)
	}
	for _, op := range ops[:len(ops)-1] {
		if !strings.HasPrefix(op.Path, "/metadata/annotations/") || strings.Count(op.Path, "/") != 3 {
			t.Errorf("annotation op path %q is not escaped", op.Path)
		}
		if op.Path == "/metadata/annotations/redirect.sidelane.io~1inbound-ports" {
			t.Error("the user's inbound-ports annotation is overwritten")
		}
	}
	if last := ops[len(ops)-1]; last.Path != "/spec/initContainers" {
		t.Errorf("native sidecar with no init containers: op path %q, want /spec/initContainers", last.Path)
	}
	// No metadata at all (a pod template without one): the whole object is added.
	got, _ := applyPatch(t, newPod(func(p *corev1.Pod) { p.ObjectMeta = metav1.ObjectMeta{} }), testTemplate(false))
	if !AlreadyInjected(got) || got.Annotations[contract.AnnotationProxyUID] != "1337" {
		t.Errorf("pod without metadata: annotations %v", got.Annotations)
	}
}

func TestPatchRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want []string // substrings of the message
	}{
		{"malformed inbound ports", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationInboundPorts: "80,http"}
		}), []string{contract.AnnotationInboundPorts, `"80,http"`}},
		{"malformed CIDR", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationExcludeOutboundCIDRs: "10.0.0.0/33"}
		}), []string{contract.AnnotationExcludeOutboundCIDRs, "10.0.0.0/33"}},
		{"uid out of range", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyUID: "-1"}
		}), []string{contract.AnnotationProxyUID, `"-1"`}},
		{"proxy uid 0", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyUID: "0"}
		}), []string{contract.AnnotationProxyUID, "root"}},
		{"app container runs as the proxy uid", newPod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, restrictedApp("worker"))
			p.Spec.Containers[1].SecurityContext.RunAsUser = ptr(int64(1337))
		}), []string{`container "worker"`, "uid 1337", "its securityContext"}},
		{"app container runs as the proxy gid", newPod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.RunAsGroup = ptr(int64(1337))
		}), []string{`container "app"`, "gid 1337"}},
		{"pod securityContext runs as the proxy uid", newPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr(int64(1337))}
		}), []string{`container "app"`, "uid 1337", "pod securityContext"}},
		{"custom proxy uid", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyUID: "4242"}
			p.Spec.Containers[0].SecurityContext.RunAsUser = ptr(int64(4242))
		}), []string{`container "app"`, "uid 4242"}},
		{"user sidecar runs as the proxy uid", newPod(func(p *corev1.Pod) {
			c := restrictedApp("log-shipper")
			c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
			c.SecurityContext.RunAsUser = ptr(int64(1337))
			p.Spec.InitContainers = []corev1.Container{c}
		}), []string{`sidecar container "log-shipper"`, "uid 1337"}},
		{"concurrency not a number", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyConcurrency: "many"}
		}), []string{contract.AnnotationProxyConcurrency, `"many"`}},
		{"concurrency zero", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyConcurrency: "0"}
		}), []string{contract.AnnotationProxyConcurrency, `"0"`}},
		{"concurrency too high", newPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.AnnotationProxyConcurrency: "65"}
		}), []string{contract.AnnotationProxyConcurrency, `"65"`, "1 to 64"}},
		{"no containers", newPod(func(p *corev1.Pod) { p.Spec.Containers = nil }), []string{"no containers"}},
		{"container named sidelane-proxy", newPod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, restrictedApp(contract.ProxyContainerName))
		}), []string{contract.ProxyContainerName, "reserved"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Patch(tc.pod, testTemplate(true))
			if err == nil {
				t.Fatal("Patch accepted the pod")
			}
			if !IsRefused(err) {
				t.Errorf("error %v is not a refusal", err)
			}
			for _, s := range tc.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	var re *redirect.Error
	_, err := Patch(newPod(func(p *corev1.Pod) {
		p.Annotations = map[string]string{contract.AnnotationInboundCapturePort: "x"}
	}), testTemplate(false))
	if !errors.As(err, &re) || re.Annotation != contract.AnnotationInboundCapturePort {
		t.Errorf("refusal does not wrap the redirect error: %v", err)
	}
}

func TestSelect(t *testing.T) {
	fail := func() (map[string]string, error) { return nil, errors.New("must not be asked") }
	plain := func() (map[string]string, error) { return map[string]string{"team": "a"}, nil }
	lookupErr := errors.New("api down")
	for _, tc := range []struct {
		name   string
		ns     string
		pod    *corev1.Pod
		labels func() (map[string]string, error)
		want   Decision
		err    error
	}{
		{"namespace enabled", "shop", newPod(nil), enabledNS, Decision{Inject: true}, nil},
		{"namespace not enabled", "shop", newPod(nil), plain, Decision{Reason: SkipNamespaceNotOptedIn}, nil},
		{"namespace label other value", "shop", newPod(nil), func() (map[string]string, error) {
			return map[string]string{contract.InjectLabel: "true"}, nil
		}, Decision{Reason: SkipNamespaceNotOptedIn}, nil},
		{"pod label opts in", "shop", newPod(func(p *corev1.Pod) { p.Labels = map[string]string{contract.InjectLabel: "true"} }), fail, Decision{Inject: true}, nil},
		{"pod annotation opts in", "shop", newPod(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.InjectLabel: "True"} }), fail, Decision{Inject: true}, nil},
		{"pod label opts out", "shop", newPod(func(p *corev1.Pod) { p.Labels = map[string]string{contract.InjectLabel: "false"} }), fail, Decision{Reason: SkipOptedOut}, nil},
		{"pod annotation opts out", "shop", newPod(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.InjectLabel: "false"} }), fail, Decision{Reason: SkipOptedOut}, nil},
		{"opt-out wins over opt-in", "shop", newPod(func(p *corev1.Pod) {
			p.Labels = map[string]string{contract.InjectLabel: "true"}
			p.Annotations = map[string]string{contract.InjectLabel: "false"}
		}), fail, Decision{Reason: SkipOptedOut}, nil},
		{"host network", "shop", newPod(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Labels = map[string]string{contract.InjectLabel: "true"}
		}), fail, Decision{Reason: SkipHostNetwork}, nil},
		{"kube-system", "kube-system", newPod(func(p *corev1.Pod) { p.Labels = map[string]string{contract.InjectLabel: "true"} }), fail, Decision{Reason: SkipExcludedNamespace}, nil},
		{"sidelane-system", "sidelane-system", newPod(nil), fail, Decision{Reason: SkipExcludedNamespace}, nil},
		{"already injected", "shop", newPod(func(p *corev1.Pod) { p.Annotations = map[string]string{contract.StatusAnnotation: "{}"} }), fail, Decision{Reason: SkipAlreadyInjected}, nil},
		{"namespace lookup fails", "shop", newPod(nil), func() (map[string]string, error) { return nil, lookupErr }, Decision{}, lookupErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(tc.pod, tc.ns, contract.DefaultExcludeNamespaces, tc.labels)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("Select = %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseTemplate(t *testing.T) {
	base := DefaultTemplate()
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, tpl Template)
	}{
		{name: "empty file keeps the base", in: "# nothing here\n", check: func(t *testing.T, tpl Template) {
			if tpl.Image != base.Image || !tpl.NativeSidecar {
				t.Errorf("got %+v", tpl)
			}
		}},
		{name: "yaml overrides", in: "image: r.test/p:v2\nimagePullPolicy: Always\nnativeSidecar: false\nlogLevel: debug\nresources:\n  limits: {memory: 1Gi}\n",
			check: func(t *testing.T, tpl Template) {
				if tpl.Image != "r.test/p:v2" || tpl.ImagePullPolicy != corev1.PullAlways || tpl.NativeSidecar || tpl.LogLevel != "debug" {
					t.Errorf("got %+v", tpl)
				}
				if tpl.Resources.Limits.Memory().String() != "1Gi" || tpl.Resources.Requests.Cpu().String() != "10m" {
					t.Errorf("resources not merged: %+v", tpl.Resources)
				}
			}},
		{name: "json", in: `{"image":"r.test/p:v3"}`, check: func(t *testing.T, tpl Template) {
			if tpl.Image != "r.test/p:v3" {
				t.Errorf("got %+v", tpl)
			}
		}},
		{name: "unknown field", in: "imag: x\n", wantErr: `unknown field "imag"`},
		{name: "bad pull policy", in: "imagePullPolicy: Sometimes\n", wantErr: `imagePullPolicy "Sometimes"`},
		{name: "bad log level", in: "logLevel: loud\n", wantErr: `logLevel "loud"`},
		{name: "bad quantity", in: "resources: {requests: {cpu: lots}}\n", wantErr: "quantities must match"},
		{name: "request over limit", in: "resources: {requests: {memory: 2Gi}}\n", wantErr: "exceeds resources.limits.memory"},
		{name: "unsupported resource", in: "resources: {limits: {nvidia.com/gpu: 1}}\n", wantErr: `unsupported resource "nvidia.com/gpu"`},
		{name: "empty image", in: "image: \"\"\n", wantErr: "image is empty"},
		{name: "not yaml", in: "image: [\n", wantErr: "template:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTemplate([]byte(tc.in), base)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
			if base.Resources.Limits.Memory().String() != "256Mi" {
				t.Error("ParseTemplate changed the base template's resources")
			}
		})
	}
}

// The proxy's concurrency comes from the template and a pod's annotation overrides it.
func TestProxyConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name       string
		template   int
		annotation string
		want       string // SIDELANE_PROXY_CONCURRENCY, "" for absent
	}{
		{"proxy default", 0, "", ""},
		{"template", 3, "", "3"},
		{"annotation", 0, "4", "4"},
		{"annotation over template", 3, "1", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl := testTemplate(true)
			tpl.Concurrency = tc.template
			pod := newPod(func(p *corev1.Pod) {
				if tc.annotation != "" {
					p.Annotations = map[string]string{contract.AnnotationProxyConcurrency: tc.annotation}
				}
			})
			got, _ := applyPatch(t, pod, tpl)
			var env string
			for _, e := range got.Spec.InitContainers[0].Env {
				if e.Name == "SIDELANE_PROXY_CONCURRENCY" {
					env = e.Value
				}
			}
			if env != tc.want {
				t.Errorf("SIDELANE_PROXY_CONCURRENCY = %q, want %q", env, tc.want)
			}
		})
	}
	tpl := testTemplate(true)
	tpl.Concurrency = 65
	if err := tpl.Validate(); err == nil || !strings.Contains(err.Error(), "concurrency 65") {
		t.Errorf("template concurrency 65: %v", err)
	}
}
