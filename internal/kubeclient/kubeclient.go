// Package kubeclient is the one place where Sidelane's in-cluster components (node agent,
// injector) set up their Kubernetes client: the pod's in-cluster credentials, or a kubeconfig
// file when one is given (development, tests outside a cluster).
package kubeclient

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// New returns a clientset for kubeconfig ("" means in-cluster), sending userAgent.
func New(kubeconfig, userAgent string) (kubernetes.Interface, error) {
	cfg, err := Config(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

// Config returns the client configuration for kubeconfig ("" means in-cluster).
func Config(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		if kubeconfig == "" {
			return nil, fmt.Errorf("kubernetes client configuration (outside a cluster, give --kubeconfig): %w", err)
		}
		return nil, fmt.Errorf("kubernetes client configuration from %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
