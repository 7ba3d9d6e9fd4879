package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sidelane/sidelane/internal/inject"
)

// MaxBodyBytes bounds an AdmissionReview body (the API server's own limit on an object is
// about 3 MiB; a review carries the object once, or twice for updates).
const MaxBodyBytes = 10 << 20

// Accepted AdmissionReview versions.
const (
	admissionV1      = "admission.k8s.io/v1"
	admissionV1beta1 = "admission.k8s.io/v1beta1"
)

// NamespaceLookup returns the labels of a namespace.
type NamespaceLookup interface {
	Labels(ctx context.Context, name string) (map[string]string, error)
}

// Handler answers AdmissionReviews at /inject: pods selected by inject.Select get the
// JSON Patch of inject.Patch; anything else is allowed untouched; refused pods are denied with
// the refusal's message.
type Handler struct {
	// Template returns the current template (it is reloaded while the server runs).
	Template func() inject.Template
	// Namespaces looks up the labels of the pod's namespace when the pod does not opt in or out
	// itself.
	Namespaces NamespaceLookup
	// Exclude are namespaces never injected.
	Exclude []string
	Metrics *Metrics     // optional
	Log     *slog.Logger // optional
	// LookupTimeout bounds the namespace lookup (default 5 s).
	LookupTimeout time.Duration
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { h.Metrics.observe(time.Since(start).Seconds()) }()

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "method %s not allowed: POST an AdmissionReview", r.Method)
		return
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		h.fail(w, http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", ct)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", MaxBodyBytes)
			return
		}
		h.fail(w, http.StatusBadRequest, "reading the body: %v", err)
		return
	}
	if len(body) == 0 {
		h.fail(w, http.StatusBadRequest, "empty body: want an AdmissionReview")
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		h.fail(w, http.StatusBadRequest, "decoding the AdmissionReview: %v", err)
		return
	}
	if review.Kind != "AdmissionReview" || (review.APIVersion != admissionV1 && review.APIVersion != admissionV1beta1) {
		h.fail(w, http.StatusBadRequest, "unsupported object %s %q: want AdmissionReview %s or %s",
			review.APIVersion, review.Kind, admissionV1, admissionV1beta1)
		return
	}
	if review.Request == nil {
		h.fail(w, http.StatusBadRequest, "AdmissionReview has no request")
		return
	}
	if review.Request.UID == "" {
		h.fail(w, http.StatusBadRequest, "AdmissionReview request has no uid")
		return
	}

	resp, result := h.admit(r.Context(), review.Request)
	resp.UID = review.Request.UID
	h.Metrics.count(result)
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		h.fail(w, http.StatusInternalServerError, "encoding the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// admit decides one request and returns the response (without its UID) and the metric result.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow, ResultNotPod
	}
	var pod corev1.Pod
	err := errors.New("no object")
	if len(req.Object.Raw) > 0 {
		err = json.Unmarshal(req.Object.Raw, &pod)
	}
	if err != nil {
		h.log().Error("undecodable pod", "namespace", req.Namespace, "uid", req.UID, "err", err)
		return deny(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("sidelane: decoding the pod: %v", err)), ResultError
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	log := h.log().With("namespace", ns, "pod", name, "uid", req.UID)

	d, err := inject.Select(&pod, ns, h.Exclude, func() (map[string]string, error) {
		if h.Namespaces == nil {
			return nil, errors.New("no namespace lookup configured")
		}
		timeout := h.LookupTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		lctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return h.Namespaces.Labels(lctx, ns)
	})
	if err != nil {
		log.Error("namespace lookup failed", "err", err)
		return deny(http.StatusInternalServerError, metav1.StatusReasonInternalError,
			fmt.Sprintf("sidelane: looking up the labels of namespace %s: %v", ns, err)), ResultError
	}
	if !d.Inject {
		log.Debug("not injected", "reason", d.Reason)
		return allow, "skipped-" + d.Reason
	}
	patch, err := inject.PatchJSON(&pod, h.Template())
	if err != nil {
		if inject.IsRefused(err) {
			log.Info("refused", "reason", err)
			return deny(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error()), ResultRefused
		}
		log.Error("injection failed", "err", err)
		return deny(http.StatusInternalServerError, metav1.StatusReasonInternalError, "sidelane: "+err.Error()), ResultError
	}
	log.Info("injected")
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}, ResultInjected
}

func deny(code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg,
	}}
}

func (h *Handler) fail(w http.ResponseWriter, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.log().Warn("bad admission request", "status", code, "reason", msg)
	h.Metrics.count(ResultError)
	http.Error(w, msg, code)
}
