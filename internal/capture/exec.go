package capture

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// execer runs a host binary; tests replace it with a fake so that unit tests never fork.
type execer interface {
	// Run runs name with args and stdin, and returns its stdout. A failure (including a
	// missing binary) is an error that carries stderr.
	Run(stdin string, name string, args ...string) (string, error)
}

// osExec runs binaries with os/exec.
type osExec struct{}

func (osExec) Run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
