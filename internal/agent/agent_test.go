package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sidelane/sidelane/install"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/agentapi/unixhttp"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
)

const primary = `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0"}]}`

func TestRunFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: []string{"--node-name=n1"}},
		{args: []string{}, wantErr: "--node-name"},
		{args: []string{"--node-name=n1", "--repair-mode=maybe"}, wantErr: `repair mode "maybe"`},
		{args: []string{"--node-name=n1", "--backend=ebpf"}, wantErr: `--backend "ebpf"`},
		{args: []string{"--node-name=n1", "--repair-interval=10ms"}, wantErr: "at least 1s"},
		{args: []string{"--node-name=n1", "--log-level=loud"}, wantErr: `--log-level "loud"`},
		{args: []string{"--node-name=n1", "extra"}, wantErr: "unexpected arguments"},
		{args: []string{"--node-name=n1", "--tls=maybe"}, wantErr: `--tls "maybe"`},
		{args: []string{"--node-name=n1", "--on-exit=sometimes"}, wantErr: `--on-exit "sometimes"`},
	} {
		t.Setenv("SIDELANE_AGENT_NODE_NAME", "")
		cfg, err := RunFlags(tc.args, io.Discard)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.args, err)
			} else if cfg.Node != "n1" || cfg.RepairMode != "inplace" || strings.Join(cfg.Listen, ",") != ":15080" || cfg.Install.PluginConfig["agent_socket"] != contract.DefaultAgentSocket {
				t.Errorf("%v: %+v", tc.args, cfg)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	// The DaemonSet sets the node's name and IP from the downward API as SIDELANE_AGENT_*;
	// the node IP makes the default listen addresses, an explicit --listen wins.
	t.Setenv("SIDELANE_AGENT_NODE_NAME", "from-env")
	t.Setenv("SIDELANE_AGENT_NODE_IP", "192.0.2.7")
	cfg, err := RunFlags(nil, io.Discard)
	if err != nil || cfg.Node != "from-env" || strings.Join(cfg.Listen, ",") != "127.0.0.1:15080,192.0.2.7:15080" {
		t.Errorf("env: %+v %v", cfg, err)
	}
	if cfg, err := RunFlags([]string{"--listen=127.0.0.1:9"}, io.Discard); err != nil || strings.Join(cfg.Listen, ",") != "127.0.0.1:9" {
		t.Errorf("explicit --listen with a node IP: %+v %v", cfg.Listen, err)
	}
	// The environment names of other installers are not read: one binder, one name per flag.
	t.Setenv("NODE_NAME", "legacy")
	t.Setenv("CNI_CONF_DIR", "/legacy")
	if cfg, err := RunFlags(nil, io.Discard); err != nil || cfg.Node != "from-env" || cfg.Install.CNIConfDir != contract.DefaultCNIConfDir {
		t.Errorf("legacy names: node %q conf dir %q %v", cfg.Node, cfg.Install.CNIConfDir, err)
	}
	// Every flag reads SIDELANE_AGENT_<FLAG>; the command line wins.
	t.Setenv("SIDELANE_AGENT_NODE_NAME", "from-sidelane-env")
	t.Setenv("SIDELANE_AGENT_REPAIR_MODE", "off")
	cfg, err = RunFlags([]string{"--repair-mode=delete"}, io.Discard)
	if err != nil || cfg.Node != "from-sidelane-env" || cfg.RepairMode != "delete" {
		t.Errorf("SIDELANE_AGENT_*: %+v %v", cfg, err)
	}
	t.Setenv("SIDELANE_AGENT_REPAIR_INTERVAL", "often")
	if _, err := RunFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), `SIDELANE_AGENT_REPAIR_INTERVAL="often"`) {
		t.Errorf("bad SIDELANE_AGENT_REPAIR_INTERVAL: %v", err)
	}
}

func TestInstallUninstallCommands(t *testing.T) {
	dir := t.TempDir()
	conf, bin, state := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin"), filepath.Join(dir, "state")
	os.MkdirAll(conf, 0o755)
	os.MkdirAll(bin, 0o755)
	src := filepath.Join(dir, "sidelane-cni")
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(conf, "10-k8s.conflist"), []byte(primary), 0o644)
	var out, errb bytes.Buffer
	args := []string{"--cni-conf-dir", conf, "--cni-bin-dir", bin, "--install-state-dir", state}
	if code := Main(context.Background(), append([]string{"install", "--plugin-binary", src}, args...), &out, &errb); code != 0 {
		t.Fatalf("install: %d %s", code, errb.String())
	}
	b, _ := os.ReadFile(filepath.Join(conf, "10-k8s.conflist"))
	if !strings.Contains(string(b), contract.PluginType) || !fileExists(filepath.Join(bin, contract.PluginBinary)) {
		t.Fatalf("after install: %s", b)
	}
	if code := Main(context.Background(), append([]string{"uninstall"}, args...), &out, &errb); code != 0 {
		t.Fatalf("uninstall: %d %s", code, errb.String())
	}
	b, _ = os.ReadFile(filepath.Join(conf, "10-k8s.conflist"))
	if string(b) != primary || fileExists(filepath.Join(bin, contract.PluginBinary)) {
		t.Fatalf("after uninstall: %s", b)
	}
	if code := Main(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %s", code, errb.String())
	}
}

// TestRun runs the whole agent against a fake API server and temporary CNI directories: it
// installs, becomes ready, records reports, lists pods, handles an injected pod whose network
// namespace cannot be found (deleted for its controller to recreate), and uninstalls on stop.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	conf, bin := filepath.Join(dir, "net.d"), filepath.Join(dir, "bin")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "10-k8s.conflist"), []byte(primary), 0o644)
	src := filepath.Join(dir, "sidelane-cni")
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755)
	sock := filepath.Join(dir, "run", "cni.sock")

	// An injected pod that started before the agent, with an address no namespace holds.
	id := rand.Uint32()
	ip := fmt.Sprintf("100.%d.%d.%d", 64+id%64, (id>>8)%256, 1+(id>>16)%254)
	early := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "early", UID: "uid-early",
			Annotations: map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"]}`}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}, {Name: contract.ProxyContainerName}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
	// An injected pod whose sandbox is being set up (no IP yet): the plugin asks about it.
	pending := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "pending", UID: "uid-pending",
			Annotations: map[string]string{contract.StatusAnnotation: `{"containers":["sidelane-proxy"]}`}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}, {Name: contract.ProxyContainerName}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	client := fake.NewClientset(early, pending)

	cfg, err := RunFlags([]string{"--node-name=n1", "--cni-conf-dir", conf, "--cni-bin-dir", bin, "--plugin-binary", src,
		"--install-state-dir", filepath.Join(dir, "istate"), "--state-dir", filepath.Join(dir, "state"), "--socket", sock,
		"--listen=127.0.0.1:0", "--log-level=error", "--delete-after=0s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, client) }()
	stopped := false
	stopAgent := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("agent did not stop")
		}
	}
	t.Cleanup(func() { stopAgent() })

	hc := unixhttp.Client(sock, 5*time.Second)
	get := func(path string) (int, string) {
		resp, err := hc.Get("http://agent" + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	poll := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	poll("readyz", func() bool { code, _ := get("/readyz"); return code == 200 })
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir: %v %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(filepath.Join(conf, "10-k8s.conflist"))
	if !strings.Contains(string(b), contract.PluginType) || !strings.Contains(string(b), sock) {
		t.Errorf("conflist after start: %s", b)
	}

	// The early pod cannot be repaired in place (no namespace holds its IP): it is deleted.
	poll("early pod deleted", func() bool {
		_, err := client.CoreV1().Pods("app").Get(ctx, "early", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})

	// The plugin's decision on the same socket (framed protocol): from the informer's cache,
	// without a pod GET; a uid the cache does not know is a miss, answered by one GET and counted.
	podGets := func() int {
		n := 0
		for _, a := range client.Actions() {
			if a.GetVerb() == "get" && a.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	decide := func(name, uid string) (*cnirpc.Decision, error) {
		resp, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpDecide,
			Decide: &cnirpc.DecideRequest{Namespace: "app", Name: name, UID: uid, SandboxIPs: []string{"10.0.0.9", "fd00::9"}}}, 5*time.Second)
		return resp.Decision, err
	}
	getsBefore := podGets()
	d, err := decide("pending", "uid-pending")
	if err != nil || !d.Capture || d.CacheMiss || d.Settings == nil || d.UID != "uid-pending" || strings.Join(d.Families, ",") != "ipv4,ipv6" {
		t.Fatalf("decision on a cache hit: %+v %v", d, err)
	}
	if n := podGets() - getsBefore; n != 0 {
		t.Errorf("%d pod GETs on a cache hit, want 0", n)
	}
	if d, err = decide("pending", "uid-newer"); err != nil || !d.CacheMiss || d.UID != "uid-pending" {
		t.Errorf("decision on a uid mismatch: %+v %v", d, err)
	}
	if n := podGets() - getsBefore; n != 1 {
		t.Errorf("%d pod GETs after one miss, want 1", n)
	}
	if _, err := decide("ghost", ""); err == nil || !strings.Contains(err.Error(), "not in the agent's cache") {
		t.Errorf("decision for an unknown pod: %v", err)
	}

	// Reports are recorded and listed: the framed protocol, and HTTP for older plugins.
	if _, err := cnirpc.Call(ctx, sock, cnirpc.Request{Op: cnirpc.OpReport, Report: &agentapi.Report{Event: "ADD", Namespace: "app", Name: "old", ContainerID: "c0", State: "skipped",
		Reason: "not injected", Time: time.Now(), Duration: time.Millisecond}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := unixhttp.PostReport(ctx, sock, agentapi.Report{Event: "ADD", Namespace: "app", Name: "web", ContainerID: "c1", State: "skipped", Reason: "not injected",
		Time: time.Now(), Duration: time.Millisecond}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	code, body := get("/v1/pods")
	var list agentapi.PodList
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("pods: %d %s", code, body)
	}
	if list.Node != "n1" || len(list.Items) == 0 || list.Items[len(list.Items)-1].Name != "web" {
		t.Errorf("pod list %+v", list)
	}
	code, body = get("/metrics")
	for _, want := range []string{"sidelane_agent_install_writes_total", `sidelane_agent_repairs_total{result="deleted"} 1`, `sidelane_agent_pods{state="skipped"} 2`,
		`sidelane_agent_pod_cache_misses_total{reason="uid_mismatch"} 1`, `sidelane_agent_pod_cache_misses_total{reason="not_found"} 1`, `sidelane_agent_plugin_decisions_total{result="capture"} 2`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	if err := stopAgent(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(conf, "10-k8s.conflist"))
	if string(b) != primary || fileExists(filepath.Join(bin, contract.PluginBinary)) {
		t.Errorf("after stop the plugin is still installed: %s", b)
	}
	// The record survived.
	if data, err := os.ReadFile(filepath.Join(dir, "state", "pods.json")); err != nil || !strings.Contains(string(data), `"web"`) {
		t.Errorf("record after stop: %s %v", data, err)
	}
}

func TestExitMode(t *testing.T) {
	isController := true
	dsUID := types.UID("ds-uid")
	self := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sidelane-system", Name: "agent-x",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "sidelane-agent", UID: dsUID, Controller: &isController}}}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "sidelane-system", Name: "sidelane-agent", UID: dsUID}}
	deleting := ds.DeepCopy()
	deleting.DeletionTimestamp, deleting.Finalizers = &metav1.Time{Time: time.Now()}, []string{"foregroundDeletion"}
	replaced := ds.DeepCopy()
	replaced.UID = "other"
	for _, tc := range []struct {
		name    string
		onExit  string
		objs    []runtime.Object
		podName string
		want    install.Mode
		why     string
	}{
		{"pod restart keeps", "auto", []runtime.Object{self, ds}, "agent-x", install.KeepForUpgrade, "still exists"},
		{"daemonset deleted", "auto", []runtime.Object{self}, "agent-x", install.RemoveAll, "deleted"},
		{"daemonset being deleted", "auto", []runtime.Object{self, deleting}, "agent-x", install.RemoveAll, "being deleted"},
		{"daemonset replaced", "auto", []runtime.Object{self, replaced}, "agent-x", install.RemoveAll, "replaced"},
		{"own pod unknown", "auto", []runtime.Object{self, ds}, "", install.RemoveAll, "--pod-name"},
		{"own pod gone", "auto", []runtime.Object{ds}, "agent-x", install.RemoveAll, "not found"},
		{"forced uninstall", "uninstall", []runtime.Object{self, ds}, "agent-x", install.RemoveAll, "--on-exit=uninstall"},
		{"forced keep", "keep", nil, "agent-x", install.KeepForUpgrade, "--on-exit=keep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode, why := exitMode(context.Background(), fake.NewClientset(tc.objs...), tc.onExit, "sidelane-system", tc.podName)
			if mode != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("mode %v (%s), want %v (%s)", mode, why, tc.want, tc.why)
			}
		})
	}
}

func TestListenTLSOnlyOffLoopback(t *testing.T) {
	cfg := Config{Node: "n1", Socket: filepath.Join(t.TempDir(), "cni.sock"), Listen: []string{"127.0.0.1:0", ":0"}, SelfSignedTLS: true}
	ul, tcp, err := listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	for _, l := range tcp {
		defer l.Close()
		go http.Serve(l, h)
	}
	port := func(l net.Listener) string { return fmt.Sprint(l.Addr().(*net.TCPAddr).Port) }
	plain := &http.Client{Timeout: 10 * time.Second}
	secure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := plain.Get("http://127.0.0.1:" + port(tcp[0])); err != nil || resp.StatusCode != 200 {
		t.Errorf("loopback listener over plain HTTP: %v", err)
	}
	if resp, err := secure.Get("https://127.0.0.1:" + port(tcp[1])); err != nil || resp.StatusCode != 200 {
		t.Errorf("other listener over TLS: %v", err)
	}
	if resp, err := plain.Get("http://127.0.0.1:" + port(tcp[1])); err == nil && resp.StatusCode == 200 {
		t.Error("other listener answered plain HTTP")
	}
}

// TestSelfRef: the agent's own events (a conflist fight) are about its pod when the downward
// API gave it, else about its node.
func TestSelfRef(t *testing.T) {
	cases := []struct {
		name           string
		cfg            Config
		kind, ns, want string
	}{
		{"pod", Config{Node: "n1", PodNamespace: "sidelane-system", PodName: "sidelane-agent-x"}, "Pod", "sidelane-system", "sidelane-agent-x"},
		{"no pod name", Config{Node: "n1", PodNamespace: "sidelane-system"}, "Node", "", "n1"},
		{"no pod namespace", Config{Node: "n1", PodName: "sidelane-agent-x"}, "Node", "", "n1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := selfRef(c.cfg)
			if r.Kind != c.kind || r.Namespace != c.ns || r.Name != c.want {
				t.Errorf("selfRef = %s %s/%s, want %s %s/%s", r.Kind, r.Namespace, r.Name, c.kind, c.ns, c.want)
			}
		})
	}
}
