// Package podinfo looks a pod up in the Kubernetes API server for the CNI plugin and returns
// the plain facts the plugin decides on (labels, annotations, container names, pod IPs), so that
// the rest of the plugin never handles Kubernetes types.
//
// The lookup is one GET of the pod as JSON over client-go's authenticated HTTP client (the
// kubeconfig loaded by clientcmd: server, CA, token file, client certificates), decoded into
// only the fields the plugin reads — the full API types and their scheme cost the plugin,
// which starts for every pod, milliseconds of start-up. Each attempt is bounded and errors
// that can pass (connection refused, timeouts, 5xx, 429) are retried a few times. It fails
// closed: when the API server cannot be reached the error says so, and the runtime retries the
// pod's ADD.
package podinfo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Pod is what the plugin needs to know about a pod.
type Pod struct {
	Namespace   string
	Name        string
	UID         string
	Labels      map[string]string
	Annotations map[string]string
	// Containers are the names of the regular containers.
	Containers []string
	// NativeSidecars are the names of the init containers with restartPolicy Always.
	NativeSidecars []string
	// PodIPs are the pod's IPs as the API server knows them (often empty during ADD).
	PodIPs []string
}

// Options bound the lookup.
type Options struct {
	// Timeout is the limit of one attempt (default 3s).
	Timeout time.Duration
	// Attempts is how many times a retryable failure is tried (default 3).
	Attempts int
	// Backoff is the pause before the second attempt, doubled after each (default 200ms).
	Backoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = 200 * time.Millisecond
	}
	return o
}

// Client GETs pods with one kubeconfig.
type Client struct {
	http *http.Client
	base *url.URL // the API server, with any path prefix of the kubeconfig's server URL
	host string
	opts Options
}

// NewClient reads kubeconfig and returns a client for it.
func NewClient(kubeconfig string, o Options) (*Client, error) {
	o = o.withDefaults()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "sidelane-cni"
	// The same base URL (scheme default, path prefix) as client-go's REST clients use.
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: API client: %w", kubeconfig, err)
	}
	return &Client{http: hc, base: base, host: cfg.Host, opts: o}, nil
}

// Get returns the pod namespace/name, retrying errors that can pass.
func (c *Client) Get(ctx context.Context, namespace, name string) (Pod, error) {
	backoff := c.opts.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		var pod Pod
		pod, err = c.get(actx, namespace, name)
		cancel()
		if err == nil {
			return pod, nil
		}
		if !retryable(err) || attempt >= c.opts.Attempts || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff *= 2
	}
	var se *statusError
	if errors.As(err, &se) {
		switch se.code {
		case http.StatusNotFound:
			return Pod{}, fmt.Errorf("pod %s/%s not found in the API server at %s: %w", namespace, name, c.host, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return Pod{}, fmt.Errorf("get pod %s/%s from the API server at %s: not allowed (check the plugin's kubeconfig and RBAC): %w", namespace, name, c.host, err)
		}
	}
	return Pod{}, fmt.Errorf("get pod %s/%s: API server at %s unreachable after %d attempts: %w", namespace, name, c.host, c.opts.Attempts, err)
}

// maxPodBytes bounds the body read for one pod.
const maxPodBytes = 4 << 20

// get is one attempt: GET /api/v1/namespaces/{namespace}/pods/{name} as JSON.
func (c *Client) get(ctx context.Context, namespace, name string) (Pod, error) {
	for _, seg := range []string{namespace, name} {
		if seg == "" || seg == "." || seg == ".." || strings.Contains(seg, "/") {
			return Pod{}, &permanentError{fmt.Errorf("%q is not a namespace or pod name", seg)}
		}
	}
	u := *c.base
	u.Path = path.Join("/", u.Path, "api/v1/namespaces", namespace, "pods", name)
	u.RawPath = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Pod{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return Pod{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPodBytes+1))
	if err != nil {
		return Pod{}, fmt.Errorf("read the API server's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Pod{}, newStatusError(resp.StatusCode, body)
	}
	if len(body) > maxPodBytes {
		return Pod{}, fmt.Errorf("the API server's answer is larger than %d bytes", maxPodBytes)
	}
	return decodePod(body)
}

// statusError is a non-200 answer of the API server.
type statusError struct {
	code    int
	reason  string
	message string
}

func newStatusError(code int, body []byte) *statusError {
	e := &statusError{code: code}
	var st struct {
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		e.reason, e.message = st.Reason, st.Message
	} else if len(body) > 0 {
		e.message = strings.TrimSpace(string(body[:min(len(body), 256)]))
	}
	return e
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
	if e.reason != "" {
		s += " (" + e.reason + ")"
	}
	if e.message != "" {
		s += ": " + e.message
	}
	return s
}

// retryable reports whether err may pass on a later attempt.
func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code == http.StatusTooManyRequests || se.code >= 500
	}
	var de *permanentError
	if errors.As(err, &de) {
		return false
	}
	return true // transport errors: refused, reset, timeouts
}

// permanentError is a request or answer no retry can mend: a name that cannot be a pod's, or a
// pod object that is not valid JSON.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// podObject is the part of a v1 Pod the plugin reads; the rest of the object is skipped
// while decoding (the plugin starts for every pod: the full API types cost start-up time).
type podObject struct {
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		UID         string            `json:"uid"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []container `json:"initContainers"`
		Containers     []container `json:"containers"`
	} `json:"spec"`
	Status struct {
		PodIPs []struct {
			IP string `json:"ip"`
		} `json:"podIPs"`
	} `json:"status"`
}

type container struct {
	Name          string `json:"name"`
	RestartPolicy string `json:"restartPolicy"`
}

// decodePod extracts the plugin's facts from a v1 Pod in JSON.
func decodePod(b []byte) (Pod, error) {
	var p podObject
	if err := json.Unmarshal(b, &p); err != nil {
		return Pod{}, &permanentError{fmt.Errorf("decode the pod: %w", err)}
	}
	out := Pod{
		Namespace:   p.Metadata.Namespace,
		Name:        p.Metadata.Name,
		UID:         p.Metadata.UID,
		Labels:      p.Metadata.Labels,
		Annotations: p.Metadata.Annotations,
	}
	for _, c := range p.Spec.Containers {
		out.Containers = append(out.Containers, c.Name)
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy == "Always" { // a native sidecar
			out.NativeSidecars = append(out.NativeSidecars, c.Name)
		}
	}
	for _, ip := range p.Status.PodIPs {
		out.PodIPs = append(out.PodIPs, ip.IP)
	}
	return out, nil
}

// CheckKubeconfig reports whether kubeconfig can be read and names an API server.
func CheckKubeconfig(kubeconfig string) error {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	if _, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig(); err != nil {
		return fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return nil
}
