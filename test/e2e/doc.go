// Package e2e holds Sidelane's end-to-end tests: a real single-node cluster (hack/cluster.sh)
// with Sidelane installed from deploy/overlays/local, real pods, real traffic.
//
// The tests carry the build tag "e2e", so `go test ./...` skips them; run them with
// hack/e2e.sh (which brings the cluster up and installs Sidelane) or, against a running local
// cluster, with `eval "$(hack/cluster.sh env)"; go test -tags e2e ./test/e2e/`.
package e2e
