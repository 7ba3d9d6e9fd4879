package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyDependencies: the plugin starts for every pod and holds no credential, so it links
// neither client-go nor net/http nor crypto/tls (docs/cni-plugin.md). It asks its node agent over
// the framed protocol of internal/cnirpc instead.
func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{"k8s.io/client-go", "net/http", "crypto/tls"}
	var found []string
	for _, pkg := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				found = append(found, pkg)
			}
		}
	}
	if len(found) > 0 {
		t.Errorf("sidelane-cni links %d forbidden packages (%v), e.g.:\n%s", len(found), forbidden, strings.Join(found[:min(len(found), 10)], "\n"))
	}
}
