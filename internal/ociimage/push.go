package ociimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// OpenArchive reads the image of an archive written by WriteArchive. The archive is unpacked
// into a temporary directory that stays until the returned cleanup function is called.
func OpenArchive(archive string) (v1.Image, func(), error) {
	dir, err := os.MkdirTemp("", "sidelane-image-")
	if err != nil {
		return nil, nil, fmt.Errorf("unpack %s: %w", archive, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	if err := untar(archive, dir); err != nil {
		cleanup()
		return nil, nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%s is not an OCI image layout: %w", archive, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%s: index.json: %w", archive, err)
	}
	if len(im.Manifests) != 1 {
		cleanup()
		return nil, nil, fmt.Errorf("%s holds %d images, want exactly 1", archive, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%s: image %s: %w", archive, im.Manifests[0].Digest, err)
	}
	return img, cleanup, nil
}

func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("open image archive: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", archive, err)
		}
		clean := filepath.Clean(hdr.Name)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("%s: entry %q leaves the archive", archive, hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
		out, err := os.Create(dst)
		if err != nil {
			return fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
	}
}

// Push uploads the image of archive to dst (a full reference such as
// registry.example/sidelane/proxy:v1) with the credentials of the Docker config
// (~/.docker/config.json), as `crane push` would.
func Push(ctx context.Context, archive, dst string, opts ...name.Option) (v1.Hash, error) {
	ref, err := name.ParseReference(dst, opts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("destination %q: %w", dst, err)
	}
	img, cleanup, err := OpenArchive(archive)
	if err != nil {
		return v1.Hash{}, err
	}
	defer cleanup()
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("digest of %s: %w", archive, err)
	}
	return d, nil
}
