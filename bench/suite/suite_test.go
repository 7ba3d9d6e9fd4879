package suite

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMainFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout
		err  string // in stderr
	}{
		{name: "unknown flag", args: []string{"-bogus"}, code: 2, err: "flag provided but not defined: -bogus"},
		{name: "help", args: []string{"-h"}, code: 0, err: "-only"},
		{name: "no area selected", args: []string{"-only", "none", "-out", "OUT"}, code: 0, out: "results: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.ReplaceAll(a, "OUT", dir)
			}
			var stdout, stderr bytes.Buffer
			if code := Main(context.Background(), args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
				t.Fatalf("stdout %q, stderr %q; want %q and %q", stdout.String(), stderr.String(), tc.out, tc.err)
			}
			if tc.out != "" {
				if _, err := os.Stat(filepath.Join(dir, "latest.json")); err != nil {
					t.Fatalf("no results file: %v", err)
				}
			}
		})
	}
}
