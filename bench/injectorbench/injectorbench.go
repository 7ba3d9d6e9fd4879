// Package injectorbench measures sidelane-injector's admission latency: the real webhook
// server of package webhook over HTTPS (HTTP/2, as the API server talks to webhooks), fed
// realistic pod AdmissionReviews at a fixed 200 requests per second. The load is open loop
// (each request is sent at its time, in its own goroutine, whether or not earlier ones have
// been answered), so a slow answer cannot hold back the requests after it; latency is counted
// from the moment the request is sent to the moment its answer is read and checked.
package injectorbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sidelane/sidelane/internal/benchreport"
	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/inject"
	"github.com/sidelane/sidelane/internal/webhook"
)

const (
	rate      = 200 // requests per second
	targetP99 = 5.0 // ms
)

// Run measures admission latency at 200 requests/s over TLS: cfg.Rounds rounds (default 3) of
// 10 s each (Quick: one round of 2 s).
func Run(ctx context.Context, cfg benchreport.Config) ([]benchreport.Row, error) {
	rounds, dur := cfg.Rounds, 10*time.Second
	if rounds <= 0 {
		rounds = 3
	}
	if cfg.Quick {
		rounds, dur = 1, 2*time.Second
	}
	work, err := os.MkdirTemp(cfg.WorkDir, "injectorbench-")
	if err != nil {
		return nil, fmt.Errorf("injectorbench: %w", err)
	}
	defer os.RemoveAll(work)

	srv, client, addr, stop, err := start(work)
	if err != nil {
		return nil, fmt.Errorf("injectorbench: %w", err)
	}
	defer stop()
	reviews, err := workload()
	if err != nil {
		return nil, fmt.Errorf("injectorbench: %w", err)
	}
	// Warm-up: connection, TLS, HTTP/2, code paths.
	if _, err := load(ctx, client, addr, reviews, 300*time.Millisecond); err != nil {
		return nil, fmt.Errorf("injectorbench: warm-up: %w", err)
	}
	loadAvg := loadAverage() // the machine's load shows in the tails; say what it was
	var p50, p90, p99, p999, max, achieved, server99 []float64
	var all []float64
	for r := 0; r < rounds; r++ {
		before, err := serverHistogram(srv)
		if err != nil {
			return nil, fmt.Errorf("injectorbench: %w", err)
		}
		res, err := load(ctx, client, addr, reviews, dur)
		if err != nil {
			return nil, fmt.Errorf("injectorbench: round %d: %w", r+1, err)
		}
		after, err := serverHistogram(srv)
		if err != nil {
			return nil, fmt.Errorf("injectorbench: %w", err)
		}
		server99 = append(server99, after.sub(before).quantile(0.99)*1000)
		p50 = append(p50, benchreport.Percentile(res.lat, 50))
		p90 = append(p90, benchreport.Percentile(res.lat, 90))
		p99 = append(p99, benchreport.Percentile(res.lat, 99))
		p999 = append(p999, benchreport.Percentile(res.lat, 99.9))
		max = append(max, benchreport.Percentile(res.lat, 100))
		achieved = append(achieved, res.rate)
		all = append(all, res.lat...)
	}
	slices.Sort(all)
	note := fmt.Sprintf("%d rounds × %s at %d req/s, %d requests; HTTPS/2 to the real webhook server, %d realistic pods (injected, opted out, opted in from an unlabelled namespace); load average %s → %s",
		rounds, dur, rate, len(all), len(reviews), loadAvg, loadAverage())
	row := func(name string, v []float64, unit string) benchreport.Row {
		mn, md, mx := stats(v)
		return benchreport.Row{Area: "injector", Name: name, Unit: unit, Ours: md, OursMin: mn, OursMax: mx, Note: note}
	}
	r50 := row("admission latency p50 @200 req/s (TLS)", p50, "ms")
	r50.Latency = []benchreport.Point{
		{Percentile: 50, Millis: benchreport.Percentile(all, 50)}, {Percentile: 90, Millis: benchreport.Percentile(all, 90)},
		{Percentile: 99, Millis: benchreport.Percentile(all, 99)}, {Percentile: 99.9, Millis: benchreport.Percentile(all, 99.9)},
	}
	serverRow := row("server-side admission time p99 (injector's own histogram, bucket-interpolated)", server99, "ms")
	serverRow.Note = "from sidelane_injector_admission_duration_seconds: request read to response written, without TLS and the client; " + note
	r99 := row("admission latency p99 @200 req/s (TLS)", p99, "ms")
	r99.Target = fmt.Sprintf("≤ %.0f ms", targetP99)
	r99.Pass = benchreport.Pass(r99.Ours <= targetP99)
	return []benchreport.Row{
		r50,
		row("admission latency p90 @200 req/s (TLS)", p90, "ms"),
		r99,
		row("admission latency p99.9 @200 req/s (TLS)", p999, "ms"),
		row("admission latency max @200 req/s (TLS)", max, "ms"),
		row("achieved request rate", achieved, "req/s"),
		serverRow,
	}, nil
}

// start runs the webhook server on loopback with a certificate from files (the path a
// cert-manager deployment takes) and returns an HTTP/2 client that trusts it.
func start(work string) (*webhook.Server, *http.Client, string, func(), error) {
	ss, err := webhook.NewSelfSigned("sidelane-injector", contract.SystemNamespace, time.Hour)
	if err != nil {
		return nil, nil, "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ss.Cert.PrivateKey)
	if err != nil {
		return nil, nil, "", nil, err
	}
	certFile, keyFile := filepath.Join(work, "tls.crt"), filepath.Join(work, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ss.Cert.Certificate[0]}), 0o600); err != nil {
		return nil, nil, "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, "", nil, err
	}
	tpl := inject.DefaultTemplate()
	tpl.InjectorVersion = "bench"
	srv, err := webhook.New(webhook.Options{
		CertFile: certFile, KeyFile: keyFile, Template: tpl,
		Exclude: contract.DefaultExcludeNamespaces,
		Namespaces: webhook.StaticNamespaces{
			"shop":  {contract.InjectLabel: contract.InjectEnabled, "kubernetes.io/metadata.name": "shop"},
			"plain": {"kubernetes.io/metadata.name": "plain"},
		},
	})
	if err != nil {
		return nil, nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ss.CAPEM)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "sidelane-injector.sidelane-system.svc"},
		ForceAttemptHTTP2: true,
		MaxIdleConns:      16,
		IdleConnTimeout:   time.Minute,
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	stop := func() {
		tr.CloseIdleConnections()
		cancel()
		<-done
	}
	return srv, client, "https://" + ln.Addr().String() + "/inject", stop, nil
}

type review struct {
	body   []byte
	inject bool
}

// workload is a set of AdmissionReviews of realistic pods: a Deployment's pod with two
// containers (env, mounts, probes, resources, projected service-account token) in an opted-in
// namespace, the same opted out, and one opting in from an unlabelled namespace.
func workload() ([]review, error) {
	mk := func(i int, ns string, mod func(*corev1.Pod), injected bool) (review, error) {
		p := realisticPod(i, ns)
		if mod != nil {
			mod(p)
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return review{}, err
		}
		r := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID:         types.UID(fmt.Sprintf("5f0c7a3e-0000-4000-8000-%012d", i)),
				Kind:        metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Resource:    metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
				RequestKind: &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Namespace:   ns,
				Operation:   admissionv1.Create,
				UserInfo:    authenticationUser(),
				Object:      runtime.RawExtension{Raw: raw},
				Options:     runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
			},
		}
		b, err := json.Marshal(r)
		return review{body: b, inject: injected}, err
	}
	var out []review
	for i := range 8 {
		r, err := mk(i, "shop", nil, true)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	r, err := mk(8, "shop", func(p *corev1.Pod) { p.Labels[contract.InjectLabel] = "false" }, false)
	if err != nil {
		return nil, err
	}
	out = append(out, r)
	r, err = mk(9, "plain", func(p *corev1.Pod) { p.Labels[contract.InjectLabel] = "true" }, true)
	if err != nil {
		return nil, err
	}
	return append(out, r), nil
}

type result struct {
	lat  []float64 // ms, sorted
	rate float64
}

// load sends reviews round-robin at a fixed rate for d and checks every answer.
func load(ctx context.Context, client *http.Client, url string, reviews []review, d time.Duration) (result, error) {
	n := int(d.Seconds() * rate)
	interval := time.Second / rate
	lat := make([]float64, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		if w := time.Until(sched); w > 0 {
			select {
			case <-ctx.Done():
				return result{}, ctx.Err()
			case <-time.After(w):
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rv := reviews[i%len(reviews)]
			t0 := time.Now()
			if err := send(client, url, rv); err != nil {
				errs <- err
				return
			}
			lat[i] = float64(time.Since(t0).Microseconds()) / 1000
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return result{}, fmt.Errorf("%d of %d requests failed, first: %w", len(errs)+1, n, err)
	}
	slices.Sort(lat)
	return result{lat: lat, rate: float64(n) / elapsed.Seconds()}, nil
}

func send(client *http.Client, url string, rv review) error {
	resp, err := client.Post(url, "application/json", bytes.NewReader(rv.body))
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil || !out.Response.Allowed {
		return fmt.Errorf("bad answer %s (%v)", body, err)
	}
	if rv.inject != (len(out.Response.Patch) > 0) {
		return fmt.Errorf("patch %q for a pod with inject=%v", out.Response.Patch, rv.inject)
	}
	return nil
}

func stats(v []float64) (mn, med, mx float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func realisticPod(i int, ns string) *corev1.Pod {
	ctrl := true
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "checkout-6b8f9c7d5-",
			Namespace:    ns,
			Labels: map[string]string{
				"app.kubernetes.io/name": "checkout", "app.kubernetes.io/version": "2.14.1",
				"pod-template-hash": "6b8f9c7d5", "tier": "backend",
			},
			Annotations: map[string]string{
				"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
				"kubectl.kubernetes.io/restartedAt": "2025-06-01T10:00:00Z",
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-6b8f9c7d5",
				UID: types.UID(fmt.Sprintf("0d6a2b9e-1c2d-4e5f-8a9b-%012d", i)), Controller: &ctrl, BlockOwnerDeletion: &ctrl,
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "checkout",
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &ctrl, RunAsUser: ptr(int64(10001)), FSGroup: ptr(int64(10001)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{
				appContainer("checkout", "registry.example/shop/checkout:2.14.1", 8080),
				appContainer("metrics-exporter", "registry.example/shop/exporter:0.9.3", 9102),
			},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "checkout-config"}}}},
				{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
			},
		},
	}
}

func appContainer(name, image string, port int32) corev1.Container {
	f := false
	return corev1.Container{
		Name: name, Image: image,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Env: []corev1.EnvVar{
			{Name: "LOG_FORMAT", Value: "json"},
			{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "checkout-db"}, Key: "url"}}},
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"}}},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/checkout", ReadOnly: true},
			{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intOrString(port)}}, PeriodSeconds: 5},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intOrString(port)}}, PeriodSeconds: 10},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &f, ReadOnlyRootFilesystem: ptr(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		ImagePullPolicy: corev1.PullIfNotPresent,
	}
}
