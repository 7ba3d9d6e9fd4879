// Package cnirpc is the protocol between the CNI plugin and its node agent on the agent's unix
// socket (docs/design.md "Plugin ↔ agent protocol"). The plugin asks the agent whether to capture
// a pod (Decide) and tells it what it did (Report); STATUS asks whether the agent answers (Ping).
//
// One request and one answer per connection, each a frame: the 4-byte magic "\x00SLP", a 4-byte
// big-endian length and that many bytes of one JSON object, nothing after it. Request and answer
// carry the protocol Version; an answer of another version is refused (the plugin fails closed
// and says why). The first byte of a frame, 0x00, never starts an HTTP request, so the agent
// serves this protocol and its HTTP API on the same socket by looking at that byte.
//
// The package uses only the standard library's net and encoding/json (plus the plain value
// types of agentapi and redirect): the plugin, which starts for every pod, links neither
// net/http nor crypto/tls nor client-go.
package cnirpc

import (
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/redirect"
)

// Version is the protocol version this build speaks. Change it only with a new, incompatible
// meaning of a field; both sides refuse a version they do not know.
const Version = 1

// Operations.
const (
	OpDecide = "decide" // Request.Decide → Response.Decision
	OpReport = "report" // Request.Report → empty Response
	OpPing   = "ping"   // → empty Response (STATUS)
)

// Request is what the plugin sends.
type Request struct {
	V        int              `json:"v"`
	Op       string           `json:"op"`
	Decide   *DecideRequest   `json:"decide,omitempty"`
	Report   *agentapi.Report `json:"report,omitempty"`
	Warnings []string         `json:"warnings,omitempty"` // configuration the plugin ignores (logged once by the agent)
}

// DecideRequest names the pod of an ADD and what the runtime told the plugin about it.
type DecideRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	// SandboxIPs are the prevResult addresses of the sandbox interface (CNI_IFNAME).
	SandboxIPs []string `json:"sandboxIPs,omitempty"`
}

// Decision is the agent's answer to Decide.
type Decision struct {
	// Capture is true when the pod's rules must be installed.
	Capture bool `json:"capture"`
	// Reason says why (selection.Decide's reason).
	Reason string `json:"reason"`
	// UID is the uid of the pod the decision is about.
	UID string `json:"uid,omitempty"`
	// Settings are the pod's validated redirect settings (set when Capture).
	Settings *redirect.Settings `json:"settings,omitempty"`
	// Invalid, when set, is why the pod's redirect annotations are refused: the ADD fails with
	// this message and nothing is written (Capture is then true and Settings nil).
	Invalid string `json:"invalid,omitempty"`
	// Families are the IP families of the ruleset ("ipv4", "ipv6"), from rules.FamiliesFor.
	Families []string `json:"families,omitempty"`
	// CacheMiss is true when the agent had to GET the pod from the API server.
	CacheMiss bool `json:"cacheMiss,omitempty"`
}

// Response is what the agent answers.
type Response struct {
	V        int       `json:"v"`
	Error    string    `json:"error,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
}
