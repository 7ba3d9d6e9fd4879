package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestAuthorizeCacheAndFailures(t *testing.T) {
	cs := fake.NewClientset()
	reviews, down := 0, false
	var lastSAR *authzv1.SubjectAccessReview
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews++
		if down {
			return true, nil, errors.New("connection refused")
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "alice", Groups: []string{"devs"}, Extra: map[string]authnv1.ExtraValue{"k": {"v"}}}}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		lastSAR = sar
		sar.Status.Allowed = true
		return true, sar, nil
	})
	a := New(cs, 10*time.Second)
	now := time.Unix(0, 0)
	a.now = func() time.Time { return now }
	ctx := context.Background()
	attrs := Attributes{Verb: "get", Resource: "pods", Namespace: "team", Name: "web"}
	if d := a.Authorize(ctx, "tok", attrs); d.Status != http.StatusOK || d.User != "alice" {
		t.Fatalf("allowed: %+v", d)
	}
	if ra := lastSAR.Spec.ResourceAttributes; ra == nil || ra.Namespace != "team" || ra.Name != "web" || lastSAR.Spec.User != "alice" ||
		len(lastSAR.Spec.Groups) != 1 || lastSAR.Spec.Extra["k"][0] != "v" {
		t.Errorf("SAR %+v", lastSAR.Spec)
	}
	a.Authorize(ctx, "tok", attrs)
	if reviews != 1 {
		t.Errorf("%d reviews within the TTL, want 1", reviews)
	}
	now = now.Add(11 * time.Second)
	a.Authorize(ctx, "tok", attrs)
	if reviews != 2 {
		t.Errorf("%d reviews after the TTL, want 2", reviews)
	}
	// Failures of the API server are 500 and not cached.
	down = true
	other := Attributes{Verb: "get", Path: "/metrics"}
	for range 2 {
		if d := a.Authorize(ctx, "tok", other); d.Status != http.StatusInternalServerError {
			t.Errorf("API down: %+v", d)
		}
	}
	if reviews != 4 {
		t.Errorf("%d reviews, want failures retried (4)", reviews)
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct{ header, want string }{
		{"Bearer abc", "abc"}, {"bearer  abc ", "abc"}, {"Basic abc", ""}, {"", ""}, {"Bearer", ""},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if got := BearerToken(r); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.header, got, tc.want)
		}
	}
}
