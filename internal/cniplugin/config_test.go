package cniplugin

import (
	"slices"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/contract"
)

func TestParseConfigDefaults(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"sidelane-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Kubeconfig != "" || len(conf.Warnings()) != 0 || conf.AgentSocket != contract.DefaultAgentSocket ||
		conf.Backend != contract.BackendAuto || conf.LogLevel != LevelInfo || conf.StateDir != DefaultStateDir {
		t.Errorf("defaults not applied: %+v", conf)
	}
	if !slices.Equal(conf.ExcludeNamespaces, contract.DefaultExcludeNamespaces) {
		t.Errorf("exclude_namespaces = %v, want %v", conf.ExcludeNamespaces, contract.DefaultExcludeNamespaces)
	}
	if conf.PrevResult != nil {
		t.Errorf("prevResult = %v, want none", conf.PrevResult)
	}
}

func TestParseConfigExplicit(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"k8s","type":"sidelane-cni",
		"kubeconfig":"/k/kc","agent_socket":"/run/a.sock","exclude_namespaces":[],
		"backend":"iptables","log_level":"debug","state_dir":"/tmp/st"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Kubeconfig != "/k/kc" || conf.AgentSocket != "/run/a.sock" || conf.Backend != "iptables" ||
		conf.LogLevel != "debug" || conf.StateDir != "/tmp/st" || len(conf.ExcludeNamespaces) != 0 {
		t.Errorf("explicit values not kept: %+v", conf)
	}
	// The legacy kubeconfig field is kept (ignored) and named in a warning for the agent.
	if w := conf.Warnings(); len(w) != 1 || !strings.Contains(w[0], `"kubeconfig" (/k/kc) is ignored`) {
		t.Errorf("warnings %q, want one about the ignored kubeconfig", w)
	}
	// An explicit empty list excludes nothing, except the system namespace, always.
	if conf.Excluded("kube-system") || !conf.Excluded(contract.SystemNamespace) {
		t.Errorf("Excluded: kube-system %v, %s %v", conf.Excluded("kube-system"), contract.SystemNamespace, conf.Excluded(contract.SystemNamespace))
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := `"cniVersion":"1.0.0","name":"k8s","type":"sidelane-cni"`
	tests := []struct {
		name, conf string
		want       []string // substrings of the error
	}{
		{"not json", `{`, []string{"not a JSON object"}},
		{"no version", `{"name":"k8s","type":"sidelane-cni"}`, []string{`"cniVersion"`, "required"}},
		{"bad version", `{"cniVersion":"one","type":"sidelane-cni"}`, []string{`"cniVersion"`, `"one"`}},
		{"wrong type", `{"cniVersion":"1.0.0","type":"portmap"}`, []string{`"type"`, `"portmap"`, "sidelane-cni"}},
		{"relative socket", `{` + base + `,"agent_socket":"a.sock"}`, []string{`"agent_socket"`, `"a.sock"`}},
		{"relative state dir", `{` + base + `,"state_dir":"st"}`, []string{`"state_dir"`, `"st"`}},
		{"bad namespace", `{` + base + `,"exclude_namespaces":["ok","Not_OK"]}`, []string{`"exclude_namespaces[1]"`, `"Not_OK"`}},
		{"empty namespace", `{` + base + `,"exclude_namespaces":[""]}`, []string{`"exclude_namespaces[0]"`}},
		{"namespaces not a list", `{` + base + `,"exclude_namespaces":"kube-system"}`, []string{`"exclude_namespaces"`, "string"}},
		{"bad backend", `{` + base + `,"backend":"ebpf"}`, []string{`"backend"`, `"ebpf"`, "nftables"}},
		{"backend not a string", `{` + base + `,"backend":3}`, []string{`"backend"`, "number"}},
		{"bad log level", `{` + base + `,"log_level":"loud"}`, []string{`"log_level"`, `"loud"`, "debug"}},
		{"bad prevResult", `{` + base + `,"prevResult":{"ips":[{"address":"nonsense"}]}}`, []string{`"prevResult"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.conf))
			if err == nil {
				t.Fatalf("no error for %s", tt.conf)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParsePodIdentity(t *testing.T) {
	tests := []struct {
		args string
		want PodIdentity
	}{
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1", PodIdentity{"ns", "web-0", "u-1"}},
		{"K8S_POD_NAME=a", PodIdentity{Name: "a"}},
		{"", PodIdentity{}},
		{"garbage;;=;K8S_POD_NAMESPACE=x", PodIdentity{Namespace: "x"}},
	}
	for _, tt := range tests {
		if got := ParsePodIdentity(tt.args); got != tt.want {
			t.Errorf("ParsePodIdentity(%q) = %+v, want %+v", tt.args, got, tt.want)
		}
	}
}
