package webhook

import (
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
)

// FuzzHandler sends arbitrary bodies and content types to /inject: the handler never panics,
// answers only with the documented statuses, and every 200 is an AdmissionReview response
// that echoes the request's uid and whose patch, if any, applies to the object it was given.
// The seed corpus (testdata/fuzz/FuzzHandler) runs with every `go test`.
func FuzzHandler(f *testing.F) {
	f.Add("application/json", review(f, "admission.k8s.io/v1", "shop", testPod(nil)))
	f.Add("application/json", review(f, "admission.k8s.io/v1beta1", "plain", testPod(nil)))
	f.Add("text/plain", []byte("hello"))
	f.Add("application/json", []byte{})
	h, _ := newTestHandler(meshNamespaces)
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		rec := post(h, contentType, body)
		switch rec.Code {
		case http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusRequestEntityTooLarge:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		var in, out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("200 for an undecodable body: %v", err)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("200 without an AdmissionReview response: %v %s", err, rec.Body.String())
		}
		if out.Response.UID != in.Request.UID || out.APIVersion != in.APIVersion || out.Kind != in.Kind {
			t.Fatalf("response %s %s uid %q does not echo request %s %s uid %q",
				out.APIVersion, out.Kind, out.Response.UID, in.APIVersion, in.Kind, in.Request.UID)
		}
		if len(out.Response.Patch) > 0 {
			if !out.Response.Allowed {
				t.Fatal("patch on a denied request")
			}
			p, err := jsonpatch.DecodePatch(out.Response.Patch)
			if err != nil {
				t.Fatalf("undecodable patch: %v", err)
			}
			if _, err := p.Apply(in.Request.Object.Raw); err != nil {
				t.Fatalf("patch does not apply to the object: %v\npatch %s\nobject %s", err, out.Response.Patch, in.Request.Object.Raw)
			}
		}
	})
}
