package injectorbench

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptr[T any](v T) *T { return &v }

func intOrString(port int32) intstr.IntOrString { return intstr.FromInt32(port) }

func authenticationUser() authenticationv1.UserInfo {
	return authenticationv1.UserInfo{
		Username: "system:serviceaccount:kube-system:replicaset-controller",
		UID:      "6a1c9f0e-2b3d-4c5e-9f8a-7b6c5d4e3f2a",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
	}
}

// loadAverage is the 1-minute load average and the CPU count, e.g. "4.80 on 2 CPUs".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%s on %d CPUs", f[0], runtime.NumCPU())
}
