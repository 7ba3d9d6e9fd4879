//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/ociimage"
	"github.com/sidelane/sidelane/internal/testenv"
)

// upgradeTag is the image tag of the helm upgrade: the same images, tagged anew in the node's
// containerd, so that every Sidelane pod is replaced.
const upgradeTag = "e2e-upgrade"

// TestHelmInstallUpgradeUninstall runs last (its file sorts after e2e_test.go): it removes the
// kustomize install, installs the chart with helm and the local images, upgrades it while pods
// run and new ones are being created, uninstalls it, and leaves Sidelane installed from the
// local overlay again.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	e := setup(t)
	helm := os.Getenv("SIDELANE_HELM")
	testenv.Require(t, helm != "", "SIDELANE_HELM unset: run hack/e2e.sh (it builds helm with hack/helm.sh)")
	ctr := strings.Fields(os.Getenv("CTR"))
	testenv.Require(t, len(ctr) > 0, "CTR unset: run hack/e2e.sh (hack/cluster.sh env sets it)")
	orig, err := os.ReadFile(filepath.Join(e.clusterDir, "run", "primary.conflist.orig"))
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(e.root, "deploy", "helm", "sidelane")
	localValues := filepath.Join(e.root, "deploy", "helm", "values-local.yaml")
	helmRun := func(args ...string) (string, error) {
		return run(helm, append([]string{"--kubeconfig", e.kubeconfig, "--namespace", systemNS}, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := helmRun("history", "sidelane")
			t.Logf("helm history:\n%s", out)
		}
		// Every test leaves Sidelane installed from the local overlay.
		if _, err := helmRun("status", "sidelane"); err == nil {
			if out, err := helmRun("uninstall", "sidelane", "--wait", "--timeout=3m"); err != nil {
				t.Errorf("cleanup: %v\n%s", err, out)
			}
		}
		e.installOverlay(t)
	})

	// The same images under the upgrade's tag.
	for _, name := range []string{"agent", "injector", "proxy"} {
		src, err := ociimage.RuntimeName("sidelane/" + name + ":dev")
		if err != nil {
			t.Fatal(err)
		}
		dst, err := ociimage.RuntimeName("sidelane/" + name + ":" + upgradeTag)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := run(ctr[0], append(ctr[1:], "images", "tag", "--force", src, dst)...); err != nil {
			t.Fatalf("tag %s as %s: %v\n%s", src, dst, err, out)
		}
	}

	// Off with the kustomize install: the primary conflist gets its bytes back.
	if out, err := e.kubectlRun("delete", "-k", filepath.Join(e.root, "deploy", "overlays", "local"), "--wait=true", "--timeout=180s"); err != nil {
		t.Fatalf("delete the kustomize install: %v\n%s", err, out)
	}
	e.waitUninstalled(t, orig, "kubectl delete -k deploy/overlays/local")

	// helm install.
	t0 := time.Now()
	if out, err := helmRun("install", "sidelane", chart, "--create-namespace", "-f", localValues, "--wait", "--timeout=5m"); err != nil {
		e.dump(t, systemNS)
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	e.waitCABundle(t)
	ns := e.namespace(t, "e2e-helm", true, true)
	e.waitWebhookServes(t, ns)
	t.Logf("helm install: ready after %v", time.Since(t0).Round(100*time.Millisecond))
	before := []*corev1.Pod{e.createPod(t, serverPod(ns, "before-0", podOpts{})), e.createPod(t, serverPod(ns, "before-1", podOpts{}))}
	for i, p := range before {
		before[i] = e.waitCaptured(t, ns, p.Name)
	}

	// helm upgrade (log levels, image tag) while those pods run; pods are created until it is done.
	t1 := time.Now()
	upgrade := exec.Command(helm, "--kubeconfig", e.kubeconfig, "--namespace", systemNS, "upgrade", "sidelane", chart,
		"-f", localValues, "--set", "image.tag="+upgradeTag,
		"--set", "agent.logLevel=debug", "--set", "injector.logLevel=debug", "--set", "proxy.logLevel=debug",
		"--wait", "--timeout=5m")
	var upgradeOut bytes.Buffer
	upgrade.Stdout, upgrade.Stderr = &upgradeOut, &upgradeOut
	if err := upgrade.Start(); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	upgradeDone := make(chan error, 1)
	go func() { upgradeDone <- upgrade.Wait() }()
	var (
		during       []string // pods created while the upgrade ran
		inRollout    []string // of those, created while a Sidelane pod was being replaced
		refused      []string // creations refused (webhook unreachable)
		upgradeErr   error
		upgradeEnded bool
	)
	// Until helm is done and no Sidelane pod is being replaced any more.
	var helmTook time.Duration
	for i := 0; !upgradeEnded || (upgradeErr == nil && e.rollingOut(t) != ""); i++ {
		if time.Since(t1) > 6*time.Minute {
			e.dump(t, systemNS)
			t.Fatalf("the upgrade's rollout is not over after 6 min (%s)", e.rollingOut(t))
		}
		rolling := e.rollingOut(t)
		name := fmt.Sprintf("during-%d", i)
		_, err := e.kube.CoreV1().Pods(ns).Create(ctx(t), serverPod(ns, name, podOpts{}), metav1.CreateOptions{})
		if err != nil {
			refused = append(refused, name+": "+err.Error())
		} else {
			during = append(during, name)
			if rolling != "" {
				inRollout = append(inRollout, name+" ("+rolling+")")
			}
		}
		// Pace the creations by the pod just created: wait until it has been scheduled and
		// its sandbox set up (or a second passes), then create the next.
		started := e.podStarted(ns, name, time.Second)
		if upgradeEnded {
			<-started
			continue
		}
		select {
		case upgradeErr = <-upgradeDone:
			upgradeEnded, helmTook = true, time.Since(t1)
		case <-started:
		}
	}
	if upgradeErr != nil {
		e.dump(t, systemNS)
		t.Fatalf("helm upgrade: %v\n%s", upgradeErr, upgradeOut.String())
	}
	t.Logf("helm upgrade: returned after %v, rollout over after %v; %d pods created meanwhile, %d of them while a Sidelane pod was being replaced: %v",
		helmTook.Round(100*time.Millisecond), time.Since(t1).Round(100*time.Millisecond), len(during), len(inRollout), inRollout)
	if len(refused) > 0 {
		t.Errorf("pod creations refused during the upgrade: %v", refused)
	}
	if len(inRollout) == 0 {
		t.Errorf("no pod was created while the agent or the injector was being replaced (the test proves nothing)")
	}

	// The new Sidelane runs the upgrade's images and values.
	ds, err := e.kube.AppsV1().DaemonSets(systemNS).Get(ctx(t), agentDS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agentC := ds.Spec.Template.Spec.Containers[0]
	if !strings.HasSuffix(agentC.Image, ":"+upgradeTag) || !slices.Contains(agentC.Args, "--log-level=debug") {
		t.Errorf("agent after the upgrade: image %s args %v, want tag %s and --log-level=debug", agentC.Image, agentC.Args, upgradeTag)
	}
	agentPod := e.waitAgentReady(t)
	if got := agentPod.Spec.Containers[0].Image; !strings.HasSuffix(got, ":"+upgradeTag) {
		t.Errorf("agent pod %s runs %s, want tag %s", agentPod.Name, got, upgradeTag)
	}

	// Every pod, running before or created during the upgrade, is captured; the running ones
	// were never restarted nor replaced.
	for _, p := range before {
		now := e.waitCaptured(t, ns, p.Name)
		if now.UID != p.UID || restarts(now) != 0 {
			t.Errorf("pod %s was disturbed by the upgrade: uid %s -> %s, restarts %d", p.Name, p.UID, now.UID, restarts(now))
		}
	}
	for _, name := range during {
		e.waitCaptured(t, ns, name)
	}
	all := append([]string{before[0].Name, before[1].Name}, during...)
	poll(t, 90*time.Second, "the upgraded agent records every pod as captured", func() (bool, error) {
		l, err := agentPods(t)
		if err != nil {
			return false, err
		}
		for _, name := range all {
			if r, ok := findRecord(l, ns, name); !ok || r.State != agentapi.StateCaptured {
				return false, fmt.Errorf("pod %s: record %+v (found %v)", name, r, ok)
			}
		}
		return true, nil
	})
	// Pods created after the upgrade get the proxy of the new template, once no old injector
	// answers any more (a stopping one keeps answering with the old template for a few seconds).
	took := poll(t, 90*time.Second, "the injector injects the upgrade's proxy image", func() (bool, error) {
		p, err := e.kube.CoreV1().Pods(ns).Create(ctx(t), serverPod(ns, "dry-run", podOpts{}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		img := proxyImage(p)
		return strings.HasSuffix(img, ":"+upgradeTag), fmt.Errorf("proxy image %q", img)
	})
	t.Logf("the upgrade's proxy image is injected (waited %v more for it)", took.Round(100*time.Millisecond))
	after := e.waitCaptured(t, ns, e.createPod(t, serverPod(ns, "after", podOpts{})).Name)
	if img := proxyImage(after); !strings.HasSuffix(img, ":"+upgradeTag) {
		t.Errorf("pod created after the upgrade has proxy image %q, want tag %s", img, upgradeTag)
	}

	// helm uninstall: the conflist is byte-identical to before; new pods start without Sidelane.
	if out, err := helmRun("uninstall", "sidelane", "--wait", "--timeout=3m"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	e.waitUninstalled(t, orig, "helm uninstall")
	plain := e.waitReady(t, ns, e.createPod(t, serverPod(ns, "uninstalled", podOpts{})).Name)
	if hasContainer(plain, contract.ProxyContainerName) {
		t.Errorf("pod created after helm uninstall was injected")
	}
	netns := podNetns(t, plain.Status.PodIP)
	if none, err := uncaptured(netns); err != nil || !none {
		t.Errorf("pod created after helm uninstall has Sidelane rules (%v):\n%s", err, netnsRules(netns))
	}
}

// waitCaptured waits until the pod is Ready, injected, and has Sidelane's rules in its netns.
func (e *env) waitCaptured(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := e.waitReady(t, ns, name)
	if !hasContainer(p, contract.ProxyContainerName) {
		t.Fatalf("pod %s has no %s container", name, contract.ProxyContainerName)
	}
	netns := podNetns(t, p.Status.PodIP)
	if err := captured(netns, p); err != nil {
		t.Fatalf("pod %s is Ready but its network namespace %s does not hold its Sidelane rules: %v\n%s", name, netns, err, netnsRules(netns))
	}
	return p
}

func proxyImage(p *corev1.Pod) string {
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == contract.ProxyContainerName {
			return c.Image
		}
	}
	return ""
}

// rollingOut names the Sidelane workloads whose pods are being replaced right now ("agent",
// "injector", "agent+injector"), or "".
func (e *env) rollingOut(t *testing.T) string {
	var rolling []string
	ds, err := e.kube.AppsV1().DaemonSets(systemNS).Get(ctx(t), agentDS, metav1.GetOptions{})
	if err == nil && (ds.Status.ObservedGeneration < ds.Generation || ds.Status.UpdatedNumberScheduled < ds.Status.DesiredNumberScheduled ||
		ds.Status.NumberAvailable < ds.Status.DesiredNumberScheduled) {
		rolling = append(rolling, "agent")
	}
	d, err := e.kube.AppsV1().Deployments(systemNS).Get(ctx(t), "sidelane-injector", metav1.GetOptions{})
	if err == nil && d.Spec.Replicas != nil && (d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < *d.Spec.Replicas ||
		d.Status.Replicas > *d.Spec.Replicas || d.Status.AvailableReplicas < *d.Spec.Replicas) {
		rolling = append(rolling, "injector")
	}
	return strings.Join(rolling, "+")
}

// podStarted is closed when the pod has an IP (its sandbox, and so the CNI ADD, is done), or
// after at most max.
func (e *env) podStarted(ns, name string, max time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, cancel := context.WithTimeout(context.Background(), max)
		defer cancel()
		w, err := e.kube.CoreV1().Pods(ns).Watch(c, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
		if err != nil {
			<-c.Done()
			return
		}
		defer w.Stop()
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.PodIP != "" {
				return
			}
		}
	}()
	return done
}

// waitUninstalled waits until no agent pod is left, then checks that the primary conflist is
// byte-identical to before any install and that the plugin's files are gone.
func (e *env) waitUninstalled(t *testing.T, orig []byte, how string) {
	t.Helper()
	poll(t, 180*time.Second, how+": the agent pods are gone", func() (bool, error) {
		l, err := e.kube.CoreV1().Pods(systemNS).List(ctx(t), metav1.ListOptions{LabelSelector: agentSelector})
		return err == nil && len(l.Items) == 0, err
	})
	path, cur := e.conflist(t)
	if !bytes.Equal(cur, orig) {
		t.Errorf("after %s the primary conflist %s differs from before the install:\n--- before\n%s\n--- now\n%s", how, path, orig, cur)
	}
	if _, err := os.Stat(filepath.Join(e.cniBinDir, contract.PluginBinary)); !os.IsNotExist(err) {
		t.Errorf("after %s %s is still in %s (stat: %v)", how, contract.PluginBinary, e.cniBinDir, err)
	}
	// The harness put only the primary conflist into the conf dir; nothing of ours may be left.
	entries, err := os.ReadDir(e.cniConfDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Name() != filepath.Base(path) {
			t.Errorf("after %s %s is left in %s", how, en.Name(), e.cniConfDir)
		}
	}
	if _, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), "sidelane-injector", metav1.GetOptions{}); err == nil {
		t.Errorf("after %s the MutatingWebhookConfiguration sidelane-injector is still there", how)
	}
}

// waitCABundle waits until the injector has filled in the caBundle of its webhook configuration.
func (e *env) waitCABundle(t *testing.T) {
	t.Helper()
	poll(t, 120*time.Second, "the injector sets the caBundle of its webhook configuration", func() (bool, error) {
		w, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx(t), "sidelane-injector", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, h := range w.Webhooks {
			if len(h.ClientConfig.CABundle) == 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitWebhookServes waits until the API server reaches the injector through its Service (a
// new Service's address answers once kube-proxy has programmed it, a little after the injector
// is ready): a server-side dry run of a pod in the labelled namespace ns comes back injected.
func (e *env) waitWebhookServes(t *testing.T, ns string) {
	t.Helper()
	poll(t, 60*time.Second, "the API server reaches the injector", func() (bool, error) {
		p, err := e.kube.CoreV1().Pods(ns).Create(ctx(t), serverPod(ns, "dry-run", podOpts{}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		return hasContainer(p, contract.ProxyContainerName), fmt.Errorf("dry-run pod not injected")
	})
}

// installOverlay installs Sidelane from deploy/overlays/local (the images are already in the
// node's containerd) and waits until it is ready, as hack/install-local.sh does.
func (e *env) installOverlay(t *testing.T) {
	t.Helper()
	if out, err := e.kubectlRun("apply", "-k", filepath.Join(e.root, "deploy", "overlays", "local")); err != nil {
		t.Errorf("install from deploy/overlays/local: %v\n%s", err, out)
		return
	}
	for _, w := range []string{"ds/" + agentDS, "deploy/sidelane-injector"} {
		if out, err := e.kubectlRun("-n", systemNS, "rollout", "status", w, "--timeout=180s"); err != nil {
			t.Errorf("install from deploy/overlays/local: %s: %v\n%s", w, err, out)
		}
	}
	e.waitCABundle(t)
}
