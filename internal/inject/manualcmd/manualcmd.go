// Package manualcmd is the command line of manual injection, shared by `sidelane-injector
// inject` and `kubectl sidelane inject`: the same flags, the same template rules and the same
// output handling (package inject does the injection itself).
package manualcmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"

	"github.com/sidelane/sidelane/internal/atomicfile"
	"github.com/sidelane/sidelane/internal/inject"
)

// ErrNoFile is Run's error when -f was not given.
var ErrNoFile = errors.New("-f is required (a file, or - for stdin)")

// Flags are the manual-injection flags.
type Flags struct {
	File, Out, TemplateFile, Image, PullPolicy, NativeSidecar string
}

// Register defines the flags on fs: -f (also --filename), -o, --template, --proxy-image (also
// --image), --proxy-image-pull-policy and --native-sidecar. A name fs already has keeps its
// meaning there (kubectl-sidelane's -o is its output format: its inject writes to stdout).
func (f *Flags) Register(fs *flag.FlagSet) {
	f.Out = "-"
	str := func(p *string, name, def, usage string) {
		if fs.Lookup(name) == nil {
			fs.StringVar(p, name, def, usage)
		}
	}
	str(&f.File, "f", "", `YAML file to inject ("-" for stdin)`)
	str(&f.File, "filename", "", `same as -f`)
	str(&f.Out, "o", "-", `output file ("-" for stdout; a file is written atomically, and not at all when a document is refused)`)
	str(&f.TemplateFile, "template", "", "injection template file (YAML/JSON: image, imagePullPolicy, resources, nativeSidecar, logLevel; default: built-in)")
	str(&f.Image, "proxy-image", "", "proxy image (over the template's)")
	str(&f.Image, "image", "", "same as --proxy-image")
	str(&f.PullPolicy, "proxy-image-pull-policy", "", "proxy imagePullPolicy (over the template's)")
	str(&f.NativeSidecar, "native-sidecar", "", "true/false: override the template's nativeSidecar")
}

// Template is base, then the template file, then the flags that were given.
func (f *Flags) Template(base inject.Template) (inject.Template, error) {
	t := base
	if f.TemplateFile != "" {
		var err error
		if t, err = inject.LoadTemplateFile(f.TemplateFile, base); err != nil {
			return t, err
		}
	}
	if f.Image != "" {
		t.Image = f.Image
	}
	if f.PullPolicy != "" {
		t.ImagePullPolicy = corev1.PullPolicy(f.PullPolicy)
	}
	switch f.NativeSidecar {
	case "":
	case "true", "false":
		t.NativeSidecar = f.NativeSidecar == "true"
	default:
		return t, fmt.Errorf("--native-sidecar %q: want true or false", f.NativeSidecar)
	}
	return t, nil
}

// Run injects the -f input (stdin for "-") with the template (see Template) into the -o output
// (stdout for "-"; a file is replaced atomically, so that a refused document leaves none).
func (f *Flags) Run(base inject.Template, stdin io.Reader, stdout io.Writer) error {
	if f.File == "" {
		return ErrNoFile
	}
	t, err := f.Template(base)
	if err != nil {
		return err
	}
	r := stdin
	if f.File != "-" {
		in, err := os.Open(f.File)
		if err != nil {
			return err
		}
		defer in.Close()
		r = in
	}
	if f.Out == "-" {
		return inject.InjectYAML(r, stdout, t)
	}
	return atomicfile.WriteFrom(f.Out, 0o644, func(w io.Writer) error { return inject.InjectYAML(r, w, t) })
}
