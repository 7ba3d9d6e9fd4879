package podwatch

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/agentapi"
	"github.com/sidelane/sidelane/internal/contract"
)

func mkPod(ns, name string, injected bool, mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}, Labels: map[string]string{}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.7", PodIPs: []corev1.PodIP{{IP: "10.1.0.7"}, {IP: "fd00::7"}}},
	}
	if injected {
		p.Annotations[contract.StatusAnnotation] = `{"containers":["sidelane-proxy"],"version":"test"}`
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: contract.ProxyContainerName})
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func TestPodInfo(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	excluded := contract.DefaultExcludeNamespaces
	for _, tc := range []struct {
		name         string
		pod          *corev1.Pod
		injected     bool
		running      bool
		settingsErr  bool
		wantInbound  uint16
		wantIPsCount int
	}{
		{name: "injected", pod: mkPod("app", "a", true, nil), injected: true, running: true, wantInbound: 15006, wantIPsCount: 2},
		{name: "not injected", pod: mkPod("app", "a", false, nil), running: true, wantIPsCount: 2},
		{name: "status without proxy", pod: mkPod("app", "a", false, func(p *corev1.Pod) { p.Annotations[contract.StatusAnnotation] = "{}" }), running: true, wantIPsCount: 2},
		{name: "native sidecar", pod: mkPod("app", "a", false, func(p *corev1.Pod) {
			p.Annotations[contract.StatusAnnotation] = "{}"
			p.Spec.InitContainers = []corev1.Container{{Name: contract.ProxyContainerName, RestartPolicy: &always}}
		}), injected: true, running: true, wantInbound: 15006, wantIPsCount: 2},
		{name: "plain init container is not a sidecar", pod: mkPod("app", "a", false, func(p *corev1.Pod) {
			p.Annotations[contract.StatusAnnotation] = "{}"
			p.Spec.InitContainers = []corev1.Container{{Name: contract.ProxyContainerName}}
		}), running: true, wantIPsCount: 2},
		{name: "opted out by label", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Labels[contract.InjectLabel] = "false" }), running: true, wantIPsCount: 2},
		{name: "opted out by annotation", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Annotations[contract.InjectLabel] = "false" }), running: true, wantIPsCount: 2},
		{name: "excluded namespace", pod: mkPod("kube-system", "a", true, nil), running: true, wantIPsCount: 2},
		{name: "host network", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), running: true, wantIPsCount: 2},
		{name: "custom port", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Annotations[contract.AnnotationInboundCapturePort] = "16000" }),
			injected: true, running: true, wantInbound: 16000, wantIPsCount: 2},
		{name: "bad annotation", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Annotations[contract.AnnotationInboundCapturePort] = "x" }),
			injected: true, running: true, settingsErr: true, wantIPsCount: 2},
		{name: "no IP yet", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Status = corev1.PodStatus{Phase: corev1.PodPending} }),
			injected: true, wantInbound: 15006},
		{name: "terminating", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} }),
			injected: true, wantInbound: 15006, wantIPsCount: 2},
		{name: "succeeded", pod: mkPod("app", "a", true, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			injected: true, wantInbound: 15006, wantIPsCount: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PodInfo(tc.pod, excluded)
			if p.Injected != tc.injected || p.Running != tc.running || len(p.PodIPs) != tc.wantIPsCount || (p.SettingsErr != "") != tc.settingsErr {
				t.Fatalf("%+v", p)
			}
			if tc.wantInbound != 0 && (p.Settings == nil || p.Settings.InboundCapturePort != tc.wantInbound) {
				t.Errorf("settings %+v", p.Settings)
			}
			if tc.settingsErr && p.Settings != nil {
				t.Errorf("settings with error %q", p.SettingsErr)
			}
		})
	}
}

func TestPodInfoRepairAnnotation(t *testing.T) {
	if p := PodInfo(mkPod("app", "a", true, nil), nil); p.Repair != "" {
		t.Errorf("no annotation: repair %q", p.Repair)
	}
	p := PodInfo(mkPod("app", "a", true, func(p *corev1.Pod) { p.Annotations[contract.RepairAnnotation] = "off" }), nil)
	if p.Repair != "off" {
		t.Errorf("annotation off: repair %q", p.Repair)
	}
}

func TestWatcherAlignsRecord(t *testing.T) {
	st, err := record.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []agentapi.Report{
		{Event: "ADD", Namespace: "app", Name: "gone", UID: "uid-gone", State: "captured"},
		{Event: "ADD", Namespace: "app", Name: "kept", UID: "uid-kept", State: "captured"},
	} {
		if err := st.ApplyReport(r); err != nil {
			t.Fatal(err)
		}
	}
	cs := fake.NewClientset(mkPod("app", "kept", true, nil), mkPod("app", "early", true, nil), mkPod("app", "plain", false, nil))
	var mu sync.Mutex
	var selectors []string
	cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		selectors = append(selectors, a.(k8stesting.ListAction).GetListRestrictions().Fields.String())
		mu.Unlock()
		return false, nil, nil
	})
	checked := make(chan record.PodInfo, 100)
	w := NewWatcher()
	w.Client, w.Node, w.Store, w.Excluded = cs, "n1", st, contract.DefaultExcludeNamespaces
	w.Check = func(_ context.Context, p record.PodInfo) (time.Duration, error) { checked <- p; return 0, nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	seen := map[string]bool{}
	deadline := time.After(30 * time.Second)
	for len(seen) < 3 {
		select {
		case p := <-checked:
			seen[p.Name] = true
		case <-deadline:
			t.Fatalf("checked only %v", seen)
		}
	}
	if !w.Synced() {
		t.Error("not synced after the first checks")
	}
	mu.Lock()
	if len(selectors) == 0 || selectors[0] != "spec.nodeName=n1" {
		t.Errorf("pods listed with field selector %q, want spec.nodeName=n1", selectors)
	}
	mu.Unlock()
	if _, ok := st.Get("app", "gone"); ok {
		t.Error("record of a pod that no longer exists kept")
	}
	if r, ok := st.Get("app", "early"); !ok || r.State != agentapi.StateMissing {
		t.Errorf("injected pod without report: %+v %v", r, ok)
	}
	if _, ok := st.Get("app", "plain"); ok {
		t.Error("record created for a pod that is not injected")
	}

	// Deleting a pod drops its record; a new pod is checked.
	if err := cs.CoreV1().Pods("app").Delete(ctx, "kept", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("app").Create(ctx, mkPod("app", "late", true, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case p := <-checked:
			if p.Name != "late" {
				continue
			}
			if !p.Injected || !p.Running {
				t.Errorf("late pod %+v", p)
			}
		case <-deadline:
			t.Fatal("new pod not checked")
		}
		break
	}
	for _, ok := st.Get("app", "kept"); ok; _, ok = st.Get("app", "kept") {
		select {
		case <-deadline:
			t.Fatal("deleted pod still recorded")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestReportBeforeInformer keeps the record of a pod the informer does not know yet for Grace,
// then drops it.
func TestReportBeforeInformer(t *testing.T) {
	st, err := record.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// The worker is one goroutine taking keys in order: once it has checked the marker pod
	// queued after a key, it has handled that key.
	cs := fake.NewClientset(mkPod("app", "marker", false, nil))
	checked := make(chan string, 16)
	w := NewWatcher()
	w.Client, w.Node, w.Store, w.Grace = cs, "n1", st, 2*time.Second
	w.Check = func(_ context.Context, p record.PodInfo) (time.Duration, error) {
		checked <- p.Name
		return 0, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.After(30 * time.Second)
	waitMarker := func(what string) {
		t.Helper()
		select {
		case <-checked:
		case <-deadline:
			t.Fatalf("the worker did not check the marker pod %s", what)
		}
	}
	waitMarker("after the informer's sync")
	if err := st.ApplyReport(agentapi.Report{Event: "ADD", Namespace: "app", Name: "early-report", State: "captured"}); err != nil {
		t.Fatal(err)
	}
	w.Enqueue("app", "early-report")
	w.Enqueue("app", "marker")
	waitMarker("queued after the early report")
	if _, ok := st.Get("app", "early-report"); !ok {
		t.Fatal("fresh record of a pod the informer has not seen yet was dropped")
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := st.Get("app", "early-report"); !ok {
			break
		}
		select {
		case <-deadline:
			t.Fatal("record of a pod that never appeared was kept past the grace")
		case <-tick.C:
		}
	}
}
