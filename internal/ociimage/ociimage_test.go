package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func testSpec(t *testing.T) Spec {
	return Spec{
		Files: []File{
			{Path: "/usr/local/bin/tool", Source: writeFile(t, "#!tool\n")},
			{Path: "/usr/local/bin/helper", Source: writeFile(t, "helper"), Mode: 0o555},
		},
		Entrypoint: []string{"/usr/local/bin/tool", "run"},
		User:       "1337:1337",
	}
}

// archiveFiles reads a tar into name → content.
func archiveFiles(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b
	}
}

func TestBuildImage(t *testing.T) {
	img, err := Build(testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/usr/local/bin/tool run" {
		t.Errorf("entrypoint %q", got)
	}
	if cf.Config.User != "1337:1337" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config user %q os %q arch %q", cf.Config.User, cf.OS, cf.Architecture)
	}
	mt, _ := img.MediaType()
	if mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest media type %q, want OCI", mt)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string]int64{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = hdr.Mode
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v, want root-owned with a fixed time", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
	}
	want := map[string]int64{"usr/": 0o755, "usr/local/": 0o755, "usr/local/bin/": 0o755,
		"usr/local/bin/helper": 0o555, "usr/local/bin/tool": 0o755}
	if len(got) != len(want) {
		t.Errorf("layer entries %v, want %v", got, want)
	}
	for k, m := range want {
		if got[k] != m {
			t.Errorf("layer entry %s mode %o, want %o (entries %v)", k, got[k], m, got)
		}
	}
}

func TestBuildIsReproducible(t *testing.T) {
	spec := testSpec(t)
	a, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("same inputs gave digests %s and %s", da, db)
	}
}

func TestBuildRejectsBadSpecs(t *testing.T) {
	good := writeFile(t, "x")
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"no files", Spec{Entrypoint: []string{"/x"}}, "no files"},
		{"no entrypoint", Spec{Files: []File{{Path: "/x", Source: good}}}, "no entrypoint"},
		{"relative path", Spec{Files: []File{{Path: "x", Source: good}}, Entrypoint: []string{"/x"}}, `"x" must be absolute`},
		{"root path", Spec{Files: []File{{Path: "/", Source: good}}, Entrypoint: []string{"/x"}}, `"/" must be absolute`},
		{"duplicate", Spec{Files: []File{{Path: "/x", Source: good}, {Path: "/x/", Source: good}}, Entrypoint: []string{"/x"}}, "given twice"},
		{"missing source", Spec{Files: []File{{Path: "/x", Source: "/nonexistent/sidelane"}}, Entrypoint: []string{"/x"}}, "/nonexistent/sidelane"},
		{"user name", Spec{Files: []File{{Path: "/x", Source: good}}, Entrypoint: []string{"/x"}, User: "nobody"}, `"nobody" must be numeric`},
		{"user empty gid", Spec{Files: []File{{Path: "/x", Source: good}}, Entrypoint: []string{"/x"}, User: "1:"}, `"1:" must be numeric`},
		{"user three parts", Spec{Files: []File{{Path: "/x", Source: good}}, Entrypoint: []string{"/x"}, User: "1:2:3"}, `"1:2:3" must be numeric`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseLocalRef(t *testing.T) {
	tests := []struct {
		ref     string
		wantErr string
	}{
		{"sidelane/proxy:dev", ""},
		{"proxy:v1.2.3", ""},
		{"sidelane/proxy", "has no tag"},
		{"registry.example/sidelane/proxy:dev", "names a registry host"},
		{"localhost/sidelane/proxy:dev", "names a registry host"},
		{"host:5000/proxy:dev", "names a registry host"},
		{"Sidelane/Proxy:dev", "Sidelane/Proxy:dev"},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			_, err := ParseLocalRef(tc.ref)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRuntimeName(t *testing.T) {
	tests := []struct{ ref, want string }{
		{"sidelane/proxy:dev", "docker.io/sidelane/proxy:dev"},
		{"pause:1", "docker.io/library/pause:1"},
		{"sidelane/proxy", "docker.io/sidelane/proxy:latest"},
	}
	for _, tc := range tests {
		got, err := RuntimeName(tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("RuntimeName(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := RuntimeName("bad ref!"); err == nil {
		t.Error("RuntimeName accepted an invalid reference")
	}
}

func TestWriteArchive(t *testing.T) {
	img, err := Build(testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	tag, err := ParseLocalRef("sidelane/tool:dev")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, tag, img); err != nil {
		t.Fatal(err)
	}
	files := archiveFiles(t, bytes.NewReader(buf.Bytes()))
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", files["oci-layout"])
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	digest, _ := img.Digest()
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digest {
		t.Fatalf("index.json manifests %+v, want one with digest %s", idx.Manifests, digest)
	}
	ann := idx.Manifests[0].Annotations
	if ann["io.containerd.image.name"] != "docker.io/sidelane/tool:dev" || ann["org.opencontainers.image.ref.name"] != "dev" {
		t.Errorf("index annotations %v", ann)
	}
	var docker []dockerManifestEntry
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(docker) != 1 || len(docker[0].RepoTags) != 1 || docker[0].RepoTags[0] != "sidelane/tool:dev" {
		t.Fatalf("manifest.json %+v", docker)
	}
	// Every blob named anywhere is present, and its content has its digest.
	names := append([]string{docker[0].Config, blobPath(digest)}, docker[0].Layers...)
	for _, n := range names {
		data, ok := files[n]
		if !ok {
			t.Errorf("blob %s missing from the archive", n)
			continue
		}
		h, _, err := v1.SHA256(bytes.NewReader(data))
		if err != nil || blobPath(h) != n {
			t.Errorf("blob %s has digest %s", n, h)
		}
	}
}

func TestArchiveRoundTripAndPush(t *testing.T) {
	img, err := Build(testSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := ParseLocalRef("sidelane/tool:dev")
	archive := filepath.Join(t.TempDir(), "images", "tool.tar")
	if err := WriteArchiveFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	back, cleanup, err := OpenArchive(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	want, _ := img.Digest()
	if got, _ := back.Digest(); got != want {
		t.Errorf("archive image digest %s, want %s", got, want)
	}

	// A real registry on loopback (go-containerregistry's in-memory implementation).
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dst := host + "/sidelane/tool:v1"
	d, err := Push(context.Background(), archive, dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if d != want {
		t.Errorf("pushed digest %s, want %s", d, want)
	}
	ref, _ := name.ParseReference(dst, name.Insecure)
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull back: %v", err)
	}
	if got, _ := pulled.Digest(); got != want {
		t.Errorf("registry has digest %s, want %s", got, want)
	}
}

func TestOpenArchiveErrors(t *testing.T) {
	if _, _, err := OpenArchive("/nonexistent/sidelane.tar"); err == nil || !strings.Contains(err.Error(), "/nonexistent/sidelane.tar") {
		t.Errorf("missing archive: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	os.WriteFile(bad, buf.Bytes(), 0o644)
	if _, _, err := OpenArchive(bad); err == nil || !strings.Contains(err.Error(), "leaves the archive") {
		t.Errorf("escaping entry: %v", err)
	}
	if _, err := Push(context.Background(), bad, "not a ref"); err == nil || !strings.Contains(err.Error(), "not a ref") {
		t.Errorf("bad destination: %v", err)
	}
}
