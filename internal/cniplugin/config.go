package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/selection"
)

// DefaultStateDir is where the plugin keeps one small state file per attachment (netns, pod,
// backend) so that CHECK, DEL and GC know what ADD did. It is left on the node: never change it.
const DefaultStateDir = "/var/lib/cni/sidelane"

// Log levels of the log_level field.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

var logLevels = []string{LevelDebug, LevelInfo, LevelWarn, LevelError}

// Config is the plugin's entry in the conflist (docs/design.md "CNI plugin configuration"), with
// the fields the runtime adds (cniVersion, name, prevResult, cni.dev/valid-attachments).
type Config struct {
	types.PluginConf

	// Kubeconfig is ignored: plugins before the agent protocol read the pod with it. An entry
	// that still has it keeps working; the agent logs one warning (Warnings).
	Kubeconfig string `json:"kubeconfig"`
	// AgentSocket is the node agent's unix socket: decisions at ADD, reports (best effort).
	AgentSocket string `json:"agent_socket"`
	// ExcludeNamespaces are never captured. Absent: contract.DefaultExcludeNamespaces; an
	// explicit empty list excludes nothing (the system namespace is still never failed).
	ExcludeNamespaces []string `json:"exclude_namespaces"`
	// Backend is "auto", "nftables" or "iptables".
	Backend string `json:"backend"`
	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string `json:"log_level"`
	// StateDir holds the per-attachment state files (default DefaultStateDir).
	StateDir string `json:"state_dir"`
}

// FieldError is a configuration field with a bad value.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("sidelane-cni config: field %q: invalid value %q: %s", e.Field, e.Value, e.Reason)
}

// ParseConfig decodes and validates the plugin configuration from stdin data, fills in the
// defaults and parses prevResult when there is one. Every error names the bad field.
func ParseConfig(data []byte) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("sidelane-cni config: not a JSON object: %w", err)
	}
	conf := &Config{}
	if err := json.Unmarshal(data, conf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("sidelane-cni config: field %q: got a JSON %s, want %s: %w", te.Field, te.Value, te.Type, err)
		}
		return nil, fmt.Errorf("sidelane-cni config: %w", err)
	}
	if _, present := raw["exclude_namespaces"]; !present {
		conf.ExcludeNamespaces = slices.Clone(contract.DefaultExcludeNamespaces)
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = contract.DefaultAgentSocket
	}
	if conf.Backend == "" {
		conf.Backend = contract.BackendAuto
	}
	if conf.LogLevel == "" {
		conf.LogLevel = LevelInfo
	}
	if conf.StateDir == "" {
		conf.StateDir = DefaultStateDir
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, &FieldError{Field: "prevResult", Value: "(result)", Reason: err.Error()}
	}
	return conf, nil
}

func (c *Config) validate() error {
	if c.CNIVersion == "" {
		return &FieldError{Field: "cniVersion", Value: "", Reason: "required"}
	}
	if _, _, _, err := version.ParseVersion(c.CNIVersion); err != nil {
		return &FieldError{Field: "cniVersion", Value: c.CNIVersion, Reason: err.Error()}
	}
	if c.Type != contract.PluginType {
		return &FieldError{Field: "type", Value: c.Type, Reason: fmt.Sprintf("want %q", contract.PluginType)}
	}
	for _, p := range []struct{ field, value string }{
		{"agent_socket", c.AgentSocket},
		{"state_dir", c.StateDir},
	} {
		if !filepath.IsAbs(p.value) {
			return &FieldError{Field: p.field, Value: p.value, Reason: "want an absolute path"}
		}
	}
	for i, ns := range c.ExcludeNamespaces {
		if err := selection.CheckNamespaceName(ns); err != nil {
			return &FieldError{Field: fmt.Sprintf("exclude_namespaces[%d]", i), Value: ns,
				Reason: "not a namespace name: " + err.Error()}
		}
	}
	switch c.Backend {
	case contract.BackendAuto, contract.BackendNFTables, contract.BackendIPTables:
	default:
		return &FieldError{Field: "backend", Value: c.Backend, Reason: fmt.Sprintf("want %q, %q or %q",
			contract.BackendAuto, contract.BackendNFTables, contract.BackendIPTables)}
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		return &FieldError{Field: "log_level", Value: c.LogLevel, Reason: "want one of " + strings.Join(logLevels, ", ")}
	}
	return nil
}

// Excluded reports whether namespace is never captured under this configuration. The
// Sidelane system namespace is always excluded: the plugin never fails its own agent's pod.
func (c *Config) Excluded(namespace string) bool {
	return namespace == contract.SystemNamespace || slices.Contains(c.ExcludeNamespaces, namespace)
}

// Warnings name the configuration the plugin ignores; it passes them to the agent, which logs
// each once.
func (c *Config) Warnings() []string {
	if c.Kubeconfig != "" {
		return []string{fmt.Sprintf("conflist entry of %s: field \"kubeconfig\" (%s) is ignored: the plugin asks its node agent and holds no credential; the agent's next install rewrites the entry without it", contract.PluginType, c.Kubeconfig)}
	}
	return nil
}
