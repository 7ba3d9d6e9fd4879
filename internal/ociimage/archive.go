package ociimage

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sidelane/sidelane/internal/atomicfile"
)

// dockerManifestEntry is one entry of a Docker-style manifest.json (as `docker save` writes).
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// WriteArchive writes img as an OCI image-layout tarball to w, named ref.
//
// The archive holds oci-layout, index.json and blobs/sha256/*. containerd's importer takes the
// image name verbatim from the io.containerd.image.name annotation of index.json, while the
// kubelet asks for the normalised name, so the annotation carries RuntimeName(ref) ("sidelane/
// proxy:dev" becomes its fully qualified Docker form); no registry host is written by hand.
// A Docker-style manifest.json pointing at the same blobs (as `docker save` writes since
// Docker 25) lets `docker load` accept the file too.
func WriteArchive(w io.Writer, ref name.Tag, img v1.Image) error {
	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("image media type: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	configName, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("image config digest: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image layers: %w", err)
	}

	shortRef := ref.String()
	runtimeName, err := RuntimeName(shortRef)
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     "application/vnd.oci.image.index.v1+json",
		Manifests: []v1.Descriptor{{
			MediaType: mediaType,
			Size:      int64(len(manifest)),
			Digest:    digest,
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{
				"org.opencontainers.image.ref.name": ref.TagStr(),
				// containerd's importer names the image after this annotation, verbatim.
				"io.containerd.image.name": runtimeName,
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return fmt.Errorf("encode index.json: %w", err)
	}
	docker := []dockerManifestEntry{{Config: blobPath(configName), RepoTags: []string{shortRef}}}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer size: %w", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: blobPath(d), Mode: 0o644, Size: size, ModTime: fixedTime}
		if err := tw.WriteHeader(hdr); err != nil {
			rc.Close()
			return fmt.Errorf("write layer %s: %w", d, err)
		}
		_, err = io.Copy(tw, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("write layer %s: %w", d, err)
		}
		docker[0].Layers = append(docker[0].Layers, blobPath(d))
	}
	if err := put(blobPath(configName), config); err != nil {
		return err
	}
	if err := put(blobPath(digest), manifest); err != nil {
		return err
	}
	if err := put("index.json", indexJSON); err != nil {
		return err
	}
	dockerJSON, err := json.Marshal(docker)
	if err != nil {
		return fmt.Errorf("encode manifest.json: %w", err)
	}
	if err := put("manifest.json", dockerJSON); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close archive: %w", err)
	}
	return nil
}

// WriteArchiveFile writes the archive to path atomically (a temporary file renamed into place).
func WriteArchiveFile(path string, ref name.Tag, img v1.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := atomicfile.WriteFrom(path, 0o644, func(w io.Writer) error { return WriteArchive(w, ref, img) }); err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	return nil
}

// RuntimeName is the name a container runtime stores and looks up for ref: the familiar
// Docker normalisation ("sidelane/proxy:dev" → its fully qualified form), as containerd's CRI
// plugin and the kubelet apply it.
func RuntimeName(ref string) (string, error) {
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return reference.TagNameOnly(n).String(), nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
