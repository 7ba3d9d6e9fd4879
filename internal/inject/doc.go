// Package inject is the injector's mutation: which pods get the sidelane-proxy container
// (Select, docs/design.md "Pod selection"), the RFC 6902 JSON Patch that adds it with the redirect
// and status annotations (Patch, a pure function of the pod and a Template), and the manual
// mode that applies the same patch to the pod templates of a multi-document YAML stream
// (InjectYAML). The admission webhook (package webhook), `sidelane-injector inject` and
// `kubectl-sidelane inject` all use it.
package inject
