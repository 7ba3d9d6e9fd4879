package manualcmd

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sidelane/sidelane/internal/inject"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: app:1}]\n"
	bad := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {redirect.sidelane.io/proxy-gid: x}}\nspec:\n  containers: [{name: app, image: app:1}]\n"
	tpl := filepath.Join(dir, "tpl.yaml")
	if err := os.WriteFile(tpl, []byte("image: r.test/proxy:file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		stdin     string
		want      []string // in the output
		wantNot   []string
		wantErr   string
		outFile   bool
		noOutFile bool
	}{
		{name: "defaults", args: []string{"-f", "-"}, stdin: pod, want: []string{"image: " + inject.DefaultImage, "name: sidelane-proxy", "initContainers"}},
		{name: "template file over the base", args: []string{"-f", "-", "--template", tpl}, stdin: pod, want: []string{"image: r.test/proxy:file"}},
		{name: "flag over the template file", args: []string{"--filename", "-", "--template", tpl, "--image", "r.test/proxy:flag"}, stdin: pod, want: []string{"image: r.test/proxy:flag"}},
		{name: "regular container", args: []string{"-f", "-", "--native-sidecar=false", "--proxy-image-pull-policy=Always"}, stdin: pod, want: []string{"imagePullPolicy: Always"}, wantNot: []string{"initContainers"}},
		{name: "to a file", args: []string{"-f", "-", "-o", filepath.Join(dir, "out.yaml")}, stdin: pod, outFile: true, want: []string{"name: sidelane-proxy"}},
		{name: "refused: no file", args: []string{"-f", "-", "-o", filepath.Join(dir, "refused.yaml")}, stdin: bad, wantErr: "redirect.sidelane.io/proxy-gid", noOutFile: true},
		{name: "no -f", args: nil, wantErr: ErrNoFile.Error()},
		{name: "bad native", args: []string{"-f", "-", "--native-sidecar=maybe"}, stdin: pod, wantErr: `--native-sidecar "maybe"`},
		{name: "missing input", args: []string{"-f", filepath.Join(dir, "none.yaml")}, wantErr: "none.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var m Flags
			m.Register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := m.Run(inject.DefaultTemplate(), strings.NewReader(tc.stdin), &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.noOutFile {
					if _, err := os.Stat(m.Out); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("output file written for a refused document: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if tc.outFile {
				b, err := os.ReadFile(m.Out)
				if err != nil {
					t.Fatal(err)
				}
				got = string(b)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("output has %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestRegisterKeepsTheFlagSetsOwn: a name the command already has (kubectl-sidelane's -o) is
// left to it.
func TestRegisterKeepsTheFlagSetsOwn(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	format := fs.String("o", "table", "output format")
	var m Flags
	m.Register(fs)
	if err := fs.Parse([]string{"-o", "json", "-f", "x"}); err != nil {
		t.Fatal(err)
	}
	if *format != "json" || m.Out != "-" || m.File != "x" {
		t.Errorf("format %q out %q file %q", *format, m.Out, m.File)
	}
}
