package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/inject"
)

func testTemplate() inject.Template {
	t := inject.DefaultTemplate()
	t.InjectorVersion = "test"
	return t
}

func newTestHandler(ns NamespaceLookup) (*Handler, *Metrics) {
	m := NewMetrics(prometheus.NewRegistry())
	tpl := testTemplate()
	return &Handler{
		Template:   func() inject.Template { return tpl },
		Namespaces: ns,
		Exclude:    contract.DefaultExcludeNamespaces,
		Metrics:    m,
	}, m
}

var meshNamespaces = StaticNamespaces{
	"shop":  {contract.InjectLabel: contract.InjectEnabled},
	"plain": {"team": "a"},
}

func testPod(mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-7d9f-", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "web", Image: "web:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func review(t testing.TB, apiVersion, ns string, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return reviewRaw(t, apiVersion, ns, metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, raw)
}

func reviewRaw(t testing.TB, apiVersion, ns string, kind metav1.GroupVersionKind, raw []byte) []byte {
	t.Helper()
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "0b0c3b0e-1111-2222-3333-444455556666",
			Kind:      kind,
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(h http.Handler, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decodeResponse(t *testing.T, rec *httptest.ResponseRecorder) admissionv1.AdmissionReview {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response: %v\n%s", err, rec.Body.String())
	}
	if out.Response == nil {
		t.Fatalf("no response: %s", rec.Body.String())
	}
	return out
}

func TestHandlerBadInput(t *testing.T) {
	h, m := newTestHandler(meshNamespaces)
	good := review(t, "admission.k8s.io/v1", "shop", testPod(nil))
	for _, tc := range []struct {
		name        string
		method      string
		contentType string
		body        []byte
		code        int
		want        string
	}{
		{"empty body", "", "application/json", nil, 400, "empty body"},
		{"no content type", "", "", good, 415, "Content-Type"},
		{"text/plain", "", "text/plain", good, 415, `"text/plain"`},
		{"yaml", "", "application/yaml", good, 415, "application/yaml"},
		{"not JSON", "", "application/json", []byte("{nope"), 400, "decoding the AdmissionReview"},
		{"JSON of the wrong type", "", "application/json", []byte(`{"request": 42}`), 400, "decoding the AdmissionReview"},
		{"wrong kind", "", "application/json", []byte(`{"apiVersion":"v1","kind":"Pod"}`), 400, "unsupported object"},
		{"v2", "", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"x"}}`), 400, "admission.k8s.io/v2"},
		{"no request", "", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "no request"},
		{"no uid", "", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), 400, "no uid"},
		{"GET", http.MethodGet, "application/json", nil, 405, "POST"},
		{"too large", "", "application/json", bytes.Repeat([]byte(" "), MaxBodyBytes+1), 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/inject", bytes.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.code, tc.want)
			}
		})
	}
	if got := counterValue(m.Injections.WithLabelValues(ResultError)); got != 12 {
		t.Errorf("error count %v, want 12", got)
	}
	// The content type may carry parameters.
	if rec := post(h, "application/json; charset=utf-8", good); rec.Code != 200 {
		t.Errorf("application/json with charset: %d %s", rec.Code, rec.Body.String())
	}
}

func applyResponse(t *testing.T, pod *corev1.Pod, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType = %v", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch: %v\n%s", err, resp.Patch)
	}
	raw, _ := json.Marshal(pod)
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying: %v", err)
	}
	var res corev1.Pod
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

func TestHandlerAdmits(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.InjectLabel: contract.InjectEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	h, m := newTestHandler(&APINamespaces{Client: client})
	optIn := func(p *corev1.Pod) { p.Labels[contract.InjectLabel] = "true" }
	for _, tc := range []struct {
		name       string
		apiVersion string
		ns         string
		pod        *corev1.Pod
		inject     bool
		result     string
	}{
		{"v1, namespace opted in", "admission.k8s.io/v1", "shop", testPod(nil), true, ResultInjected},
		{"v1beta1, namespace opted in", "admission.k8s.io/v1beta1", "shop", testPod(nil), true, ResultInjected},
		{"pod opts in, namespace not labelled", "admission.k8s.io/v1", "plain", testPod(optIn), true, ResultInjected},
		{"namespace not labelled", "admission.k8s.io/v1", "plain", testPod(nil), false, "skipped-" + inject.SkipNamespaceNotOptedIn},
		{"pod opts out", "admission.k8s.io/v1", "shop", testPod(func(p *corev1.Pod) { p.Labels[contract.InjectLabel] = "false" }), false, "skipped-" + inject.SkipOptedOut},
		{"host network", "admission.k8s.io/v1", "shop", testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false, "skipped-" + inject.SkipHostNetwork},
		{"kube-system", "admission.k8s.io/v1", "kube-system", testPod(optIn), false, "skipped-" + inject.SkipExcludedNamespace},
		{"already injected", "admission.k8s.io/v1", "shop", testPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"],"version":"x"}`}
		}), false, "skipped-" + inject.SkipAlreadyInjected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counterValue(m.Injections.WithLabelValues(tc.result))
			body := review(t, tc.apiVersion, tc.ns, tc.pod)
			out := decodeResponse(t, post(h, "application/json", body))
			if out.APIVersion != tc.apiVersion || out.Kind != "AdmissionReview" {
				t.Errorf("response is %s %s, want %s AdmissionReview", out.APIVersion, out.Kind, tc.apiVersion)
			}
			if out.Response.UID != "0b0c3b0e-1111-2222-3333-444455556666" {
				t.Errorf("uid %q not echoed", out.Response.UID)
			}
			if !out.Response.Allowed {
				t.Fatalf("denied: %+v", out.Response.Result)
			}
			if !tc.inject {
				if out.Response.Patch != nil || out.Response.PatchType != nil {
					t.Errorf("skipped pod got a patch: %s", out.Response.Patch)
				}
			} else {
				res := applyResponse(t, tc.pod, out.Response)
				if !inject.AlreadyInjected(res) || len(res.Spec.InitContainers) != 1 || res.Spec.InitContainers[0].Name != contract.ProxyContainerName {
					t.Errorf("pod not injected: %+v", res.Spec)
				}
				// Re-invocation (reinvocationPolicy IfNeeded) changes nothing.
				again := decodeResponse(t, post(h, "application/json", review(t, tc.apiVersion, tc.ns, res)))
				if !again.Response.Allowed || again.Response.Patch != nil {
					t.Errorf("re-injection is not a no-op: %s", again.Response.Patch)
				}
			}
			if got := counterValue(m.Injections.WithLabelValues(tc.result)); got < before+1 {
				t.Errorf("metric %s not counted", tc.result)
			}
		})
	}
}

func TestHandlerNonPods(t *testing.T) {
	h, _ := newTestHandler(meshNamespaces)
	for _, tc := range []struct {
		name string
		mod  func(r *admissionv1.AdmissionRequest)
	}{
		{"deployment", func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
			r.Object.Raw = []byte(`{"kind":"Deployment"}`)
		}},
		{"pod update", func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }},
		{"ephemeral containers", func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" }},
		{"undecodable non-pod object", func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
			r.Object.Raw = []byte(`[1, "not a config map"]`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r admissionv1.AdmissionReview
			_ = json.Unmarshal(review(t, "admission.k8s.io/v1", "shop", testPod(nil)), &r)
			tc.mod(r.Request)
			body, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			out := decodeResponse(t, post(h, "application/json", body))
			if !out.Response.Allowed || out.Response.Patch != nil {
				t.Errorf("not allowed untouched: %+v", out.Response)
			}
		})
	}
}

type failingLookup struct{}

func (failingLookup) Labels(context.Context, string) (map[string]string, error) {
	return nil, errors.New("connection refused")
}

func TestHandlerDenies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ns     NamespaceLookup
		body   func(t *testing.T) []byte
		code   int32
		want   []string
		result string
	}{
		{"malformed redirect annotation", meshNamespaces, func(t *testing.T) []byte {
			return review(t, "admission.k8s.io/v1", "shop", testPod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{contract.AnnotationExcludeOutboundPorts: "22,abc"}
			}))
		}, 403, []string{contract.AnnotationExcludeOutboundPorts, `"22,abc"`}, ResultRefused},
		{"app as proxy uid", meshNamespaces, func(t *testing.T) []byte {
			return review(t, "admission.k8s.io/v1", "shop", testPod(func(p *corev1.Pod) {
				p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr(int64(1337))}
			}))
		}, 403, []string{`container "web"`, "uid 1337"}, ResultRefused},
		{"namespace lookup fails", failingLookup{}, func(t *testing.T) []byte {
			return review(t, "admission.k8s.io/v1", "shop", testPod(nil))
		}, 500, []string{"namespace shop", "connection refused"}, ResultError},
		{"undecodable pod", meshNamespaces, func(t *testing.T) []byte {
			return reviewRaw(t, "admission.k8s.io/v1", "shop", metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, []byte(`{"spec":{"containers":"x"}}`))
		}, 400, []string{"decoding the pod"}, ResultError},
		{"pod without object", meshNamespaces, func(t *testing.T) []byte {
			return reviewRaw(t, "admission.k8s.io/v1", "shop", metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, nil)
		}, 400, []string{"no object"}, ResultError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, m := newTestHandler(tc.ns)
			out := decodeResponse(t, post(h, "application/json", tc.body(t)))
			r := out.Response
			if r.Allowed || r.Patch != nil || r.Result == nil {
				t.Fatalf("not denied: %+v", r)
			}
			if r.UID == "" {
				t.Error("uid not echoed")
			}
			if r.Result.Code != tc.code {
				t.Errorf("code %d, want %d", r.Result.Code, tc.code)
			}
			for _, s := range tc.want {
				if !strings.Contains(r.Result.Message, s) {
					t.Errorf("message %q does not mention %q", r.Result.Message, s)
				}
			}
			if got := counterValue(m.Injections.WithLabelValues(tc.result)); got != 1 {
				t.Errorf("metric %s = %v, want 1", tc.result, got)
			}
		})
	}
}

func TestAPINamespacesCache(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.InjectLabel: contract.InjectEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	a := &APINamespaces{Client: client}
	gets := func() int {
		n := 0
		for _, act := range client.Actions() {
			if act.GetVerb() == "get" && act.GetResource().Resource == "namespaces" {
				n++
			}
		}
		return n
	}
	ctx := context.Background()
	for range 3 {
		if l, err := a.Labels(ctx, "shop"); err != nil || l[contract.InjectLabel] != contract.InjectEnabled {
			t.Fatalf("shop: %v %v", l, err)
		}
	}
	if gets() != 1 {
		t.Errorf("%d GETs for an opted-in namespace asked 3 times, want 1 (cached)", gets())
	}
	for range 2 {
		if _, err := a.Labels(ctx, "plain"); err != nil {
			t.Fatal(err)
		}
	}
	if gets() != 3 {
		t.Errorf("%d GETs, want 3: a namespace not opted in is asked every time", gets())
	}
	if _, err := a.Labels(ctx, "missing"); err == nil || !strings.Contains(err.Error(), "namespace missing") {
		t.Errorf("missing namespace: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

var _ = io.Discard

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
