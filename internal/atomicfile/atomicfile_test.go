package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name string
		old  string // "" means no file before
		data string
		mode os.FileMode
		opts []Option
	}{
		{"new file", "", "hello\n", 0o644, nil},
		{"replace", "old content that is longer\n", "new\n", 0o600, nil},
		{"empty", "x", "", 0o755, nil},
		{"new file without fsync", "", "hello\n", 0o600, []Option{NoSync}},
		{"replace without fsync", "old content that is longer\n", "new\n", 0o600, []Option{NoSync}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f.conflist")
			if tt.old != "" {
				if err := os.WriteFile(path, []byte(tt.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte(tt.data), tt.mode, tt.opts...); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tt.data {
				t.Fatalf("content %q, %v; want %q", got, err, tt.data)
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != tt.mode {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.mode)
			}
			assertOnly(t, dir, "f.conflist")
		})
	}
}

func TestWriteFromFailureLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "record.json")
	os.WriteFile(path, []byte("old"), 0o600)
	boom := errors.New("boom")
	err := WriteFrom(path, 0o600, func(w io.Writer) error {
		io.WriteString(w, "half of the new con")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap the writer's error", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("content after a failed write: %q", got)
	}
	assertOnly(t, dir, "record.json")
}

func TestWriteMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := Write(path, []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want an error naming %s", err, path)
	}
}

// assertOnly checks that dir holds exactly name: no temporary file was left behind.
func assertOnly(t *testing.T, dir, name string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != name {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only %s", names, name)
	}
}
