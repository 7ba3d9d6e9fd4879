// Package contract holds the names and numbers that the parts of Sidelane agree on:
// labels, annotation keys, the proxy's ports and identity, the plugin's file names and the
// node agent's socket. They are the contracts of docs/design.md; a change here is a change of
// contract and must be made in every part (and its tests) at once.
//
// Names that are left on nodes (files, sockets, table names) must never change between
// releases: an upgrade must be able to find what an older release wrote.
package contract

// Pod and namespace selection.
const (
	// InjectLabel on a namespace (value "enabled") opts the namespace in. On a pod, as a label or
	// an annotation, "false" opts the pod out and "true" opts it in.
	InjectLabel = "sidelane.io/inject"
	// InjectEnabled is the namespace label value that opts a namespace in.
	InjectEnabled = "enabled"
	// StatusAnnotation marks an injected pod (JSON, see Status).
	StatusAnnotation = "sidelane.io/status"
	// ProxyContainerName is the name of the injected sidecar container.
	ProxyContainerName = "sidelane-proxy"
	// SystemNamespace is where Sidelane itself runs.
	SystemNamespace = "sidelane-system"
	// RepairAnnotation on a pod overrides the node agent's --repair-mode for that pod
	// ("inplace", "delete" or "off"); "off" keeps missing or drifted rules as they are (recorded
	// and reported, not repaired), e.g. while someone inspects a pod's tampered rules.
	RepairAnnotation = "sidelane.io/repair"
)

// DefaultExcludeNamespaces are never captured by the plugin nor injected by the webhook.
var DefaultExcludeNamespaces = []string{"kube-system", SystemNamespace}

// Redirect annotations (docs/design.md "Redirect settings"). Package redirect parses them.
const (
	AnnotationInboundPorts         = "redirect.sidelane.io/inbound-ports"
	AnnotationExcludeInboundPorts  = "redirect.sidelane.io/exclude-inbound-ports"
	AnnotationOutboundCIDRs        = "redirect.sidelane.io/outbound-cidrs"
	AnnotationExcludeOutboundCIDRs = "redirect.sidelane.io/exclude-outbound-cidrs"
	AnnotationExcludeOutboundPorts = "redirect.sidelane.io/exclude-outbound-ports"
	AnnotationProxyUID             = "redirect.sidelane.io/proxy-uid"
	AnnotationProxyGID             = "redirect.sidelane.io/proxy-gid"
	AnnotationInboundCapturePort   = "redirect.sidelane.io/inbound-capture-port"
	AnnotationOutboundCapturePort  = "redirect.sidelane.io/outbound-capture-port"
)

// AnnotationProxyConcurrency sets the injected proxy's concurrency (threads running Go code,
// sidelane-proxy -concurrency) for one pod: an integer from 1 to MaxProxyConcurrency. A CPU
// limit on the proxy container still wins.
const AnnotationProxyConcurrency = "proxy.sidelane.io/concurrency"

// MaxProxyConcurrency bounds AnnotationProxyConcurrency.
const MaxProxyConcurrency = 64

// RedirectAnnotations lists every redirect annotation key in a stable order.
var RedirectAnnotations = []string{
	AnnotationInboundPorts,
	AnnotationExcludeInboundPorts,
	AnnotationOutboundCIDRs,
	AnnotationExcludeOutboundCIDRs,
	AnnotationExcludeOutboundPorts,
	AnnotationProxyUID,
	AnnotationProxyGID,
	AnnotationInboundCapturePort,
	AnnotationOutboundCapturePort,
}

// Proxy ports and identity.
const (
	OutboundCapturePort = 15001
	InboundCapturePort  = 15006
	AdminPort           = 15000 // 127.0.0.1 only
	ReservedPort        = 15020
	HealthPort          = 15021 // GET /healthz/ready
	PrometheusPort      = 15090 // GET /stats/prometheus
	ProxyUID            = 1337
	ProxyGID            = 1337
	HealthPath          = "/healthz/ready"
	PrometheusPath      = "/stats/prometheus"
)

// AlwaysExcludedInboundPorts are never captured inbound, whatever the annotations say.
var AlwaysExcludedInboundPorts = []uint16{ReservedPort, HealthPort, PrometheusPort}

// Addresses the proxy uses as the source when it forwards inbound traffic to the application,
// so that the rules can tell that traffic apart from the application's own.
const (
	InboundPassthroughIPv4 = "127.0.0.6"
	InboundPassthroughIPv6 = "::6"
)

// Plugin and agent names left on the node. These should never be changed.
const (
	PluginType          = "sidelane-cni"
	PluginBinary        = "sidelane-cni"
	DefaultAgentSocket  = "/var/run/sidelane/cni.sock"
	DefaultCNIConfDir   = "/etc/cni/net.d"
	DefaultCNIBinDir    = "/opt/cni/bin"
	NFTablesTableName   = "sidelane"          // table name in the pod netns (families ip and ip6)
	IPTablesChainPrefix = "SIDELANE_"         // iptables chains in the pod netns' nat table
	AgentPort           = 15080               // node agent TCP API (bearer token required)
	AgentStateDir       = "/var/lib/sidelane" // node agent's record of captured pods
)

// LegacyCredentialFiles are the plugin kubeconfig and token copy that releases before the
// plugin ↔ agent protocol kept in the CNI conf dir; the agent removes them on install.
var LegacyCredentialFiles = []string{"sidelane-kubeconfig", "sidelane-token"}

// Backends of the plugin configuration.
const (
	BackendAuto     = "auto"
	BackendNFTables = "nftables"
	BackendIPTables = "iptables"
)

// Status is the JSON value of StatusAnnotation.
type Status struct {
	Containers     []string `json:"containers"`
	InitContainers []string `json:"initContainers,omitempty"`
	Version        string   `json:"version"`
	NativeSidecar  bool     `json:"nativeSidecar,omitempty"`
}
