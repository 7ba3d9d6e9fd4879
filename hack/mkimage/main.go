// Command mkimage builds and pushes Sidelane's container images without Docker (used by
// hack/images.sh; see internal/ociimage).
//
//	mkimage build -ref sidelane/proxy:dev -out bin/images/proxy.tar \
//	    -file /usr/local/bin/sidelane-proxy=bin/sidelane-proxy [-file ...] \
//	    -entrypoint /usr/local/bin/sidelane-proxy [-arg run] [-user 1337:1337]
//	mkimage push -archive bin/images/proxy.tar -dst registry.example/sidelane/proxy:dev
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sidelane/sidelane/internal/ociimage"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: mkimage build|push ..."))
	}
	switch os.Args[1] {
	case "build":
		fs := flag.NewFlagSet("build", flag.ExitOnError)
		ref := fs.String("ref", "", "image name, repository:tag without a registry host")
		out := fs.String("out", "", "OCI archive to write")
		user := fs.String("user", "", "numeric uid[:gid]")
		var files, entry, args listFlag
		fs.Var(&files, "file", "IMAGE_PATH=HOST_FILE (repeatable)")
		fs.Var(&entry, "entrypoint", "entrypoint word (repeatable)")
		fs.Var(&args, "arg", "default argument (repeatable)")
		fs.Parse(os.Args[2:])
		if *ref == "" || *out == "" {
			fail(fmt.Errorf("build: -ref and -out are required"))
		}
		tag, err := ociimage.ParseLocalRef(*ref)
		if err != nil {
			fail(err)
		}
		spec := ociimage.Spec{Entrypoint: entry, Cmd: args, User: *user}
		for _, f := range files {
			in, src, ok := strings.Cut(f, "=")
			if !ok {
				fail(fmt.Errorf("build: -file %q: want IMAGE_PATH=HOST_FILE", f))
			}
			spec.Files = append(spec.Files, ociimage.File{Path: in, Source: src})
		}
		img, err := ociimage.Build(spec)
		if err != nil {
			fail(fmt.Errorf("build %s: %w", *ref, err))
		}
		if err := ociimage.WriteArchiveFile(*out, tag, img); err != nil {
			fail(fmt.Errorf("build %s: %w", *ref, err))
		}
		d, _ := img.Digest()
		fmt.Printf("%s %s %s\n", *out, *ref, d)
	case "push":
		fs := flag.NewFlagSet("push", flag.ExitOnError)
		archive := fs.String("archive", "", "OCI archive written by mkimage build")
		dst := fs.String("dst", "", "destination reference, registry/repository:tag")
		fs.Parse(os.Args[2:])
		if *archive == "" || *dst == "" {
			fail(fmt.Errorf("push: -archive and -dst are required"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		d, err := ociimage.Push(ctx, *archive, *dst)
		if err != nil {
			fail(err)
		}
		fmt.Printf("pushed %s@%s\n", *dst, d)
	default:
		fail(fmt.Errorf("unknown command %q: want build or push", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}
