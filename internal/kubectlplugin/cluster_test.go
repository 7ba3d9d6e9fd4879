package kubectlplugin

import (
	"context"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sidelane/sidelane/internal/contract"
)

func agentPod(name, node string, phase corev1.PodPhase, deleting bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: contract.SystemNamespace, Name: name, Labels: map[string]string{"app.kubernetes.io/name": "sidelane-agent"}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
	if deleting {
		p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		p.Finalizers = []string{"x"}
	}
	return p
}

func TestKubeClusterFindsAgents(t *testing.T) {
	cs := fake.NewClientset(
		agentPod("a1", "n1", corev1.PodRunning, false),
		agentPod("a2-old", "n2", corev1.PodRunning, true),
		agentPod("a2", "n2", corev1.PodRunning, false),
		agentPod("a3", "n3", corev1.PodPending, false),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "web", Annotations: map[string]string{contract.StatusAnnotation: "{}"}}, Spec: corev1.PodSpec{NodeName: "n2"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "pending"}},
	)
	c := &KubeCluster{client: cs, config: &rest.Config{}}
	ctx := context.Background()
	nodes, err := c.AgentNodes(ctx)
	if err != nil || strings.Join(nodes, ",") != "n1,n2,n3" {
		t.Errorf("agent nodes %v %v", nodes, err)
	}
	for _, tc := range []struct{ node, want, wantErr string }{
		{"n1", "a1", ""}, {"n2", "a2", ""}, {"n3", "", "no running node agent pod"}, {"n4", "", "on node n4"},
	} {
		p, err := c.agentPod(ctx, tc.node)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want error %q", tc.node, err, tc.wantErr)
			}
			continue
		}
		if err != nil || p.Name != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.node, p, err, tc.want)
		}
	}
	if n, err := c.PodNode(ctx, "team", "web"); err != nil || n != "n2" {
		t.Errorf("pod node %q %v", n, err)
	}
	if inj, err := c.InjectedPods(ctx); err != nil || len(inj) != 1 || inj[0] != (PodRef{"team", "web", "n2"}) {
		t.Errorf("injected pods %v %v", inj, err)
	}
	if _, err := c.PodNode(ctx, "team", "pending"); err == nil || !strings.Contains(err.Error(), "not scheduled") {
		t.Errorf("unscheduled pod: %v", err)
	}
}

func TestKubeClusterToken(t *testing.T) {
	cs := fake.NewClientset()
	minted := 0
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "token" || ca.GetNamespace() != contract.SystemNamespace {
			t.Errorf("unexpected create %s/%s in %s", ca.GetResource().Resource, ca.GetSubresource(), ca.GetNamespace())
		}
		tr := ca.GetObject().(*authnv1.TokenRequest)
		if tr.Spec.ExpirationSeconds == nil || *tr.Spec.ExpirationSeconds > 3600 {
			t.Errorf("token lifetime %v: want short-lived", tr.Spec.ExpirationSeconds)
		}
		minted++
		tr.Status.Token = "minted"
		return true, tr, nil
	})
	own := &KubeCluster{client: cs, config: &rest.Config{BearerToken: "mine"}}
	if tok, err := own.bearer(context.Background()); err != nil || tok != "mine" {
		t.Errorf("own token: %q %v", tok, err)
	}
	certs := &KubeCluster{client: cs, config: &rest.Config{}}
	for range 2 {
		if tok, err := certs.bearer(context.Background()); err != nil || tok != "minted" {
			t.Errorf("minted token: %q %v", tok, err)
		}
	}
	if minted != 1 {
		t.Errorf("minted %d tokens, want 1 (reused)", minted)
	}
}
