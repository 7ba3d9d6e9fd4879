// Package podinfo looks a pod up in the Kubernetes API server for the CNI plugin and returns
// the plain facts the plugin decides on (labels, annotations, container names, pod IPs), so that
// the rest of the plugin never handles Kubernetes types.
//
// The lookup is one GET through client-go's REST client (core/v1 only, to keep the plugin's
// start-up cheap), bounded per attempt and retried a few times on errors that can pass
// (connection refused, timeouts, 5xx, 429). It fails closed: when the API server cannot be
// reached the error says so, and the runtime retries the pod's ADD.
package podinfo

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
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
	rest *rest.RESTClient
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
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("core/v1 scheme: %w", err)
	}
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	cfg.Timeout = o.Timeout
	cfg.UserAgent = "sidelane-cni"
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: API client: %w", kubeconfig, err)
	}
	return &Client{rest: rc, host: cfg.Host, opts: o}, nil
}

// Get returns the pod namespace/name, retrying errors that can pass.
func (c *Client) Get(ctx context.Context, namespace, name string) (Pod, error) {
	backoff := c.opts.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		var pod corev1.Pod
		actx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		err = c.rest.Get().Namespace(namespace).Resource("pods").Name(name).Do(actx).Into(&pod)
		cancel()
		if err == nil {
			return FromPod(&pod), nil
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
	switch {
	case apierrors.IsNotFound(err):
		return Pod{}, fmt.Errorf("pod %s/%s not found in the API server at %s: %w", namespace, name, c.host, err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return Pod{}, fmt.Errorf("get pod %s/%s from the API server at %s: not allowed (check the plugin's kubeconfig and RBAC): %w", namespace, name, c.host, err)
	}
	return Pod{}, fmt.Errorf("get pod %s/%s: API server at %s unreachable after %d attempts: %w", namespace, name, c.host, c.opts.Attempts, err)
}

// retryable reports whether err may pass on a later attempt.
func retryable(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 429 || code >= 500
	}
	return true // transport errors: refused, reset, timeouts
}

// FromPod extracts the plugin's facts from a pod object.
func FromPod(p *corev1.Pod) Pod {
	out := Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		UID:         string(p.UID),
		Labels:      p.Labels,
		Annotations: p.Annotations,
	}
	for _, c := range p.Spec.Containers {
		out.Containers = append(out.Containers, c.Name)
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out.NativeSidecars = append(out.NativeSidecars, c.Name)
		}
	}
	for _, ip := range p.Status.PodIPs {
		out.PodIPs = append(out.PodIPs, ip.IP)
	}
	return out
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
