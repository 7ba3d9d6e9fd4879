// Package auth guards the node agent's TCP API with Kubernetes credentials: the caller's
// bearer token is checked with a TokenReview, then a SubjectAccessReview asks whether that user
// may do what the request does (get the pod for a pod's rules, list pods for the pod list, get
// the /metrics non-resource URL for metrics). Answers are cached briefly, keyed by a hash of
// the token and the attributes, so that a burst of requests costs one review.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Attributes is what a request does, in SubjectAccessReview terms. Either Resource (with Verb,
// Namespace, Name) or Path (a non-resource URL) is set.
type Attributes struct {
	Verb, Resource, Namespace, Name string
	Path                            string
}

func (a Attributes) String() string {
	if a.Path != "" {
		return a.Verb + " " + a.Path
	}
	s := a.Verb + " " + a.Resource
	if a.Namespace != "" {
		s += " in namespace " + a.Namespace
	}
	if a.Name != "" {
		s += " named " + a.Name
	}
	return s
}

// Decision is the outcome of Authorize.
type Decision struct {
	// Status is 200 (allowed), 401 (not authenticated), 403 (not allowed) or 500 (the reviews
	// failed).
	Status int
	User   string
	Reason string
}

// Authorizer runs and caches the reviews.
type Authorizer struct {
	client kubernetes.Interface
	// Audiences, when set, are the token audiences the TokenReview asks for.
	Audiences []string
	allowTTL  time.Duration
	denyTTL   time.Duration
	max       int
	now       func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	d       Decision
	expires time.Time
}

// New returns an Authorizer using client; allowed answers are cached for ttl, refusals for
// half of it (ttl <= 0: 10s).
func New(client kubernetes.Interface, ttl time.Duration) *Authorizer {
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	return &Authorizer{client: client, allowTTL: ttl, denyTTL: ttl / 2, max: 4096, now: time.Now, cache: map[string]cached{}}
}

// BearerToken returns the token of an "Authorization: Bearer" header, or "".
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

// Authorize decides whether the holder of token may do attrs.
func (a *Authorizer) Authorize(ctx context.Context, token string, attrs Attributes) Decision {
	if token == "" {
		return Decision{Status: http.StatusUnauthorized, Reason: "a Kubernetes bearer token is required (Authorization: Bearer <token>)"}
	}
	sum := sha256.Sum256([]byte(token + "\x00" + attrs.Verb + "\x00" + attrs.Resource + "\x00" + attrs.Namespace + "\x00" + attrs.Name + "\x00" + attrs.Path))
	key := hex.EncodeToString(sum[:])
	now := a.now()
	a.mu.Lock()
	if c, ok := a.cache[key]; ok && now.Before(c.expires) {
		a.mu.Unlock()
		return c.d
	}
	a.mu.Unlock()

	d := a.review(ctx, token, attrs)
	if d.Status == http.StatusInternalServerError {
		return d // never cache failures of the reviews themselves
	}
	ttl := a.allowTTL
	if d.Status != http.StatusOK {
		ttl = a.denyTTL
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.max {
		for k, c := range a.cache {
			if !now.Before(c.expires) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= a.max {
			a.cache = map[string]cached{}
		}
	}
	a.cache[key] = cached{d: d, expires: now.Add(ttl)}
	return d
}

func (a *Authorizer) review(ctx context.Context, token string, attrs Attributes) Decision {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return Decision{Status: http.StatusInternalServerError, Reason: fmt.Sprintf("token review: %v", err)}
	}
	if !tr.Status.Authenticated {
		reason := "token not authenticated"
		if tr.Status.Error != "" {
			reason += ": " + tr.Status.Error
		}
		return Decision{Status: http.StatusUnauthorized, Reason: reason}
	}
	u := tr.Status.User
	extra := make(map[string]authzv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	spec := authzv1.SubjectAccessReviewSpec{User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra}
	if attrs.Path != "" {
		spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: attrs.Path, Verb: attrs.Verb}
	} else {
		spec.ResourceAttributes = &authzv1.ResourceAttributes{Verb: attrs.Verb, Resource: attrs.Resource, Namespace: attrs.Namespace, Name: attrs.Name}
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return Decision{Status: http.StatusInternalServerError, User: u.Username, Reason: fmt.Sprintf("subject access review: %v", err)}
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		reason := fmt.Sprintf("user %q may not %s", u.Username, attrs)
		if sar.Status.Reason != "" {
			reason += ": " + sar.Status.Reason
		}
		return Decision{Status: http.StatusForbidden, User: u.Username, Reason: reason}
	}
	return Decision{Status: http.StatusOK, User: u.Username}
}
