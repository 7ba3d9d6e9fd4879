package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManual(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "app.yaml")
	out := filepath.Join(dir, "out.yaml")
	tpl := filepath.Join(dir, "template.yaml")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(in, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: app:1}]\n")
	write(tpl, "image: r.test/proxy:v9\n")
	if err := manual([]string{"-f", in, "-o", out, "--template", tpl, "--native-sidecar=false"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image: r.test/proxy:v9", "name: sidelane-proxy", "sidelane.io/status"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "initContainers") {
		t.Error("--native-sidecar=false ignored")
	}

	// A refused document leaves no output file.
	bad := filepath.Join(dir, "bad.yaml")
	write(bad, "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {redirect.sidelane.io/proxy-gid: x}}\nspec:\n  containers: [{name: app, image: app:1}]\n")
	out2 := filepath.Join(dir, "out2.yaml")
	if err := manual([]string{"-f", bad, "-o", out2}); err == nil || !strings.Contains(err.Error(), "redirect.sidelane.io/proxy-gid") {
		t.Errorf("error %v", err)
	}
	if _, err := os.Stat(out2); !os.IsNotExist(err) {
		t.Error("output written for a refused document")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".sidelane-inject-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	for _, args := range [][]string{{}, {"-f", in, "--native-sidecar=maybe"}, {"-f", filepath.Join(dir, "missing.yaml")}} {
		if err := manual(args); err == nil {
			t.Errorf("manual(%q) accepted", args)
		}
	}
}

func TestSplitList(t *testing.T) {
	got := splitList(" kube-system, ,sidelane-system,")
	if len(got) != 2 || got[0] != "kube-system" || got[1] != "sidelane-system" {
		t.Errorf("splitList = %q", got)
	}
}
