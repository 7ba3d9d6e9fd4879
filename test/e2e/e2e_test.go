//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/demoapp"
)

// The tests run in this order (one file, source order): the disruptive ones (agent restart,
// agent stopped, agent rollout, DaemonSet deleted) come last and leave Sidelane installed again.

func TestInjectedPodRunsUnderRestricted(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-inject", true, true)
	p := e.createPod(t, serverPod(ns, "server", podOpts{}))
	p = e.waitReady(t, ns, p.Name)

	if !hasContainer(p, contract.ProxyContainerName) {
		t.Fatalf("pod has no %s container: injection did not happen", contract.ProxyContainerName)
	}
	raw, ok := p.Annotations[contract.StatusAnnotation]
	if !ok {
		t.Fatalf("pod has no %s annotation", contract.StatusAnnotation)
	}
	var st contract.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("%s is not JSON: %v (%q)", contract.StatusAnnotation, err, raw)
	}
	if st.Version == "" || (len(st.Containers) == 0 && len(st.InitContainers) == 0) {
		t.Errorf("%s = %q: want the injected container names and the injector version", contract.StatusAnnotation, raw)
	}
	// Nothing in the pod asks for privileges: no capability added, no privileged container,
	// no init container other than the proxy itself (native sidecar).
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		sc := c.SecurityContext
		if sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s adds capabilities %v", c.Name, sc.Capabilities.Add)
		}
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name != contract.ProxyContainerName {
			t.Errorf("unexpected init container %s", c.Name)
		}
	}
	redirectAnnotations := 0
	for k := range p.Annotations {
		if strings.HasPrefix(k, "redirect.sidelane.io/") {
			redirectAnnotations++
		}
	}
	if redirectAnnotations == 0 {
		t.Errorf("pod has no redirect.sidelane.io/* annotations: %v", p.Annotations)
	}
	netns := podNetns(t, p.Status.PodIP)
	if err := captured(netns, p); err != nil {
		t.Fatalf("pod %s is Ready but its network namespace %s does not hold its Sidelane rules: %v\n%s", p.Name, netns, err, netnsRules(netns))
	}
	poll(t, 30*time.Second, "the agent records the pod as captured", func() (bool, error) {
		l, err := agentPods(t)
		if err != nil {
			return false, err
		}
		r, ok := findRecord(l, ns, p.Name)
		if !ok {
			return false, fmt.Errorf("no record among %d", len(l.Items))
		}
		return r.State == agentapi.StateCaptured && r.UID == string(p.UID), fmt.Errorf("record %+v", r)
	})
}

// reply calls url from the client pod and decodes the demo server's answer.
func reply(t *testing.T, e *env, ns, client, u string) demoapp.Reply {
	t.Helper()
	out := e.get(t, ns, client, u)
	// demo-app get prints "200 {json}".
	_, body, _ := strings.Cut(strings.TrimSpace(out), " ")
	var r demoapp.Reply
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("GET %s: answer %q: %v", u, out, err)
	}
	return r
}

func TestTrafficGoesThroughBothProxies(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-traffic", true, true)
	e.createPod(t, serverPod(ns, "server", podOpts{}))
	e.createPod(t, clientPod(ns, "client", podOpts{}))
	server := e.waitReady(t, ns, "server")
	client := e.waitReady(t, ns, "client")

	before := map[string]float64{}
	for k, v := range metrics(t, client.Status.PodIP) {
		before["client:"+k] = v
	}
	for k, v := range metrics(t, server.Status.PodIP) {
		before["server:"+k] = v
	}
	r := reply(t, e, ns, "client", fmt.Sprintf("http://%s:8080/through-both", server.Status.PodIP))
	// Inbound capture: the server's own proxy forwarded the request, from 127.0.0.6.
	if host, _, _ := net.SplitHostPort(r.Client); host != contract.InboundPassthroughIPv4 {
		t.Errorf("server saw the request from %s, want %s (forwarded by its proxy)", r.Client, contract.InboundPassthroughIPv4)
	}
	checks := []struct{ who, ip, key string }{
		{"client", client.Status.PodIP, "sidelane_proxy_requests_total/outbound"},
		{"client", client.Status.PodIP, "sidelane_proxy_connections_total/outbound"},
		{"server", server.Status.PodIP, "sidelane_proxy_requests_total/inbound"},
		{"server", server.Status.PodIP, "sidelane_proxy_connections_total/inbound"},
	}
	for _, c := range checks {
		got := waitMetric(t, c.ip, c.key, before[c.who+":"+c.key])
		t.Logf("%s proxy %s: %v -> %v", c.who, c.key, before[c.who+":"+c.key], got)
	}
	// Each proxy wrote an access-log line for the request.
	for _, pod := range []string{"client", "server"} {
		poll(t, 30*time.Second, pod+" proxy access log has the request", func() (bool, error) {
			out, err := e.kubectlRun("-n", ns, "logs", pod, "-c", contract.ProxyContainerName)
			return err == nil && strings.Contains(out, "/through-both"), err
		})
	}
}

func TestExcludedInboundPortBypassesTheProxy(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-exclude", true, true)
	e.createPod(t, serverPod(ns, "server", podOpts{annotations: map[string]string{
		contract.AnnotationExcludeInboundPorts: "9090",
	}}))
	e.createPod(t, clientPod(ns, "client", podOpts{}))
	server := e.waitReady(t, ns, "server")
	client := e.waitReady(t, ns, "client")

	// Port 8080 is captured: the server sees its proxy.
	r := reply(t, e, ns, "client", fmt.Sprintf("http://%s:8080/captured", server.Status.PodIP))
	if host, _, _ := net.SplitHostPort(r.Client); host != contract.InboundPassthroughIPv4 {
		t.Errorf("port 8080: server saw %s, want %s", r.Client, contract.InboundPassthroughIPv4)
	}
	key := "sidelane_proxy_connections_total/inbound"
	before := waitMetric(t, server.Status.PodIP, key, 0)
	// Port 9090 is excluded: the connection arrives straight from the client pod.
	r = reply(t, e, ns, "client", fmt.Sprintf("http://%s:9090/excluded", server.Status.PodIP))
	if host, _, _ := net.SplitHostPort(r.Client); host != client.Status.PodIP {
		t.Errorf("port 9090 (excluded): server saw %s, want the client pod %s", r.Client, client.Status.PodIP)
	}
	if after := metrics(t, server.Status.PodIP)[key]; after != before {
		t.Errorf("server proxy %s went from %v to %v for an excluded port", key, before, after)
	}
}

func TestOptedOutPodIsNotCaptured(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-optout", true, true)
	p := e.createPod(t, serverPod(ns, "plain", podOpts{labels: map[string]string{contract.InjectLabel: "false"}}))
	p = e.waitReady(t, ns, p.Name)
	if hasContainer(p, contract.ProxyContainerName) {
		t.Errorf("opted-out pod got a %s container", contract.ProxyContainerName)
	}
	if _, ok := p.Annotations[contract.StatusAnnotation]; ok {
		t.Errorf("opted-out pod has the %s annotation", contract.StatusAnnotation)
	}
	netns := podNetns(t, p.Status.PodIP)
	if none, err := uncaptured(netns); err != nil || !none {
		t.Errorf("opted-out pod's network namespace has Sidelane rules (%v):\n%s", err, netnsRules(netns))
	}
	if l, err := agentPods(t); err == nil {
		if r, ok := findRecord(l, ns, p.Name); ok && r.State == agentapi.StateCaptured {
			t.Errorf("agent records the opted-out pod as captured: %+v", r)
		}
	}
}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

func TestCheckDetectsTamperedRules(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-check", true, true)
	// Repair is off for this pod (sidelane.io/repair): the agent records drift and leaves the
	// tampered rules as they are, so what check reads does not race the agent's repair.
	p := e.createPod(t, serverPod(ns, "server", podOpts{annotations: map[string]string{contract.RepairAnnotation: "off"}}))
	p = e.waitReady(t, ns, p.Name)

	poll(t, 60*time.Second, "kubectl sidelane check exits 0 on a healthy cluster", func() (bool, error) {
		out, code := e.plugin(t, "check")
		return code == 0, fmt.Errorf("exit %d: %s", code, out)
	})

	// Tamper from the host: enter the pod's netns and delete one of our rules.
	netns := podNetns(t, p.Status.PodIP)
	listing, err := run("nsenter", "--net="+netns, "nft", "-a", "list", "table", "ip", contract.NFTablesTableName)
	if err != nil {
		t.Fatalf("list our table in the pod's netns: %v", err)
	}
	chain, handle := "", ""
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "chain" {
			chain = f[1]
			continue
		}
		if m := handleRE.FindStringSubmatch(line); m != nil && chain != "" && !strings.Contains(line, "type ") &&
			(strings.Contains(line, "redirect") || strings.Contains(line, "jump") || strings.Contains(line, "return")) {
			handle = m[1]
			break
		}
	}
	if handle == "" {
		t.Fatalf("no rule to delete in:\n%s", listing)
	}
	if _, err := run("nsenter", "--net="+netns, "nft", "delete", "rule", "ip", contract.NFTablesTableName, chain, "handle", handle); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	t.Logf("deleted rule handle %s of chain %s in %s", handle, chain, netns)
	out, code := e.plugin(t, "check")
	if code == 0 {
		t.Fatalf("kubectl sidelane check exits 0 after a rule was deleted:\n%s", out)
	}
	t.Logf("check after tampering (exit %d):\n%s", code, out)
}

func TestPrimaryConflistRewrittenGetsOurEntryBack(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	path, cur := e.conflist(t)
	if !hasOurEntry(cur) {
		t.Fatalf("primary conflist %s has no %s entry before the test:\n%s", path, contract.PluginType, cur)
	}
	orig, err := os.ReadFile(filepath.Join(e.clusterDir, "run", "primary.conflist.orig"))
	if err != nil {
		t.Fatal(err)
	}
	// The primary CNI rewrites its file (as e.g. a primary's own installer does on restart).
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	took := poll(t, 30*time.Second, "our entry is back in the primary conflist", func() (bool, error) {
		b, err := os.ReadFile(path)
		return err == nil && hasOurEntry(b), err
	})
	t.Logf("entry back after %v", took)
}

func TestAgentRestartKeepsRecords(t *testing.T) {
	e := setup(t)
	ns := e.namespace(t, "e2e-restart", true, false)
	p := e.createPod(t, serverPod(ns, "server", podOpts{}))
	p = e.waitReady(t, ns, p.Name)
	poll(t, 30*time.Second, "the agent has a captured record of the pod", func() (bool, error) {
		l, err := agentPods(t)
		r, ok := findRecord(l, ns, p.Name)
		return err == nil && ok && r.State == agentapi.StateCaptured, err
	})
	old := e.waitAgentReady(t)
	if err := e.kube.CoreV1().Pods(systemNS).Delete(ctx(t), old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete agent pod: %v", err)
	}
	poll(t, podTimeout, "a new agent pod is ready", func() (bool, error) {
		np := e.waitAgentReady(t)
		return np.UID != old.UID, nil
	})
	l, err := agentPods(t)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := findRecord(l, ns, p.Name)
	if !ok || r.UID != string(p.UID) || r.State != agentapi.StateCaptured {
		t.Fatalf("after the agent restarted: record %+v (found %v), want captured with uid %s", r, ok, p.UID)
	}
	// The pod was not touched.
	now, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), p.Name, metav1.GetOptions{})
	if err != nil || now.UID != p.UID || restarts(now) != 0 {
		t.Fatalf("pod changed across the agent restart: %v uid %s restarts %d", err, now.UID, restarts(now))
	}
}

// TestNoPodGetOnCacheHit: 20 injected pods start captured and the CNI plugin's path reads none
// of them from the API server: the plugin holds no credential, and the agent answers from its
// informer. The API server's audit log (hack/cluster.sh logs every pod GET with its user) shows
// the agent's GETs of these pods to be at most its own cache-miss count.
func TestNoPodGetOnCacheHit(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	audit := filepath.Join(e.clusterDir, "logs", "audit.log")
	fi, err := os.Stat(audit)
	if err != nil {
		t.Fatalf("the API server's audit log %s: %v (a cluster started by an older hack/cluster.sh? restart it)", audit, err)
	}
	auditFrom := fi.Size()
	ns := e.namespace(t, "e2e-noget", true, false)
	missesBefore := agentMetricSum(t, "sidelane_agent_pod_cache_misses_total")
	getsBefore := e.apiserverPodGets(t)
	const n = 20
	var names []string
	for i := range n {
		names = append(names, e.createPod(t, serverPod(ns, fmt.Sprintf("web-%d", i), podOpts{})).Name)
	}
	for _, name := range names {
		p := e.waitReady(t, ns, name)
		netns := podNetns(t, p.Status.PodIP)
		if err := captured(netns, p); err != nil {
			t.Errorf("pod %s not captured: %v\n%s", name, err, netnsRules(netns))
		}
	}
	misses := agentMetricSum(t, "sidelane_agent_pod_cache_misses_total") - missesBefore
	byUser := auditPodGets(t, audit, auditFrom, ns)
	agentGets := byUser["system:serviceaccount:"+systemNS+":sidelane-agent"]
	t.Logf("%d pods: agent cache misses %v, pod GETs of them by user %v; apiserver_request_total{resource=pods,verb=get} delta %v (all users, kubelet and this test included)",
		n, misses, byUser, e.apiserverPodGets(t)-getsBefore)
	if float64(agentGets) > misses {
		t.Errorf("the agent GET %d of the pods but counted %v cache misses: the plugin path read pods it had cached", agentGets, misses)
	}
	for user, c := range byUser {
		if strings.HasPrefix(user, "system:serviceaccount:"+systemNS+":") && user != "system:serviceaccount:"+systemNS+":sidelane-agent" {
			t.Errorf("%s (a Sidelane identity other than the agent) GET the pods %d times", user, c)
		}
	}
}

// TestAgentDownPodsWaitThenStartCaptured stops the agent (its DaemonSet still exists, so the
// plugin stays installed): an injected pod waits (the plugin answers CNI error 11 naming the
// socket, the kubelet retries) and starts captured once the agent is back; a pod of an excluded
// namespace starts during the outage.
func TestAgentDownPodsWaitThenStartCaptured(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	start := func() {
		e.kubectlRun("-n", systemNS, "patch", "daemonset", agentDS, "--type=json",
			"-p", `[{"op":"remove","path":"/spec/template/spec/nodeSelector/sidelane-e2e-agent"}]`)
	}
	if out, err := e.kubectlRun("-n", systemNS, "patch", "daemonset", agentDS, "--type=merge",
		"-p", `{"spec":{"template":{"spec":{"nodeSelector":{"sidelane-e2e-agent":"stopped"}}}}}`); err != nil {
		t.Fatalf("stop the agent: %v\n%s", err, out)
	}
	t.Cleanup(func() { start(); e.waitAgentReady(t) })
	poll(t, 120*time.Second, "the agent pods are gone", func() (bool, error) {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		return err == nil && len(l.Items) == 0, err
	})
	if _, cur := e.conflist(t); !hasOurEntry(cur) {
		t.Fatalf("the plugin was uninstalled while its DaemonSet exists:\n%s", cur)
	}

	ns := e.namespace(t, "e2e-agentdown", true, false)
	p := e.createPod(t, serverPod(ns, "server", podOpts{}))
	excluded := serverPod("kube-system", "e2e-excluded-"+randSuffix(), podOpts{})
	excluded = e.createPod(t, excluded)
	t.Cleanup(func() {
		e.kube.CoreV1().Pods("kube-system").Delete(context.Background(), excluded.Name, metav1.DeleteOptions{})
	})
	e.waitReady(t, "kube-system", excluded.Name)

	// The injected pod's sandbox fails with the plugin's "try again later" naming the socket.
	poll(t, 90*time.Second, "a FailedCreatePodSandBox event naming the agent socket", func() (bool, error) {
		if now, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), p.Name, metav1.GetOptions{}); err == nil && ready(now) {
			t.Fatalf("injected pod became Ready while the agent was down")
		}
		evs, err := e.kube.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			return false, err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "FailedCreatePodSandBox" && strings.Contains(ev.Message, contract.DefaultAgentSocket) {
				t.Logf("while the agent is down: %s", tail(ev.Message, 3))
				return true, nil
			}
		}
		return false, nil
	})
	start()
	e.waitAgentReady(t)
	p = e.waitReady(t, ns, p.Name)
	netns := podNetns(t, p.Status.PodIP)
	if err := captured(netns, p); err != nil {
		t.Fatalf("pod started after the outage without its Sidelane rules: %v\n%s", err, netnsRules(netns))
	}
}

// TestRolloutRestartPodsEndCaptured: during `kubectl rollout restart` of the agent every pod
// created in a labelled namespace ends captured; no Sidelane credential file is under the CNI
// conf dir.
func TestRolloutRestartPodsEndCaptured(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	noCredentials(t, e.cniConfDir)
	ns := e.namespace(t, "e2e-rollout", true, false)
	old := e.waitAgentReady(t)
	if out, err := e.kubectlRun("-n", systemNS, "rollout", "restart", "daemonset/"+agentDS); err != nil {
		t.Fatalf("rollout restart: %v\n%s", err, out)
	}
	var names []string
	create := func() {
		names = append(names, e.createPod(t, serverPod(ns, fmt.Sprintf("web-%d", len(names)), podOpts{})).Name)
	}
	create()
	// More pods while the old agent is going away and the new one is not ready yet.
	poll(t, podTimeout, "the old agent pod is gone", func() (bool, error) {
		if len(names) < 4 {
			create()
		}
		_, err := e.kube.CoreV1().Pods(systemNS).Get(ctx(t), old.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	create()
	if out, err := e.kubectlRun("-n", systemNS, "rollout", "status", "daemonset/"+agentDS, "--timeout=180s"); err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	create()
	t.Logf("%d pods created during the rollout", len(names))
	for _, name := range names {
		p := e.waitReady(t, ns, name)
		netns := podNetns(t, p.Status.PodIP)
		if err := captured(netns, p); err != nil {
			t.Errorf("pod %s created during the rollout is not captured: %v\n%s", name, err, netnsRules(netns))
		}
	}
	noCredentials(t, e.cniConfDir)
}

// noCredentials fails when a Sidelane credential file is under the CNI conf dir.
func noCredentials(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		name := d.Name()
		if slices.Contains(contract.LegacyCredentialFiles, name) || (strings.Contains(name, "sidelane") && !strings.HasSuffix(name, ".conflist")) {
			t.Errorf("Sidelane file %s under the CNI conf dir (the plugin holds no credential)", path)
		}
		return nil
	})
}

// TestUninstallAndRepair deletes the DaemonSet (the agent uninstalls: conflist exactly as
// before, binary gone, new pods start fine), creates an injected pod while Sidelane is absent,
// then installs the agent again and expects that pod repaired in place within 10 s.
func TestUninstallAndRepair(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	orig, err := os.ReadFile(filepath.Join(e.clusterDir, "run", "primary.conflist.orig"))
	if err != nil {
		t.Fatal(err)
	}
	reinstall := func() {
		if out, err := e.kubectlRun("apply", "-k", filepath.Join(e.root, "deploy", "overlays", "local")); err != nil {
			t.Errorf("reinstall: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() {
		if _, err := e.kube.AppsV1().DaemonSets(systemNS).Get(ctx(t), agentDS, metav1.GetOptions{}); err != nil {
			reinstall()
		}
	})

	if out, err := e.kubectlRun("-n", systemNS, "delete", "daemonset", agentDS, "--wait=true", "--timeout=120s"); err != nil {
		t.Fatalf("delete DaemonSet: %v\n%s", err, out)
	}
	poll(t, 120*time.Second, "the agent pods are gone", func() (bool, error) {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		return err == nil && len(l.Items) == 0, err
	})
	path, cur := e.conflist(t)
	if !bytes.Equal(cur, orig) {
		t.Errorf("after uninstall the primary conflist %s differs from before the install:\n--- before\n%s\n--- now\n%s", path, orig, cur)
	}
	if _, err := os.Stat(filepath.Join(e.cniBinDir, contract.PluginBinary)); !os.IsNotExist(err) {
		t.Errorf("after uninstall %s is still in %s (stat: %v)", contract.PluginBinary, e.cniBinDir, err)
	}
	noCredentials(t, e.cniConfDir)

	// New pods start fine without Sidelane; an injected one runs uncaptured for now.
	plainNS := e.namespace(t, "e2e-plain", false, true)
	e.createPod(t, serverPod(plainNS, "plain", podOpts{}))
	ns := e.namespace(t, "e2e-repair", true, true)
	early := e.createPod(t, serverPod(ns, "early", podOpts{}))
	e.waitReady(t, plainNS, "plain")
	early = e.waitReady(t, ns, early.Name)
	netns := podNetns(t, early.Status.PodIP)
	if none, err := uncaptured(netns); err != nil || !none {
		t.Fatalf("pod created without Sidelane installed has rules already (%v):\n%s", err, netnsRules(netns))
	}

	// Install the agent again: the early pod is repaired in place.
	reinstall()
	var started time.Time
	poll(t, podTimeout, "the new agent container is running", func() (bool, error) {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Running != nil {
					started = s.State.Running.StartedAt.Time
					return true, nil
				}
			}
		}
		return false, fmt.Errorf("%d agent pods, none running", len(l.Items))
	})
	poll(t, 60*time.Second, "the early pod is captured", func() (bool, error) {
		err := captured(netns, early)
		return err == nil, err
	})
	// StartedAt has one-second resolution (rounded down), so this may overstate by up to 1 s.
	took := time.Since(started)
	t.Logf("early pod repaired %v after the agent container started", took.Round(100*time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("repair took %v after the agent started, want ≤ 10 s", took)
	}
	now, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), early.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.UID != early.UID || restarts(now) != 0 {
		t.Errorf("repair was not in place: uid %s -> %s, restarts %d", early.UID, now.UID, restarts(now))
	}
	e.waitAgentReady(t)
	_, cur = e.conflist(t)
	if !hasOurEntry(cur) {
		t.Errorf("after reinstall the primary conflist has no %s entry:\n%s", contract.PluginType, cur)
	}
}

// TestAgentDeletesOnlyPodsOfItsNode: with the agent's own (pod-bound) token, deleting a pod of
// another node is refused by the ValidatingAdmissionPolicy; a pod of its node may be deleted.
func TestAgentDeletesOnlyPodsOfItsNode(t *testing.T) {
	e := setup(t)
	agent := e.waitAgentReady(t)
	secs := int64(600)
	tr, err := e.kube.CoreV1().ServiceAccounts(systemNS).CreateToken(ctx(t), agent.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agent.Name, UID: agent.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the agent: %v", err)
	}
	admin, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	asAgent := rest.AnonymousClientConfig(admin)
	asAgent.BearerToken = tr.Status.Token
	agentClient, err := kubernetes.NewForConfig(asAgent)
	if err != nil {
		t.Fatal(err)
	}

	ns := e.namespace(t, "e2e-nodepolicy", false, false)
	here := serverPod(ns, "here", podOpts{})
	e.createPod(t, here)
	elsewhere := serverPod(ns, "elsewhere", podOpts{})
	elsewhere.Spec.NodeName = "sidelane-e2e-other-node" // never runs: no such node
	e.createPod(t, elsewhere)
	t.Cleanup(func() { // no kubelet will ever confirm its deletion
		zero := int64(0)
		e.kube.CoreV1().Pods(ns).Delete(context.Background(), "elsewhere", metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})

	err = agentClient.CoreV1().Pods(ns).Delete(ctx(t), "elsewhere", metav1.DeleteOptions{})
	if err == nil || !strings.Contains(err.Error(), "only delete pods of its own node") {
		t.Errorf("agent deleting a pod of another node: %v, want a refusal by the policy", err)
	}
	if err := agentClient.CoreV1().Pods(ns).Delete(ctx(t), "here", metav1.DeleteOptions{}); err != nil {
		t.Errorf("agent deleting a pod of its own node: %v", err)
	}
}

// TestInjectorIsRestrictedCompliant: the injector's pod template passes the "restricted" Pod
// Security Standard (checked by the API server's admission with a server-side dry run).
func TestInjectorIsRestrictedCompliant(t *testing.T) {
	e := setup(t)
	d, err := e.kube.AppsV1().Deployments(systemNS).Get(ctx(t), "sidelane-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := e.namespace(t, "e2e-psa", false, true)
	spec := d.Spec.Template.Spec.DeepCopy()
	// Only what Pod Security judges matters: drop references to objects of sidelane-system.
	spec.ServiceAccountName, spec.DeprecatedServiceAccount, spec.PriorityClassName, spec.Priority = "", "", "", nil
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "injector-dry-run", Namespace: ns}, Spec: *spec}
	if _, err := e.kube.CoreV1().Pods(ns).Create(ctx(t), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("the injector's pod is refused in a restricted namespace: %v", err)
	}
	// The check can fail: the agent's pod template is refused there.
	ds, err := e.kube.AppsV1().DaemonSets(systemNS).Get(ctx(t), agentDS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	aspec := ds.Spec.Template.Spec.DeepCopy()
	aspec.ServiceAccountName, aspec.DeprecatedServiceAccount, aspec.PriorityClassName, aspec.Priority = "", "", "", nil
	ap := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-dry-run", Namespace: ns}, Spec: *aspec}
	_, err = e.kube.CoreV1().Pods(ns).Create(ctx(t), ap, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Errorf("the agent's pod in a restricted namespace: %v, want a PodSecurity refusal (else the check proves nothing)", err)
	}
}
