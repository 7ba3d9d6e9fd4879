package webhook

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInjectCmd(t *testing.T) {
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
	if err := injectCmd([]string{"-f", in, "-o", out, "--template", tpl, "--native-sidecar=false"}, nil, io.Discard, io.Discard); err != nil {
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
	if err := injectCmd([]string{"-f", bad, "-o", out2}, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "redirect.sidelane.io/proxy-gid") {
		t.Errorf("error %v", err)
	}
	if _, err := os.Stat(out2); !os.IsNotExist(err) {
		t.Error("output written for a refused document")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	for _, args := range [][]string{{}, {"-f", in, "--native-sidecar=maybe"}, {"-f", filepath.Join(dir, "missing.yaml")}} {
		if err := injectCmd(args, nil, io.Discard, io.Discard); err == nil {
			t.Errorf("injectCmd(%q) accepted", args)
		}
	}
}

func TestMainExitCodes(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: app:1}]\n"
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		out, err string
	}{
		{"inject from stdin", []string{"inject", "-f", "-"}, pod, 0, "name: sidelane-proxy", ""},
		{"inject without -f", []string{"inject"}, "", 1, "", "sidelane-injector inject: -f is required"},
		{"help", []string{"inject", "-h"}, "", 0, "", "-native-sidecar"},
		{"serve with a bad log level", []string{"serve", "--log-level", "loud"}, "", 1, "", "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(context.Background(), tt.args, strings.NewReader(tt.stdin), &out, &errb); code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %s)", code, tt.code, errb.String())
			}
			if !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stdout %q / stderr %q, want %q / %q", out.String(), errb.String(), tt.out, tt.err)
			}
		})
	}
}

// TestInjectorFlagsFromEnvironment: every flag also reads SIDELANE_INJECTOR_<FLAG>.
func TestInjectorFlagsFromEnvironment(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: app:1}]\n"
	t.Setenv("SIDELANE_INJECTOR_PROXY_IMAGE", "r.test/proxy:env")
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"inject", "-f", "-"}, strings.NewReader(pod), &out, &errb); code != 0 || !strings.Contains(out.String(), "image: r.test/proxy:env") {
		t.Errorf("exit %d, stdout %q, stderr %q: want the image from SIDELANE_INJECTOR_PROXY_IMAGE", code, out.String(), errb.String())
	}
	t.Setenv("SIDELANE_INJECTOR_LOG_LEVEL", "loud")
	errb.Reset()
	if code := Main(context.Background(), []string{"serve"}, nil, io.Discard, &errb); code != 1 || !strings.Contains(errb.String(), "--log-level") {
		t.Errorf("serve with SIDELANE_INJECTOR_LOG_LEVEL=loud: exit %d, stderr %q", code, errb.String())
	}
}

func TestSplitList(t *testing.T) {
	got := splitList(" kube-system, ,sidelane-system,")
	if len(got) != 2 || got[0] != "kube-system" || got[1] != "sidelane-system" {
		t.Errorf("splitList = %q", got)
	}
}
