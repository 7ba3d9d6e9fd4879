// Command sidelane-cni is Sidelane's chained CNI plugin; see internal/cniplugin and
// docs/cni-plugin.md. The container runtime execs it with CNI_COMMAND set.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/sidelane/sidelane/internal/cniplugin"
)

func main() {
	skel.PluginMainFuncs(cniplugin.New(os.Stdout, os.Stderr).Funcs(), version.All, cniplugin.About)
}
