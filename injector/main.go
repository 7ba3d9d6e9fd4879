// Command sidelane-injector is Sidelane's mutating admission webhook (it adds the
// sidelane-proxy container and the redirect annotations to pods of opted-in namespaces) and,
// as `sidelane-injector inject -f app.yaml`, the same injection applied to YAML offline.
// See internal/webhook and docs/injector.md.
package main

import (
	"os"

	"github.com/sidelane/sidelane/internal/webhook"
)

func main() {
	os.Exit(webhook.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
