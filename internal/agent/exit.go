package agent

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sidelane/sidelane/install"
)

// What the agent does with the plugin when it stops (--on-exit).
const (
	// OnExitAuto uninstalls when the agent's DaemonSet is gone or being deleted (Sidelane is
	// being removed) and keeps the plugin installed when only the pod goes (restart, rolling
	// update, node drain), so that pods created meanwhile are still captured.
	OnExitAuto      = "auto"
	OnExitUninstall = "uninstall"
	OnExitKeep      = "keep"
)

// exitMode decides between uninstalling and keeping the plugin when the agent stops.
func exitMode(ctx context.Context, client kubernetes.Interface, onExit, podNamespace, podName string) (install.Mode, string) {
	switch onExit {
	case OnExitKeep:
		return install.KeepForUpgrade, "--on-exit=keep"
	case OnExitUninstall:
		return install.RemoveAll, "--on-exit=uninstall"
	}
	if podNamespace == "" || podName == "" {
		return install.RemoveAll, "own pod unknown (--pod-namespace/--pod-name unset)"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pod, err := client.CoreV1().Pods(podNamespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return install.RemoveAll, fmt.Sprintf("own pod %s/%s: %v", podNamespace, podName, err)
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "DaemonSet" {
		return install.RemoveAll, "own pod has no DaemonSet owner"
	}
	ds, err := client.AppsV1().DaemonSets(podNamespace).Get(ctx, owner.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return install.RemoveAll, "DaemonSet " + owner.Name + " deleted"
	case err != nil:
		return install.RemoveAll, fmt.Sprintf("DaemonSet %s: %v", owner.Name, err)
	case ds.DeletionTimestamp != nil:
		return install.RemoveAll, "DaemonSet " + owner.Name + " being deleted"
	case ds.UID != owner.UID:
		return install.RemoveAll, "DaemonSet " + owner.Name + " replaced"
	}
	return install.KeepForUpgrade, "DaemonSet " + owner.Name + " still exists (pod restart or update)"
}
