package kubectlplugin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// FakeCluster is a Cluster for tests: its pods and nodes are fixed, and its agents are real
// HTTP servers reached with HTTPAgent.
type FakeCluster struct {
	NS       string            // the current namespace
	PodNodes map[string]string // "namespace/name" → node
	Agents   map[string]string // node → the agent's base URL ("" = cannot connect)
	Token    string            // the bearer token sent to the agents
	Pods     []PodRef          // the injected pods
}

var _ Cluster = (*FakeCluster)(nil)

// Namespace is NS.
func (f *FakeCluster) Namespace() string { return f.NS }

// PodNode returns the node of namespace/name, or an error like the API server's.
func (f *FakeCluster) PodNode(_ context.Context, ns, name string) (string, error) {
	n, ok := f.PodNodes[ns+"/"+name]
	if !ok {
		return "", fmt.Errorf(`pod %s/%s: pods "%s" not found`, ns, name, name)
	}
	return n, nil
}

// AgentNodes returns the nodes of Agents, sorted.
func (f *FakeCluster) AgentNodes(context.Context) ([]string, error) {
	var out []string
	for n := range f.Agents {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// Agent returns an HTTPAgent for node's URL in Agents.
func (f *FakeCluster) Agent(_ context.Context, node string) (Agent, error) {
	u := f.Agents[node]
	if u == "" {
		return nil, fmt.Errorf("no running node agent pod on node %s", node)
	}
	return &HTTPAgent{Base: u, Token: f.Token, Client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// InjectedPods returns Pods.
func (f *FakeCluster) InjectedPods(context.Context) ([]PodRef, error) { return f.Pods, nil }
