// Package podwatch keeps the node agent's record aligned with the pods of its node: a pod
// informer limited to the node (field selector spec.nodeName), a rate-limited work queue and
// one worker that hands every added, changed or periodically re-checked pod to the repairer.
// It is the only part of the agent that handles Kubernetes pod objects: PodInfo turns them
// into plain record.PodInfo values.
package podwatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	toolsrecord "k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/sidelane/sidelane/internal/agent/record"
	"github.com/sidelane/sidelane/internal/cnirpc"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/redirect"
	"github.com/sidelane/sidelane/internal/selection"
)

// PodInfo returns the plain facts about pod that the agent decides on. A pod is injected when
// docs/design.md "Pod selection" says the plugin captures it: not in an excluded namespace, not
// opted out, not on the host network, with the sidelane.io/status annotation and a
// sidelane-proxy container (regular, or a native sidecar).
func PodInfo(pod *corev1.Pod, excluded []string) record.PodInfo {
	p := record.PodInfo{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Repair: pod.Annotations[contract.RepairAnnotation]}
	for _, ip := range pod.Status.PodIPs {
		p.PodIPs = append(p.PodIPs, ip.IP)
	}
	if len(p.PodIPs) == 0 && pod.Status.PodIP != "" {
		p.PodIPs = []string{pod.Status.PodIP}
	}
	p.Running = pod.DeletionTimestamp == nil && len(p.PodIPs) > 0 &&
		(pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodPending)
	p.Injected = selection.Decide(Facts(pod), excludedFunc(excluded)).Capture
	if p.Injected {
		if s, err := redirect.FromAnnotations(pod.Annotations); err != nil {
			p.SettingsErr = err.Error()
		} else {
			p.Settings = &s
		}
	}
	return p
}

// Facts are the plain facts of pod that selection.Decide reads.
func Facts(pod *corev1.Pod) selection.PodFacts {
	facts := selection.PodFacts{Namespace: pod.Namespace, Labels: pod.Labels, Annotations: pod.Annotations, HostNetwork: pod.Spec.HostNetwork}
	for _, c := range pod.Spec.Containers {
		facts.Containers = append(facts.Containers, c.Name)
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			facts.NativeSidecars = append(facts.NativeSidecars, c.Name)
		}
	}
	return facts
}

func excludedFunc(excluded []string) func(string) bool {
	return func(ns string) bool { return ns == contract.SystemNamespace || slices.Contains(excluded, ns) }
}

// DefaultLookupTimeout bounds the API GET of a pod the cache does not hold; it stays below the
// plugin's wait for the decision (cniplugin.DefaultDecideTimeout).
const DefaultLookupTimeout = 3 * time.Second

// Cache-miss reasons (metric label).
const (
	MissNotSynced   = "not_synced"   // the informer has not synced yet (agent start)
	MissNotFound    = "not_found"    // the pod is not in the cache yet
	MissUIDMismatch = "uid_mismatch" // the cache holds an older pod of that name
)

// Decide answers the plugin's question at ADD from the informer's cache of the node's pods;
// on a miss (not synced, not cached yet, or another uid) it GETs the pod with the agent's own
// credentials, bounded by LookupTimeout, and counts the miss (OnMiss).
func (w *Watcher) Decide(ctx context.Context, req cnirpc.DecideRequest) (cnirpc.Decision, error) {
	var pod *corev1.Pod
	miss := MissNotSynced
	if w.Synced() {
		p, err := w.lister.Pods(req.Namespace).Get(req.Name)
		switch {
		case err == nil && (req.UID == "" || string(p.UID) == req.UID):
			pod = p
		case err == nil:
			miss = MissUIDMismatch
		default:
			miss = MissNotFound
		}
	}
	missed := pod == nil
	if missed {
		if w.OnMiss != nil {
			w.OnMiss(miss)
		}
		timeout := w.LookupTimeout
		if timeout <= 0 {
			timeout = DefaultLookupTimeout
		}
		gctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		p, err := w.Client.CoreV1().Pods(req.Namespace).Get(gctx, req.Name, metav1.GetOptions{})
		if err != nil {
			return cnirpc.Decision{}, fmt.Errorf("pod %s/%s not in the agent's cache (%s) and the API server did not answer within %s: %w", req.Namespace, req.Name, miss, timeout, err)
		}
		pod = p
	}
	d := cnirpc.DecisionFor(string(pod.UID), Facts(pod), excludedFunc(w.Excluded), req.SandboxIPs)
	d.CacheMiss = missed
	return d, nil
}

// Cached reports whether the informer's cache holds namespace/name (a Decide for it is a hit).
func (w *Watcher) Cached(namespace, name string) bool {
	if !w.Synced() {
		return false
	}
	_, err := w.lister.Pods(namespace).Get(name)
	return err == nil
}

// Watcher runs the informer and the worker.
type Watcher struct {
	Client   kubernetes.Interface
	Node     string
	Excluded []string
	Store    *record.Store
	// Check inspects (and repairs) one pod; an error re-queues it with backoff, a retryAfter
	// re-queues it after that long.
	Check func(ctx context.Context, p record.PodInfo) (retryAfter time.Duration, err error)
	// Interval is the period of the drift check of every pod (default 30s).
	Interval time.Duration
	// Grace is how long a record of a pod the informer does not know is kept (default 30s).
	Grace time.Duration
	// LookupTimeout bounds Decide's API GET on a cache miss (default DefaultLookupTimeout).
	LookupTimeout time.Duration
	// OnMiss, when set, is called with the reason of each cache miss of Decide.
	OnMiss func(reason string)
	Log    *slog.Logger

	synced atomic.Bool
	queue  workqueue.TypedRateLimitingInterface[string]
	lister listerscorev1.PodLister
}

// NewWatcher returns a watcher; set its fields before Run.
func NewWatcher() *Watcher {
	return &Watcher{
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sidelane-agent-pods"}),
	}
}

// Synced reports whether the informer has synced and the record was aligned with it.
func (w *Watcher) Synced() bool { return w.synced.Load() }

// Enqueue asks for a check of namespace/name (e.g. after a plugin report).
func (w *Watcher) Enqueue(namespace, name string) { w.queue.Add(record.Key(namespace, name)) }

func (w *Watcher) log() *slog.Logger {
	if w.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Log
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.queue.ShutDown()
	if w.Interval <= 0 {
		w.Interval = 30 * time.Second
	}
	factory := informers.NewSharedInformerFactoryWithOptions(w.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", w.Node).String()
	}))
	inf := factory.Core().V1().Pods()
	w.lister = inf.Lister()
	key := func(obj any) (string, bool) {
		k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		return k, err == nil
	}
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.enqueueObj(key, obj) },
		UpdateFunc: func(_, obj any) { w.enqueueObj(key, obj) },
		DeleteFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				w.drop(pod.Namespace, pod.Name, string(pod.UID))
				return
			}
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				if ns, name, err := cache.SplitMetaNamespaceKey(d.Key); err == nil {
					w.drop(ns, name, "")
				}
			}
		},
	})
	if err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	if err := w.alignAll(); err != nil {
		return err
	}
	w.synced.Store(true)
	w.log().Info("pod informer synced", "node", w.Node)

	go func() {
		t := time.NewTicker(w.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.enqueueAll()
			}
		}
	}()
	go func() { <-ctx.Done(); w.queue.ShutDown() }()
	for w.next(ctx) {
	}
	return nil
}

func (w *Watcher) enqueueObj(key func(any) (string, bool), obj any) {
	if k, ok := key(obj); ok {
		w.queue.Add(k)
	}
}

func (w *Watcher) drop(ns, name, uid string) {
	if err := w.Store.PodDeleted(ns, name, uid); err != nil {
		w.log().Error("record pod deletion", "pod", ns+"/"+name, "error", err)
	}
	w.queue.Forget(record.Key(ns, name))
}

// alignAll aligns the record with every pod of the node and queues them all.
func (w *Watcher) alignAll() error {
	pods, err := w.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	infos := make([]record.PodInfo, 0, len(pods))
	for _, p := range pods {
		infos = append(infos, PodInfo(p, w.Excluded))
	}
	if err := w.Store.Sync(infos); err != nil {
		return fmt.Errorf("align record: %w", err)
	}
	for _, p := range infos {
		w.Enqueue(p.Namespace, p.Name)
	}
	return nil
}

func (w *Watcher) enqueueAll() {
	pods, err := w.lister.List(labels.Everything())
	if err != nil {
		w.log().Error("list pods", "error", err)
		return
	}
	for _, p := range pods {
		w.Enqueue(p.Namespace, p.Name)
	}
	// Records of pods the informer no longer knows are looked at (and dropped) too.
	for _, r := range w.Store.List() {
		w.Enqueue(r.Namespace, r.Name)
	}
}

func (w *Watcher) grace() time.Duration {
	if w.Grace > 0 {
		return w.Grace
	}
	return 30 * time.Second
}

func (w *Watcher) next(ctx context.Context) bool {
	k, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(k)
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		w.queue.Forget(k)
		return true
	}
	pod, err := w.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// A report can come in before the informer has seen its pod: keep a fresh record
		// and look again later.
		if r, ok := w.Store.Get(ns, name); ok && time.Since(r.Updated) < w.grace() {
			w.queue.AddAfter(k, w.grace())
			return true
		}
		w.drop(ns, name, "")
		return true
	}
	if err != nil {
		w.queue.AddRateLimited(k)
		return true
	}
	retry, err := w.Check(ctx, PodInfo(pod, w.Excluded))
	if err != nil {
		w.log().Error("check pod", "pod", k, "error", err)
		w.queue.AddRateLimited(k)
		return true
	}
	w.queue.Forget(k)
	if retry > 0 {
		w.queue.AddAfter(k, retry)
	}
	return true
}

// Emit emits one Kubernetes event on an object (a pod, the agent's own pod, the node).
type Emit func(ref *corev1.ObjectReference, warning bool, reason, msg string)

// Recorder returns an Emit that records events through the API server as the agent of node,
// and a stop function.
func Recorder(client kubernetes.Interface, node string) (Emit, func()) {
	b := toolsrecord.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "sidelane-agent", Host: node})
	return func(ref *corev1.ObjectReference, warning bool, reason, msg string) {
		t := corev1.EventTypeNormal
		if warning {
			t = corev1.EventTypeWarning
		}
		rec.Event(ref, t, reason, msg)
	}, b.Shutdown
}

// PodEvents returns a function that emits events on pods through emit.
func PodEvents(emit Emit) func(p record.PodInfo, warning bool, reason, msg string) {
	return func(p record.PodInfo, warning bool, reason, msg string) {
		emit(&corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: types.UID(p.UID)}, warning, reason, msg)
	}
}

// DeletePod returns a function that deletes a pod with a UID precondition.
func DeletePod(client kubernetes.Interface) func(ctx context.Context, ns, name, uid string) error {
	return func(ctx context.Context, ns, name, uid string) error {
		opts := metav1.DeleteOptions{}
		if uid != "" {
			u := types.UID(uid)
			opts.Preconditions = &metav1.Preconditions{UID: &u}
		}
		err := client.CoreV1().Pods(ns).Delete(ctx, name, opts)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
}
