package webhook

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sidelane/sidelane/internal/contract"
)

// APINamespaces looks namespace labels up with a GET (the injector's RBAC grants get on
// namespaces, not list/watch). Namespaces found opted in are remembered for TTL, so that a
// burst of pods in a mesh namespace costs one GET; namespaces that are not opted in are asked
// again every time, so that labelling a namespace takes effect at once.
type APINamespaces struct {
	Client kubernetes.Interface
	TTL    time.Duration // 0: 5 s
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]nsEntry
}

type nsEntry struct {
	labels  map[string]string
	expires time.Time
}

// Labels implements NamespaceLookup.
func (a *APINamespaces) Labels(ctx context.Context, name string) (map[string]string, error) {
	now := time.Now
	if a.now != nil {
		now = a.now
	}
	a.mu.Lock()
	e, ok := a.cache[name]
	a.mu.Unlock()
	if ok && now().Before(e.expires) {
		return e.labels, nil
	}
	ns, err := a.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting namespace %s: %w", name, err)
	}
	labels := maps.Clone(ns.Labels)
	ttl := a.TTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[string]nsEntry{}
	}
	if labels[contract.InjectLabel] == contract.InjectEnabled {
		a.cache[name] = nsEntry{labels: labels, expires: now().Add(ttl)}
	} else {
		delete(a.cache, name)
	}
	// Keep the cache small: drop expired entries as we go.
	for k, v := range a.cache {
		if !now().Before(v.expires) {
			delete(a.cache, k)
		}
	}
	a.mu.Unlock()
	return labels, nil
}

// StaticNamespaces is a fixed namespace → labels map (manual mode, tests, benchmarks).
type StaticNamespaces map[string]map[string]string

// Labels implements NamespaceLookup; an unknown namespace has no labels.
func (s StaticNamespaces) Labels(_ context.Context, name string) (map[string]string, error) {
	return s[name], nil
}
