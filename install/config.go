// Package install puts the sidelane-cni plugin on a node, keeps it there and takes it away
// again: it copies the plugin binary into the host's CNI bin directory, chains the plugin's
// entry into the primary CNI's conflist (last, without touching anything else), and on
// uninstall gives the primary CNI's conflist back byte for byte. The plugin holds no credential
// (it asks its node agent); the kubeconfig and token files older releases left in the conf dir
// are removed on install.
//
// The node agent uses it in two ways:
//
//	err := install.Install(ctx, cfg)            // once: waits for the primary CNI, then installs
//	w := install.NewWatcher(cfg, logger)        // DaemonSet: install and keep installed until ctx ends
//	go w.Run(ctx); ... w.Ready(); w.Stats()
//	err = install.Uninstall(cfg, install.RemoveAll) // on SIGTERM (after Run returned)
//
// What uninstall needs (the primary's exact bytes) is persisted in a state file under
// Config.StateDir so that an agent restart still restores them.
package install

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sidelane/sidelane/internal/contract"
)

// Config says where and what to install.
type Config struct {
	// CNIConfDir is the host directory of CNI network configurations (default /etc/cni/net.d).
	CNIConfDir string
	// CNIBinDir is the host directory of CNI plugin binaries (default /opt/cni/bin).
	CNIBinDir string
	// SourceBinary is the sidelane-cni binary to copy into CNIBinDir. Empty: no binary is
	// copied (and none is removed on uninstall).
	SourceBinary string
	// ConfName, when set (the agent's --cni-conf-name), names the primary config file in CNIConfDir instead
	// of choosing the first valid file in lexical order.
	ConfName string
	// PluginConfig is our entry in the primary conflist. "type" defaults to sidelane-cni; the
	// other keys (agent_socket, exclude_namespaces, backend, log_level) are written as given.
	// Nil: DefaultPluginConfig(cfg).
	PluginConfig map[string]any
	// StateDir holds the install state (the primary's original bytes). Default
	// /var/lib/sidelane/install.
	StateDir string

	// ResyncInterval is the watcher's safety-net full check (default 5s).
	ResyncInterval time.Duration
	// PollInterval is how often Install looks for a primary conflist while there is none
	// (default 1s); the watcher also reacts to file events at once.
	PollInterval time.Duration
	// FightThreshold overwrites of our entry within FightWindow mean another component is
	// fighting us (defaults 10 and 1 minute).
	FightThreshold int
	FightWindow    time.Duration
	// BackoffMin and BackoffMax bound the watcher's wait between putting our entry back while
	// it fights another writer: it starts at BackoffMin and doubles with every overwrite that
	// follows the previous one within 2×BackoffMax, up to BackoffMax (defaults 10 ms and
	// 500 ms, so the entry is back within about half a second of the last overwrite).
	BackoffMin, BackoffMax time.Duration
}

// DefaultStateDir is where the install state lives unless Config.StateDir says otherwise.
const DefaultStateDir = contract.AgentStateDir + "/install"

// DefaultPluginConfig is the entry of docs/design.md "CNI plugin configuration".
func DefaultPluginConfig() map[string]any {
	return map[string]any{
		"type":               contract.PluginType,
		"agent_socket":       contract.DefaultAgentSocket,
		"exclude_namespaces": append([]string(nil), contract.DefaultExcludeNamespaces...),
		"backend":            contract.BackendAuto,
		"log_level":          "info",
	}
}

// withDefaults fills the defaults in a copy of cfg and checks it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.CNIConfDir == "" {
		cfg.CNIConfDir = contract.DefaultCNIConfDir
	}
	if cfg.CNIBinDir == "" {
		cfg.CNIBinDir = contract.DefaultCNIBinDir
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 5 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.FightThreshold <= 0 {
		cfg.FightThreshold = 10
	}
	if cfg.FightWindow <= 0 {
		cfg.FightWindow = time.Minute
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 10 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 500 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		return cfg, fmt.Errorf("backoff: max %s is below min %s", cfg.BackoffMax, cfg.BackoffMin)
	}
	if cfg.ConfName != "" && (filepath.Base(cfg.ConfName) != cfg.ConfName || !isConfExt(cfg.ConfName)) {
		return cfg, fmt.Errorf("CNI conf name %q: must be a file name in the conf dir ending in .conf, .conflist or .json", cfg.ConfName)
	}
	pc := make(map[string]any, len(cfg.PluginConfig)+1)
	src := cfg.PluginConfig
	if src == nil {
		src = DefaultPluginConfig()
	}
	for k, v := range src {
		pc[k] = v
	}
	if t, ok := pc["type"]; !ok {
		pc["type"] = contract.PluginType
	} else if t != contract.PluginType {
		return cfg, fmt.Errorf("plugin config: type %v: must be %q", t, contract.PluginType)
	}
	cfg.PluginConfig = pc
	if cfg.SourceBinary != "" {
		if _, err := os.Stat(cfg.SourceBinary); err != nil {
			return cfg, fmt.Errorf("source binary: %w", err)
		}
	}
	return cfg, nil
}

func isConfExt(name string) bool {
	switch filepath.Ext(name) {
	case ".conf", ".conflist", ".json":
		return true
	}
	return false
}
