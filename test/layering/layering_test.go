// Package layering holds the test of the module's import graph: imports flow one way, from
// the binaries, benchmarks, tests and tools down to the library packages under internal/ and
// install/, never back up (Go itself forbids cycles).
package layering

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/sidelane/sidelane"

type pkg struct {
	ImportPath string
	Name       string
	Imports    []string
}

// packages lists the module's packages with their non-test imports.
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 30 {
		t.Fatalf("go list found %d packages; want the whole module", len(pkgs))
	}
	return pkgs
}

// violations are the imports of pkgs that break the layering rules.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			irel := strings.TrimPrefix(imp, module+"/")
			if isLibrary(rel) && !isLibrary(irel) {
				out = append(out, fmt.Sprintf("%s (a library package) imports %s (binaries, benchmarks, tests and tools sit above the libraries)", rel, irel))
			}
		}
	}
	return out
}

// isLibrary reports whether a package (path relative to the module) is one of the shared
// packages the binaries are wired from: internal/... and install.
func isLibrary(rel string) bool {
	return rel == "install" || strings.HasPrefix(rel, "internal/") || strings.HasPrefix(rel, "install/")
}

func TestImportsFlowDown(t *testing.T) {
	if v := violations(packages(t)); len(v) > 0 {
		t.Errorf("%d imports go up:\n%s", len(v), strings.Join(v, "\n"))
	}
}

// TestViolations: the rule catches a library importing a benchmark or a binary, and lets a
// binary or a benchmark import libraries and libraries import each other.
func TestViolations(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	got := violations([]pkg{
		{ImportPath: m("internal/agent/repair"), Imports: []string{m("hack/chart"), "fmt"}},
		{ImportPath: m("internal/proxy"), Imports: []string{m("bench/proxybench")}},
		{ImportPath: m("install"), Imports: []string{m("node-agent")}},
		{ImportPath: m("internal/agent"), Imports: []string{m("internal/agent/repair"), m("install")}},
		{ImportPath: m("node-agent"), Imports: []string{m("internal/agent")}},
		{ImportPath: m("bench/proxybench"), Imports: []string{m("internal/proxy")}},
		{ImportPath: m("internal/inject/manualcmd"), Imports: []string{m("internal/inject")}},
	})
	want := []string{
		"internal/agent/repair (a library package) imports hack/chart",
		"internal/proxy (a library package) imports bench/proxybench",
		"install (a library package) imports node-agent",
	}
	if len(got) != len(want) {
		t.Fatalf("violations:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("violation %d: %q, want %q", i, got[i], want[i])
		}
	}
}
