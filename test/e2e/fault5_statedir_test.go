//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFaultStateDirUnwritable: the plugin's state dir (/var/lib/cni/sidelane) is first full
// (a 64 KiB tmpfs filled up), then read-only (a read-only bind mount). In both cases an injected
// pod's ADD fails with an error that names the path, no network namespace is left with rules,
// the pod is not Ready; once the mount is gone (space back, writable again) the pod starts
// captured.
func TestFaultStateDirUnwritable(t *testing.T) {
	e := setup(t)
	e.waitAgentReady(t)
	const dir = "/var/lib/cni/sidelane" // cniplugin.DefaultStateDir: the local overlay sets no state_dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		mount [][]string
		want  string
	}{
		{"full", [][]string{{"mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "sidelane-e2e-full", dir},
			{"sh", "-c", "dd if=/dev/zero of=" + dir + "/fill bs=4k 2>/dev/null; true"}}, "no space left on device"},
		{"readonly", [][]string{{"mount", "--bind", dir, dir}, {"mount", "-o", "remount,bind,ro", dir}}, "read-only file system"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mounted := false
			unmount := func() {
				if mounted {
					if out, err := run("umount", dir); err != nil {
						t.Errorf("umount %s: %v\n%s", dir, err, out)
					}
					mounted = false
				}
			}
			t.Cleanup(unmount)
			for i, cmd := range c.mount {
				if out, err := run(cmd[0], cmd[1:]...); err != nil {
					t.Fatalf("%v: %v\n%s", cmd, err, out)
				}
				if i == 0 {
					mounted = true
				}
			}
			ns := e.namespace(t, "e2e-state-"+c.name, true, false)
			e.waitWebhookServes(t, ns) // the injector may have restarted with an earlier fault
			start := time.Now()
			p := e.createPod(t, clientPod(ns, "s", podOpts{}))
			var msg string
			poll(t, 2*time.Minute, "a FailedCreatePodSandBox event naming "+dir, func() (bool, error) {
				evs, err := e.kube.CoreV1().Events(ns).List(ctx(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
				if err != nil {
					return false, err
				}
				for _, ev := range evs.Items {
					if ev.Reason == "FailedCreatePodSandBox" && strings.Contains(ev.Message, dir+"/") {
						msg = ev.Message
						return true, nil
					}
				}
				return false, fmt.Errorf("%d events, none FailedCreatePodSandBox naming %s", len(evs.Items), dir)
			})
			failedAfter := time.Since(start)
			if !strings.Contains(msg, c.want) {
				t.Errorf("the ADD error does not say %q: %s", c.want, msg)
			}
			if now, err := e.kube.CoreV1().Pods(ns).Get(ctx(t), p.Name, metav1.GetOptions{}); err == nil && ready(now) {
				t.Fatalf("pod became Ready while the plugin cannot write its state")
			}
			if stray := e.strayRules(t); len(stray) > 0 {
				t.Errorf("network namespaces with Sidelane rules but no running pod (half-applied): %v", stray)
			}
			unmount()
			back := time.Now()
			e.waitAllCaptured(t, ns, []string{p.Name}, podTimeout)
			figures(t, "state dir %s: ADD failed after %v naming the path (%q), no half-applied netns; mount removed: pod Ready and captured %v later",
				c.name, failedAfter.Round(time.Millisecond), msg[max(0, strings.Index(msg, "sidelane-cni:")):], time.Since(back).Round(time.Millisecond))
		})
	}
}
