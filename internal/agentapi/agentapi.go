// Package agentapi is the node agent's API (docs/design.md "Node agent API"): the JSON types the
// agent serves and the plugin reports, and the paths. It holds plain values only (the CNI
// plugin links it and must not link net/http); the HTTP client for the unix socket is in
// agentapi/unixhttp, the plugin's framed protocol in cnirpc. The agent serves the same API over
// TCP behind Kubernetes authentication.
package agentapi

import (
	"time"

	"github.com/sidelane/sidelane/internal/redirect"
)

// Paths of the agent API.
const (
	PathReports = "/v1/reports"          // POST Report (unix socket only; plugins before the cnirpc protocol)
	PathPods    = "/v1/pods"             // GET PodList
	PathRules   = "/v1/pods/%s/%s/rules" // GET RulesView for namespace, name
	PathMetrics = "/metrics"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// Pod states.
const (
	StateCaptured = "captured" // rules applied and, as far as the agent knows, in place
	StateSkipped  = "skipped"  // not a sidecar pod, opted out or excluded namespace
	StateFailed   = "failed"   // ADD failed (bad annotation, apply error)
	StateMissing  = "missing"  // an injected pod whose rules are absent
	StateDrifted  = "drifted"  // live rules differ from the expected ones
)

// Report events.
const (
	EventAdd   = "ADD"
	EventCheck = "CHECK"
	EventDel   = "DEL"
)

// Report is what the plugin tells the agent after each ADD, CHECK and DEL.
type Report struct {
	Event       string             `json:"event"`
	Namespace   string             `json:"namespace"`
	Name        string             `json:"name"`
	UID         string             `json:"uid,omitempty"`
	ContainerID string             `json:"containerID"`
	Netns       string             `json:"netns,omitempty"`
	IfName      string             `json:"ifName,omitempty"`
	PodIPs      []string           `json:"podIPs,omitempty"`
	State       string             `json:"state"`
	Backend     string             `json:"backend,omitempty"`
	Settings    *redirect.Settings `json:"settings,omitempty"`
	Rules       []string           `json:"rules,omitempty"` // canonical listing of the applied rules
	Reason      string             `json:"reason,omitempty"`
	Time        time.Time          `json:"time"`
	Duration    time.Duration      `json:"durationNanos,omitempty"`
}

// PodRecord is the agent's record of one pod on its node.
type PodRecord struct {
	Namespace   string             `json:"namespace"`
	Name        string             `json:"name"`
	UID         string             `json:"uid,omitempty"`
	ContainerID string             `json:"containerID,omitempty"`
	Netns       string             `json:"netns,omitempty"`
	PodIPs      []string           `json:"podIPs,omitempty"`
	State       string             `json:"state"`
	Backend     string             `json:"backend,omitempty"`
	LastApplied time.Time          `json:"lastApplied,omitempty"`
	Reason      string             `json:"reason,omitempty"`
	Settings    *redirect.Settings `json:"settings,omitempty"`
}

// PodList is the answer of GET /v1/pods.
type PodList struct {
	Node  string      `json:"node"`
	Items []PodRecord `json:"items"`
}

// RulesView is the answer of GET /v1/pods/{namespace}/{name}/rules.
type RulesView struct {
	Pod      PodRecord          `json:"pod"`
	Settings *redirect.Settings `json:"settings,omitempty"`
	Backend  string             `json:"backend"`
	Expected []string           `json:"expected"` // canonical listing of the expected rules
	Live     []string           `json:"live"`     // canonical listing read from the pod's netns
	Diff     []string           `json:"diff"`     // "-" expected but absent, "+" present but unexpected
	InSync   bool               `json:"inSync"`
	LiveErr  string             `json:"liveError,omitempty"`
}

// Error is the JSON body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
