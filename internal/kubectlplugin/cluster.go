package kubectlplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
)

// AgentSelector selects the node agent's pods in contract.SystemNamespace.
const AgentSelector = "app.kubernetes.io/name=sidelane-agent"

// TokenServiceAccount is the service account whose short-lived token is used when the user's
// kubeconfig carries no bearer token (client certificates, exec plugins).
const TokenServiceAccount = "kubectl-sidelane"

// Cluster is what the commands need from Kubernetes.
type Cluster interface {
	// Namespace is the kubeconfig's current namespace.
	Namespace() string
	// PodNode returns the node a pod runs on.
	PodNode(ctx context.Context, namespace, name string) (string, error)
	// AgentNodes returns the nodes that have a node agent pod, sorted.
	AgentNodes(ctx context.Context) ([]string, error)
	// Agent connects to the node agent of node.
	Agent(ctx context.Context, node string) (Agent, error)
	// InjectedPods lists the scheduled pods of the cluster that carry the sidelane.io/status
	// annotation.
	InjectedPods(ctx context.Context) ([]PodRef, error)
}

// PodRef names a pod and its node.
type PodRef struct {
	Namespace, Name, Node string
}

// Agent is a connection to one node agent's API.
type Agent interface {
	// Get GETs path and decodes the JSON answer into out.
	Get(ctx context.Context, path string, out any) error
	Close()
}

// HTTPAgent talks to an agent's TCP API at Base with a bearer token.
type HTTPAgent struct {
	Base   string
	Token  string
	Client *http.Client
	close  func()
}

// Get implements Agent.
func (a *HTTPAgent) Get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Base+path, nil)
	if err != nil {
		return err
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	c := a.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e agentapi.Error
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Code: resp.StatusCode, Path: path, Msg: msg}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decode answer: %w", path, err)
	}
	return nil
}

// Close implements Agent.
func (a *HTTPAgent) Close() {
	if a.close != nil {
		a.close()
	}
}

// StatusError is a non-200 answer of the agent.
type StatusError struct {
	Code      int
	Path, Msg string
}

func (e *StatusError) Error() string {
	hint := ""
	switch e.Code {
	case http.StatusUnauthorized:
		hint = " (the agent could not authenticate your token)"
	case http.StatusForbidden:
		hint = " (your user lacks the RBAC the agent checks; see the ClusterRole sidelane-inspect)"
	}
	return fmt.Sprintf("agent: GET %s: %d %s: %s%s", e.Path, e.Code, http.StatusText(e.Code), e.Msg, hint)
}

// KubeCluster is the Cluster of the user's kubeconfig: it finds the node agent pods by label in
// sidelane-system and reaches their TCP API through a port-forward.
type KubeCluster struct {
	config    *rest.Config
	client    kubernetes.Interface
	namespace string

	mu    sync.Mutex
	token string
}

// NewKubeCluster loads the kubeconfig the way kubectl does (KUBECONFIG, ~/.kube/config, or
// kubeconfig; context overrides the current context).
func NewKubeCluster(kubeconfig, kubeContext string) (*KubeCluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig namespace: %w", err)
	}
	cfg.UserAgent = "kubectl-sidelane"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &KubeCluster{config: cfg, client: cs, namespace: ns}, nil
}

// Namespace implements Cluster.
func (c *KubeCluster) Namespace() string { return c.namespace }

// PodNode implements Cluster.
func (c *KubeCluster) PodNode(ctx context.Context, namespace, name string) (string, error) {
	p, err := c.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	if p.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled on a node yet", namespace, name)
	}
	return p.Spec.NodeName, nil
}

// AgentNodes implements Cluster.
func (c *KubeCluster) AgentNodes(ctx context.Context) ([]string, error) {
	l, err := c.client.CoreV1().Pods(contract.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector})
	if err != nil {
		return nil, fmt.Errorf("list node agents (%s in %s): %w", AgentSelector, contract.SystemNamespace, err)
	}
	seen := map[string]bool{}
	var nodes []string
	for _, p := range l.Items {
		if p.Spec.NodeName != "" && !seen[p.Spec.NodeName] {
			seen[p.Spec.NodeName] = true
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	sort.Strings(nodes)
	return nodes, nil
}

// InjectedPods implements Cluster.
func (c *KubeCluster) InjectedPods(ctx context.Context) ([]PodRef, error) {
	l, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var out []PodRef
	for _, p := range l.Items {
		if _, ok := p.Annotations[contract.StatusAnnotation]; ok && p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			out = append(out, PodRef{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName})
		}
	}
	return out, nil
}

func (c *KubeCluster) agentPod(ctx context.Context, node string) (*corev1.Pod, error) {
	l, err := c.client.CoreV1().Pods(contract.SystemNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: AgentSelector,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("find the node agent on %s: %w", node, err)
	}
	for i := range l.Items {
		p := &l.Items[i]
		if p.Spec.NodeName == node && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running node agent pod (%s in %s) on node %s", AgentSelector, contract.SystemNamespace, node)
}

// bearer returns the user's own bearer token, or a short-lived one for the service account
// sidelane-system/kubectl-sidelane (TokenRequest).
func (c *KubeCluster) bearer(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" {
		return c.token, nil
	}
	if c.config.BearerToken != "" {
		c.token = c.config.BearerToken
		return c.token, nil
	}
	if c.config.BearerTokenFile != "" {
		if b, err := os.ReadFile(c.config.BearerTokenFile); err == nil && len(b) > 0 {
			c.token = strings.TrimSpace(string(b))
			return c.token, nil
		}
	}
	secs := int64(600)
	tr, err := c.client.CoreV1().ServiceAccounts(contract.SystemNamespace).CreateToken(ctx, TokenServiceAccount,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("your kubeconfig has no bearer token, and minting one for %s/%s failed: %w", contract.SystemNamespace, TokenServiceAccount, err)
	}
	c.token = tr.Status.Token
	return c.token, nil
}

// Agent implements Cluster: a port-forward to the agent pod's port contract.AgentPort.
func (c *KubeCluster) Agent(ctx context.Context, node string) (Agent, error) {
	pod, err := c.agentPod(ctx, node)
	if err != nil {
		return nil, err
	}
	token, err := c.bearer(ctx)
	if err != nil {
		return nil, err
	}
	transport, upgrader, err := spdy.RoundTripperFor(c.config)
	if err != nil {
		return nil, fmt.Errorf("port-forward: %w", err)
	}
	u := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut strings.Builder
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", contract.AgentPort)}, stop, ready, io.Discard, &syncWriter{w: &errOut})
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return nil, fmt.Errorf("port-forward to %s/%s: %w", pod.Namespace, pod.Name, errors.Join(err, errors.New(errOut.String())))
	case <-ctx.Done():
		close(stop)
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return nil, fmt.Errorf("port-forward to %s/%s: no local port: %v", pod.Namespace, pod.Name, err)
	}
	base := (&url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0].Local)}).String()
	var once sync.Once
	return &HTTPAgent{Base: base, Token: token, Client: &http.Client{Timeout: 60 * time.Second},
		close: func() { once.Do(func() { close(stop) }) }}, nil
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
