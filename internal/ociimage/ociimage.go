// Package ociimage builds Sidelane's container images without Docker: an empty base, one
// layer holding static binaries, and an image configuration (entrypoint, user, environment).
//
// Images are reproducible: file times are fixed and no creation time is recorded, so the same
// binaries always give the same digest. WriteArchive writes an OCI image-layout tarball that
// `ctr -n k8s.io images import` accepts (it also carries a Docker-style manifest.json, so the
// name is normalised the way the kubelet looks it up), and Push sends an image to a registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one file placed in the image.
type File struct {
	// Path is the absolute path inside the image, e.g. /usr/local/bin/sidelane-proxy.
	Path string
	// Source is the file on the host to copy (typically a static binary).
	Source string
	// Mode is the file mode in the image; 0 means 0755.
	Mode os.FileMode
}

// Spec describes an image.
type Spec struct {
	Files      []File
	Entrypoint []string
	Cmd        []string
	// User is the image's default user, numeric ("1337:1337") so that runAsNonRoot can verify it.
	User string
	Env  []string
	// OS and Architecture of the binaries; empty means linux/amd64.
	OS           string
	Architecture string
	// Labels go into the image configuration.
	Labels map[string]string
}

// fixedTime is the modification time of every file in a layer, for reproducible digests.
var fixedTime = time.Unix(0, 0).UTC()

// Build returns the image described by spec.
func Build(spec Spec) (v1.Image, error) {
	if len(spec.Files) == 0 {
		return nil, errors.New("image spec has no files")
	}
	if len(spec.Entrypoint) == 0 {
		return nil, errors.New("image spec has no entrypoint")
	}
	if spec.User != "" {
		if err := checkNumericUser(spec.User); err != nil {
			return nil, err
		}
	}
	layerTar, err := layerTarball(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = orDefault(spec.OS, "linux")
	cf.Architecture = orDefault(spec.Architecture, "amd64")
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.User = spec.User
	cf.Config.WorkingDir = "/"
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, spec.Env...)
	cf.Config.Labels = spec.Labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// layerTarball returns an uncompressed tar holding files and their parent directories.
func layerTarball(files []File) ([]byte, error) {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	seen := map[string]bool{}
	for _, f := range sorted {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			return nil, fmt.Errorf("image file path %q must be absolute and name a file", f.Path)
		}
		if seen[p] {
			return nil, fmt.Errorf("image file path %q given twice", f.Path)
		}
		seen[p] = true
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("read %s for %s: %w", f.Source, p, err)
		}
		if err := writeParents(tw, path.Dir(p), dirs); err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(p, "/"), Mode: int64(mode.Perm()),
			Size: int64(len(data)), ModTime: fixedTime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write tar header for %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("write %s into layer: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

func writeParents(tw *tar.Writer, dir string, done map[string]bool) error {
	if dir == "/" || done[dir] {
		return nil
	}
	if err := writeParents(tw, path.Dir(dir), done); err != nil {
		return err
	}
	done[dir] = true
	hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755,
		ModTime: fixedTime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar header for %s: %w", dir, err)
	}
	return nil
}

func checkNumericUser(user string) error {
	for _, part := range strings.Split(user, ":") {
		if part == "" || strings.Trim(part, "0123456789") != "" {
			return fmt.Errorf("image user %q must be numeric uid[:gid] so that runAsNonRoot can verify it", user)
		}
	}
	if strings.Count(user, ":") > 1 {
		return fmt.Errorf("image user %q must be numeric uid[:gid]", user)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ParseLocalRef checks an image reference meant for the local cluster: a repository and a tag
// with no registry host (e.g. "sidelane/proxy:dev"), and returns it in the normalised form the
// container runtime stores it under.
func ParseLocalRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.Contains(last, ":") {
		return name.Tag{}, fmt.Errorf("image reference %q has no tag; want repository:tag", ref)
	}
	first, _, hasSlash := strings.Cut(ref, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return name.Tag{}, fmt.Errorf("image reference %q names a registry host; local images are repository:tag only", ref)
	}
	return tag, nil
}
