// Package install puts the sidelane-cni plugin on a node, keeps it there and takes it away
// again: it copies the plugin binary into the host's CNI bin directory, chains the plugin's
// entry into the primary CNI's conflist (last, without touching anything else), writes the
// plugin's kubeconfig with a service-account token that is refreshed when it rotates, and on
// uninstall gives the primary CNI's conflist back byte for byte.
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
	"context"
	"errors"
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
	// ConfName, when set (CNI_CONF_NAME), names the primary config file in CNIConfDir instead
	// of choosing the first valid file in lexical order.
	ConfName string
	// PluginConfig is our entry in the primary conflist. "type" defaults to sidelane-cni; the
	// other keys (kubeconfig, agent_socket, exclude_namespaces, backend, log_level) are written
	// as given. Nil: DefaultPluginConfig(cfg).
	PluginConfig map[string]any
	// Kubeconfig, when set, makes Install write a kubeconfig for the plugin and the Watcher
	// keep its token fresh. Nil: no kubeconfig is written.
	Kubeconfig *KubeconfigSource
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
}

// DefaultStateDir is where the install state lives unless Config.StateDir says otherwise.
const DefaultStateDir = contract.AgentStateDir + "/install"

// DefaultTokenFile is the name, in the directory of the kubeconfig, of the host copy of the
// plugin's service-account token.
const DefaultTokenFile = "sidelane-token"

// DefaultCAFile is the in-cluster CA bundle of a pod's service account.
const DefaultCAFile = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

// KubeconfigSource says how to build the plugin's kubeconfig and where its token comes from.
// Exactly one of TokenFile and MintToken must be set.
type KubeconfigSource struct {
	// Path of the kubeconfig on the host (default <CNIConfDir>/sidelane-kubeconfig).
	Path string
	// HostTokenPath is where the token copy is written (default <dir of Path>/sidelane-token);
	// the kubeconfig's tokenFile points here.
	HostTokenPath string
	// Server is the API server URL. Empty: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	Server string
	// CAFile is the CA bundle to embed (default the in-cluster service-account ca.crt).
	CAFile string
	// TokenFile (source A) is a token file to copy, e.g. the agent's projected service-account
	// token; it is watched and copied again when it changes.
	TokenFile string
	// MintToken (source B) returns a fresh token for the plugin's service account
	// (sidelane-system/sidelane-cni, via TokenRequest) and its expiry; the watcher calls it again
	// at 80% of the token's lifetime.
	MintToken func(ctx context.Context) (token string, expiry time.Time, err error)
}

// DefaultPluginConfig is the entry of DESIGN.md "CNI plugin configuration".
func DefaultPluginConfig() map[string]any {
	return map[string]any{
		"type":               contract.PluginType,
		"kubeconfig":         contract.DefaultKubeconfig,
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
	if k := cfg.Kubeconfig; k != nil {
		kc := *k
		if kc.Path == "" {
			kc.Path = filepath.Join(cfg.CNIConfDir, contract.KubeconfigFile)
		}
		if kc.HostTokenPath == "" {
			kc.HostTokenPath = filepath.Join(filepath.Dir(kc.Path), DefaultTokenFile)
		}
		if kc.CAFile == "" {
			kc.CAFile = DefaultCAFile
		}
		if (kc.TokenFile == "") == (kc.MintToken == nil) {
			return cfg, errors.New("kubeconfig source: set exactly one of TokenFile and MintToken")
		}
		if isConfExt(kc.Path) || isConfExt(kc.HostTokenPath) {
			return cfg, fmt.Errorf("kubeconfig %q / token %q: must not end in .conf, .conflist or .json (the runtime would read it as a network config)", kc.Path, kc.HostTokenPath)
		}
		cfg.Kubeconfig = &kc
	}
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
