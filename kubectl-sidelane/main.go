// Command kubectl-sidelane is the Sidelane kubectl plugin (see package internal/kubectlplugin).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sidelane/sidelane/internal/kubectlplugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := kubectlplugin.Main(ctx, os.Args[1:], kubectlplugin.Options{
		NewCluster: func(kubeconfig, kubeContext string) (kubectlplugin.Cluster, error) {
			return kubectlplugin.NewKubeCluster(kubeconfig, kubeContext)
		},
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	})
	stop()
	os.Exit(code)
}
