package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/sidelane/sidelane/internal/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/*/golden")

// readDir returns every regular file of dir (name → bytes).
func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// copyDir copies testdata into a fresh conf dir with old modification times (a file that was
// just written counts as "being written" while invalid).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for name, content := range readDir(t, from) {
		p := filepath.Join(to, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func diffDirs(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		g, gok := got[n]
		w, wok := want[n]
		switch {
		case !gok:
			t.Errorf("%s: %s missing", what, n)
		case !wok:
			t.Errorf("%s: unexpected file %s:\n%s", what, n, g)
		case g != w:
			t.Errorf("%s: %s differs:\n--- got\n%s\n--- want\n%s", what, n, g, w)
		}
	}
}

type env struct {
	cfg            Config
	conf, bin, src string
}

func newEnv(t *testing.T) env {
	t.Helper()
	root := t.TempDir()
	e := env{conf: filepath.Join(root, "net.d"), bin: filepath.Join(root, "bin"), src: filepath.Join(root, "sidelane-cni.src")}
	for _, d := range []string{e.conf, e.bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(e.src, []byte("#!/bin/sh\necho plugin\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		CNIConfDir:   e.conf,
		CNIBinDir:    e.bin,
		SourceBinary: e.src,
		StateDir:     filepath.Join(root, "state"),
		PollInterval: 20 * time.Millisecond,
	}
	return e
}

func TestInstallUninstallGolden(t *testing.T) {
	cases := []struct {
		dir      string
		confName string
		// primary is the conflist that must hold our entry afterwards.
		primary string
		wantErr string
	}{
		{dir: "calico", primary: "10-calico.conflist"},
		{dir: "flannel", primary: "10-flannel.conflist"},
		{dir: "cilium", primary: "05-cilium.conflist"},
		{dir: "aws-vpc", primary: "10-aws.conflist"},
		{dir: "weave", primary: "10-weave.conflist"},
		{dir: "multus", primary: "00-multus.conflist"},
		{dir: "conf-only", primary: "10-bridge.conflist"},
		{dir: "several", primary: "05-cilium.conflist"},
		{dir: "several-override", confName: "10-calico.conflist", primary: "10-calico.conflist"},
		{dir: "broken", primary: "10-calico.conflist"},
		{dir: "broken-chosen", confName: "05-broken.conflist", wantErr: "the named primary (--cni-conf-name) 05-broken.conflist is invalid"},
		{dir: "existing-entry", primary: "10-calico.conflist"},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			e := newEnv(t)
			e.cfg.ConfName = tc.confName
			in := filepath.Join("testdata", tc.dir, "in")
			copyDir(t, in, e.conf)
			before := readDir(t, e.conf)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tc.wantErr != "" {
				ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
			}
			err := Install(ctx, e.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Install error = %v, want one containing %q", err, tc.wantErr)
				}
				diffDirs(t, "conf dir after failed install", readDir(t, e.conf), before)
				return
			}
			if err != nil {
				t.Fatalf("Install: %v", err)
			}
			got := readDir(t, e.conf)
			golden := filepath.Join("testdata", tc.dir, "golden")
			if *update {
				os.RemoveAll(golden)
				os.MkdirAll(golden, 0o755)
				for n, c := range got {
					os.WriteFile(filepath.Join(golden, n), []byte(c), 0o644)
				}
			}
			diffDirs(t, "after install", got, readDir(t, golden))
			checkChained(t, filepath.Join(e.conf, tc.primary))
			if b, err := os.ReadFile(filepath.Join(e.bin, contract.PluginBinary)); err != nil || !bytes.HasPrefix(b, []byte("#!/bin/sh")) {
				t.Errorf("plugin binary not installed: %v", err)
			}

			// Idempotent: a second install (and a fresh state, like a restarted agent with its
			// state intact) changes no byte.
			if err := Install(ctx, e.cfg); err != nil {
				t.Fatalf("second Install: %v", err)
			}
			diffDirs(t, "after second install", readDir(t, e.conf), got)

			if err := Uninstall(e.cfg, RemoveAll); err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			want := before
			if alt := filepath.Join("testdata", tc.dir, "uninstalled"); dirExists(alt) {
				want = readDir(t, alt)
			}
			diffDirs(t, "after uninstall", readDir(t, e.conf), want)
			if _, err := os.Stat(filepath.Join(e.bin, contract.PluginBinary)); !os.IsNotExist(err) {
				t.Errorf("plugin binary still there after uninstall: %v", err)
			}
			if _, err := os.Stat(statePath(e.cfg)); !os.IsNotExist(err) {
				t.Errorf("state file still there after uninstall: %v", err)
			}
		})
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// checkChained asserts, with libcni's own loader, that path is the network config a runtime
// would load and that sidelane-cni is its last plugin, exactly once, with the list's cniVersion.
func checkChained(t *testing.T, path string) {
	t.Helper()
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("libcni cannot load %s: %v", path, err)
	}
	n := 0
	for _, p := range list.Plugins {
		if p.Network.Type == contract.PluginType {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s holds %d sidelane-cni entries, want 1", path, n)
	}
	last := list.Plugins[len(list.Plugins)-1]
	if last.Network.Type != contract.PluginType {
		t.Errorf("%s: last plugin is %q, want %q", path, last.Network.Type, contract.PluginType)
	}
	var entry map[string]any
	if err := json.Unmarshal(last.Bytes, &entry); err != nil {
		t.Fatal(err)
	}
	for k, v := range DefaultPluginConfig() {
		gb, _ := json.Marshal(entry[k])
		wb, _ := json.Marshal(v)
		if string(gb) != string(wb) {
			t.Errorf("%s: entry field %s = %s, want %s", path, k, gb, wb)
		}
	}
}

func TestInstallWaitsForPrimary(t *testing.T) {
	e := newEnv(t)
	// Only files no runtime would load: a README, a directory.
	os.WriteFile(filepath.Join(e.conf, "README"), []byte("hello\n"), 0o644)
	os.Mkdir(filepath.Join(e.conf, "multus.d"), 0o755)
	before := readDir(t, e.conf)

	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { done <- Install(ctx, e.cfg) }()

	// While it waits, nothing appears in the conf dir.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("Install returned while there is no primary config: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		diffDirs(t, "while waiting", readDir(t, e.conf), before)
		if t.Failed() {
			return
		}
	}
	// The primary CNI arrives.
	copyDir(t, filepath.Join("testdata", "calico", "in"), e.conf)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Install: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Install did not finish after the primary config appeared")
	}
	checkChained(t, filepath.Join(e.conf, "10-calico.conflist"))

	// A cancelled wait says why.
	e2 := newEnv(t)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	err := Install(ctx2, e2.cfg)
	if !errors.Is(err, ErrNoPrimary) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Install with no primary = %v, want ErrNoPrimary and DeadlineExceeded", err)
	}
	if got := readDir(t, e2.conf); len(got) != 0 {
		t.Fatalf("files written while waiting: %v", got)
	}
}

func TestUninstallAfterRestartUsesState(t *testing.T) {
	// Install, then the primary rewrites its file in another format (our entry kept by a
	// careless tool, say); the exact bytes the primary last wrote without us come back.
	e := newEnv(t)
	copyDir(t, filepath.Join("testdata", "flannel", "in"), e.conf)
	ctx := context.Background()
	if err := Install(ctx, e.cfg); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.conf, "10-flannel.conflist")
	primaryV2 := []byte(`{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":false}}]}`)
	if err := os.WriteFile(p, primaryV2, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, e.cfg); err != nil { // what the watcher does after the event
		t.Fatal(err)
	}
	checkChained(t, p)
	// A new process: nothing in memory, only the state file.
	if err := Uninstall(Config{CNIConfDir: e.conf, CNIBinDir: e.bin, StateDir: e.cfg.StateDir}, RemoveAll); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, primaryV2) {
		t.Fatalf("after uninstall:\n%s\nwant the primary's last bytes:\n%s", got, primaryV2)
	}
}

func TestUpgradeKeepsEverything(t *testing.T) {
	e := newEnv(t)
	copyDir(t, filepath.Join("testdata", "calico", "in"), e.conf)
	if err := Install(context.Background(), e.cfg); err != nil {
		t.Fatal(err)
	}
	before := readDir(t, e.conf)
	if err := Uninstall(e.cfg, KeepForUpgrade); err != nil {
		t.Fatal(err)
	}
	diffDirs(t, "after upgrade-mode uninstall", readDir(t, e.conf), before)
	if _, err := os.Stat(filepath.Join(e.bin, contract.PluginBinary)); err != nil {
		t.Fatalf("binary removed in upgrade mode: %v", err)
	}
}

// TestLegacyCredentialsRemoved: an agent of this release, installing over an older one, removes
// the plugin kubeconfig and token copy the older one wrote, and rewrites the older entry (which
// has a "kubeconfig" field) without it; the primary's own fields stay.
func TestLegacyCredentialsRemoved(t *testing.T) {
	e := newEnv(t)
	old := `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0"},` +
		`{"type":"sidelane-cni","kubeconfig":"/etc/cni/net.d/sidelane-kubeconfig","agent_socket":"/var/run/sidelane/cni.sock"}]}`
	p := filepath.Join(e.conf, "10-k8s.conflist")
	os.WriteFile(p, []byte(old), 0o644)
	for _, n := range contract.LegacyCredentialFiles {
		os.WriteFile(filepath.Join(e.conf, n), []byte("secret\n"), 0o600)
	}
	if err := Install(context.Background(), e.cfg); err != nil {
		t.Fatal(err)
	}
	got := readDir(t, e.conf)
	for _, n := range contract.LegacyCredentialFiles {
		if _, ok := got[n]; ok {
			t.Errorf("%s left after install", n)
		}
	}
	b, _ := os.ReadFile(p)
	if strings.Contains(string(b), "kubeconfig") || !strings.Contains(string(b), `"bridge":"cni0"`) {
		t.Errorf("conflist after install:\n%s\nwant our entry without kubeconfig and the primary's entry kept", b)
	}
	checkChained(t, p)
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"conf name with dir", Config{ConfName: "../x.conflist"}, "CNI conf name"},
		{"conf name ext", Config{ConfName: "x.yaml"}, "CNI conf name"},
		{"wrong type", Config{PluginConfig: map[string]any{"type": "bridge"}}, "must be \"sidelane-cni\""},
		{"missing binary", Config{SourceBinary: "/nonexistent/sidelane-cni"}, "source binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestCopyBinarySkipsIdentical(t *testing.T) {
	e := newEnv(t)
	dst := filepath.Join(e.bin, contract.PluginBinary)
	wrote, err := copyBinary(e.src, dst)
	if err != nil || !wrote {
		t.Fatalf("first copy: wrote=%v err=%v", wrote, err)
	}
	st1, _ := os.Stat(dst)
	wrote, err = copyBinary(e.src, dst)
	if err != nil || wrote {
		t.Fatalf("second copy: wrote=%v err=%v, want a skip", wrote, err)
	}
	st2, _ := os.Stat(dst)
	if !os.SameFile(st1, st2) {
		t.Fatal("identical binary was replaced")
	}
	if st2.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", st2.Mode().Perm())
	}
	os.WriteFile(e.src, []byte("#!/bin/sh\necho v2\n"), 0o755)
	if wrote, err = copyBinary(e.src, dst); err != nil || !wrote {
		t.Fatalf("changed binary: wrote=%v err=%v", wrote, err)
	}
	if b, _ := os.ReadFile(dst); !bytes.Contains(b, []byte("v2")) {
		t.Fatal("new binary not copied")
	}
	if left, _ := filepath.Glob(filepath.Join(e.bin, ".*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
