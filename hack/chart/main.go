// Command chart renders Sidelane's Helm chart into the kustomize base and lints it, with Helm's
// own library (helm.sh/helm/v4, pinned in this module's go.mod, apart from the main module so
// that none of it is linked into Sidelane's binaries). See package manifests.
//
//	go run . render [-chart DIR] [-base DIR]   write deploy/base (make manifests)
//	go run . check  [-chart DIR] [-base DIR]   exit 1, naming the files, when deploy/base differs
//	go run . lint   [-chart DIR]               helm lint --strict
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sidelane/sidelane/hack/chart/manifests"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chart render|check|lint [-chart DIR] [-base DIR]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	chartDir := fs.String("chart", "../../deploy/helm/sidelane", "the chart")
	baseDir := fs.String("base", "../../deploy/base", "the kustomize base rendered from the chart")
	_ = fs.Parse(os.Args[2:])
	if err := run(cmd, *chartDir, *baseDir); err != nil {
		fmt.Fprintln(os.Stderr, "chart "+cmd+": "+err.Error())
		os.Exit(1)
	}
}

func run(cmd, chartDir, baseDir string) error {
	switch cmd {
	case "lint":
		return manifests.Lint(chartDir, manifests.Namespace, nil)
	case "render", "check":
		files, err := manifests.RenderBase(chartDir)
		if err != nil {
			return err
		}
		if cmd == "render" {
			return manifests.Write(baseDir, files)
		}
		diffs, err := manifests.Diff(baseDir, files)
		if err != nil {
			return err
		}
		if len(diffs) > 0 {
			manifests.Print(os.Stderr, diffs)
			return fmt.Errorf("%s is not the chart rendered with its default values: run make manifests", baseDir)
		}
		return nil
	}
	return fmt.Errorf("unknown command (want render, check or lint)")
}
