// Package testenv holds the rules every Sidelane test follows about its environment.
//
// Tests that need root (network namespaces, nftables, iptables, a real cluster) call
// RequireRoot. On a developer machine without root they skip; under CI=true a skip would hide
// a failure, so the test fails instead.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true), where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t when the process is not root, or fails it under CI=true.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatal("requires root: privileged tests must run under CI=true, run the tests as root")
	}
	t.Skip("requires root")
}

// Require skips t with reason when ok is false, or fails it under CI=true.
// Use it for any other precondition (a binary, a cluster) that CI must provide.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("precondition missing under CI=true: %s", reason)
	}
	t.Skip(reason)
}
