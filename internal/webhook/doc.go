// Package webhook is sidelane-injector's server: the /inject admission handler (AdmissionReview
// v1 and v1beta1) around package inject's Select and Patch, the namespace lookup for pods that
// opt in from unlabelled namespaces, the template reloaded from a mounted ConfigMap, serving
// certificates reloaded on rotation or generated at start (--self-signed) with the
// MutatingWebhookConfiguration's caBundle patched through client-go, and Prometheus metrics.
package webhook
