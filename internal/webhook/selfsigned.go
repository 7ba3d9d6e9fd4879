package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/sidelane/sidelane/internal/selfsigned"
)

// SelfSigned is a CA made at start and a serving certificate it signed for the injector's
// Service.
type SelfSigned = selfsigned.Pair

// ServiceDNSNames are the names the API server may use to reach service in namespace.
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		service,
		service + "." + namespace,
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
	}
}

// NewSelfSigned makes a CA and a serving certificate it signed for <service>.<namespace>.svc
// (and the shorter and longer forms), both valid from an hour ago (clock skew) until validity
// from now (internal/selfsigned, the mechanism of the agent's self-signed TLS too).
func NewSelfSigned(service, namespace string, validity time.Duration) (*SelfSigned, error) {
	if service == "" || namespace == "" {
		return nil, fmt.Errorf("self-signed certificate: service (%q) and namespace (%q) are required", service, namespace)
	}
	names := ServiceDNSNames(service, namespace)
	// The .svc name is the subject: the one the API server uses.
	return selfsigned.New([]string{names[2], names[0], names[1], names[3]}, validity)
}

// MaxBundleCAs bounds the CAs kept in a caBundle. Every injector replica started with
// --self-signed has its own CA and adds it to the bundle next to the others' (the API server
// trusts any of them); expired ones are dropped, and beyond this many the oldest go.
const MaxBundleCAs = 8

// MergeCABundle returns bundle with ca added (if missing), expired and unreadable entries
// dropped, and at most MaxBundleCAs certificates (ca always kept, then the newest).
func MergeCABundle(bundle, ca []byte, now time.Time) ([]byte, error) {
	own, _ := pem.Decode(ca)
	if own == nil || own.Type != "CERTIFICATE" {
		return nil, errors.New("caBundle: our CA is not a PEM certificate")
	}
	type entry struct {
		der       []byte
		notBefore time.Time
	}
	var others []entry
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || bytes.Equal(b.Bytes, own.Bytes) {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || !now.Before(c.NotAfter) {
			continue
		}
		others = append(others, entry{b.Bytes, c.NotBefore})
	}
	slices.SortStableFunc(others, func(a, b entry) int { return b.notBefore.Compare(a.notBefore) })
	if len(others) > MaxBundleCAs-1 {
		others = others[:MaxBundleCAs-1]
	}
	out := pem.EncodeToMemory(own)
	for _, e := range others {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.der})...)
	}
	return out, nil
}

// EnsureCABundle puts ca into the caBundle of every webhook of the MutatingWebhookConfiguration
// name (see MergeCABundle), with one JSON Patch guarded by the object's resourceVersion. It
// reports whether it patched.
func EnsureCABundle(ctx context.Context, client kubernetes.Interface, name string, ca []byte, now time.Time) (bool, error) {
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("getting MutatingWebhookConfiguration %s: %w", name, err)
	}
	if len(cfg.Webhooks) == 0 {
		return false, fmt.Errorf("MutatingWebhookConfiguration %s has no webhooks", name)
	}
	var ops []map[string]any
	if cfg.ResourceVersion != "" { // always set by an API server
		ops = append(ops, map[string]any{"op": "test", "path": "/metadata/resourceVersion", "value": cfg.ResourceVersion})
	}
	guards := len(ops)
	for i, wh := range cfg.Webhooks {
		merged, err := MergeCABundle(wh.ClientConfig.CABundle, ca, now)
		if err != nil {
			return false, err
		}
		if bytes.Equal(merged, wh.ClientConfig.CABundle) {
			continue
		}
		ops = append(ops,
			map[string]any{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", i), "value": wh.Name},
			map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), "value": merged})
	}
	if len(ops) == guards {
		return false, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return false, err
	}
	if _, err := api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "sidelane-injector"}); err != nil {
		return false, fmt.Errorf("patching the caBundle of MutatingWebhookConfiguration %s: %w", name, err)
	}
	return true, nil
}

// KeepCABundle keeps ca in the caBundle of the named configuration until ctx ends: it retries
// (1 s, doubling to 10 s) until the configuration exists and the patch succeeds, calls ready
// once, then checks again every recheck (another replica or a re-apply of the manifests may
// have replaced the bundle).
func KeepCABundle(ctx context.Context, client kubernetes.Interface, name string, ca []byte, recheck time.Duration, log *slog.Logger, ready func()) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := time.Second
	done := false
	for {
		changed, err := EnsureCABundle(ctx, client, name, ca, time.Now())
		wait := recheck
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			log.Warn("caBundle not set yet; retrying", "webhookConfiguration", name, "in", backoff, "err", err)
			wait = backoff
			backoff = min(backoff*2, 10*time.Second)
		default:
			backoff = time.Second
			if changed {
				log.Info("caBundle patched", "webhookConfiguration", name)
			}
			if !done {
				done = true
				if ready != nil {
					ready()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
