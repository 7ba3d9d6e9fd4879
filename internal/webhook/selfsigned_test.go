package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sidelane/sidelane/internal/contract"
	"github.com/sidelane/sidelane/internal/inject"
)

var metricsAddrs sync.Map // *Server → metrics address (see serve)

func webhookConfig(bundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	path := "/inject"
	wh := func(name string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Name: "sidelane-injector", Namespace: "sidelane-system", Path: &path},
				CABundle: bundle,
			},
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "sidelane-injector"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{wh("namespace.inject.sidelane.io"), wh("pod.inject.sidelane.io")},
	}
}

func bundleCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func TestSelfSignedCertificate(t *testing.T) {
	s, err := NewSelfSigned("sidelane-injector", "sidelane-system", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("CA PEM does not parse")
	}
	for _, name := range []string{"sidelane-injector.sidelane-system.svc", "sidelane-injector.sidelane-system", "sidelane-injector.sidelane-system.svc.cluster.local"} {
		if _, err := s.Cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := s.Cert.Leaf.Verify(x509.VerifyOptions{DNSName: "other.sidelane-system.svc", Roots: pool}); err == nil {
		t.Error("serving certificate verifies for another service")
	}
	if _, err := NewSelfSigned("", "ns", time.Hour); err == nil {
		t.Error("empty service accepted")
	}
}

func TestMergeCABundle(t *testing.T) {
	now := time.Now()
	// mk is a CA as a replica made it at a given time (NewSelfSigned uses the clock).
	mk := func(at time.Time, validity time.Duration) []byte {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tpl := &x509.Certificate{SerialNumber: big.NewInt(at.UnixNano()), Subject: pkix.Name{CommonName: "ca@" + at.String()},
			NotBefore: at.Add(-time.Hour), NotAfter: at.Add(validity), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	own := mk(now, time.Hour)
	expired := mk(now.Add(-48*time.Hour), time.Hour)
	var others [][]byte
	for i := range MaxBundleCAs + 2 {
		others = append(others, mk(now.Add(-time.Duration(i+1)*time.Minute), time.Hour))
	}
	// Empty bundle: just ours.
	got, err := MergeCABundle(nil, own, now)
	if err != nil || !bytes.Equal(got, own) {
		t.Fatalf("empty bundle: %q %v", got, err)
	}
	// Idempotent.
	if again, _ := MergeCABundle(got, own, now); !bytes.Equal(again, got) {
		t.Error("merging twice changes the bundle")
	}
	// Another replica's CA is kept, the expired one and garbage dropped.
	in := bytes.Join([][]byte{others[0], expired, []byte("garbage\n"), own}, nil)
	got, _ = MergeCABundle(in, own, now)
	certs := bundleCerts(t, got)
	if len(certs) != 2 || !bytes.Contains(got, others[0]) || !bytes.HasPrefix(got, own) || bytes.Contains(got, expired) {
		t.Errorf("merged bundle has %d certs: %s", len(certs), got)
	}
	// Capped at MaxBundleCAs, ours kept, then the newest.
	got, _ = MergeCABundle(bytes.Join(others, nil), own, now)
	if n := len(bundleCerts(t, got)); n != MaxBundleCAs {
		t.Errorf("%d certs, want %d", n, MaxBundleCAs)
	}
	if !bytes.HasPrefix(got, own) || !bytes.Contains(got, others[0]) || bytes.Contains(got, others[len(others)-1]) {
		t.Error("cap did not keep ours and the newest")
	}
	if _, err := MergeCABundle(nil, []byte("not pem"), now); err == nil {
		t.Error("bad own CA accepted")
	}
}

func TestEnsureCABundle(t *testing.T) {
	s, err := NewSelfSigned("sidelane-injector", "sidelane-system", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSelfSigned("sidelane-injector", "sidelane-system", time.Hour)
	client := fake.NewClientset(webhookConfig(other.CAPEM))
	ctx := context.Background()
	changed, err := EnsureCABundle(ctx, client, "sidelane-injector", s.CAPEM, time.Now())
	if err != nil || !changed {
		t.Fatalf("EnsureCABundle = %v, %v", changed, err)
	}
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "sidelane-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, wh := range cfg.Webhooks {
		if !bytes.Contains(wh.ClientConfig.CABundle, s.CAPEM) || !bytes.Contains(wh.ClientConfig.CABundle, other.CAPEM) {
			t.Errorf("webhook %s caBundle lacks ours or the other replica's CA", wh.Name)
		}
	}
	if changed, err := EnsureCABundle(ctx, client, "sidelane-injector", s.CAPEM, time.Now()); err != nil || changed {
		t.Errorf("second EnsureCABundle = %v, %v; want no patch", changed, err)
	}
	if _, err := EnsureCABundle(ctx, client, "absent", s.CAPEM, time.Now()); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("absent configuration: %v", err)
	}
}

// TestSelfSignedServer runs the injector with --self-signed against a fake API server where
// the webhook configuration appears only after the start: it is not ready until the caBundle
// is patched, then the API server's view (the patched caBundle) verifies its certificate and
// an AdmissionReview over HTTPS is injected; the metrics port counts it.
func TestSelfSignedServer(t *testing.T) {
	client := fake.NewClientset()
	srv, err := New(Options{
		SelfSigned: true, Service: "sidelane-injector", Namespace: "sidelane-system", WebhookConfig: "sidelane-injector",
		Template: inject.DefaultTemplate(), Exclude: contract.DefaultExcludeNamespaces,
		Client: client, Namespaces: meshNamespaces,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	maddr, _ := metricsAddrs.Load(srv)
	get := func(path string) int {
		resp, err := http.Get("http://" + maddr.(string) + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the caBundle: %d, want 503", code)
	}
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	ctx := context.Background()
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfig(nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "readiness after the caBundle patch", func() bool { return get("/readyz") == http.StatusOK })
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "sidelane-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for i, wh := range cfg.Webhooks {
		if !pool.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
			t.Fatalf("webhook %d caBundle is empty", i)
		}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "sidelane-injector.sidelane-system.svc"},
		ForceAttemptHTTP2: true, // as the API server's webhook client
	}}
	resp, err := hc.Post("https://"+addr+"/inject", "application/json", bytes.NewReader(review(t, "admission.k8s.io/v1", "shop", testPod(nil))))
	if err != nil {
		t.Fatalf("the caBundle does not verify the served certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("served over %s, want HTTP/2", resp.Proto)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &out); err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		t.Fatalf("response %d %s (%v)", resp.StatusCode, body, err)
	}
	mresp, err := http.Get("http://" + maddr.(string) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`sidelane_injector_injections_total{result="injected"} 1`, "sidelane_injector_admission_duration_seconds_count 1"} {
		if !strings.Contains(string(mbody), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no certificate", Options{Template: inject.DefaultTemplate()}, "no serving certificate"},
		{"self-signed without client", Options{Template: inject.DefaultTemplate(), SelfSigned: true, WebhookConfig: "x", Service: "s", Namespace: "n"}, "API server"},
		{"both", Options{Template: inject.DefaultTemplate(), SelfSigned: true, CertFile: "a", KeyFile: "b"}, "exclusive"},
		{"missing files", Options{Template: inject.DefaultTemplate(), CertFile: "/nonexistent/tls.crt", KeyFile: "/nonexistent/tls.key"}, "/nonexistent/tls.crt"},
		{"bad template", Options{Template: inject.Template{}}, "image is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
