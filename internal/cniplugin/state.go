package cniplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sidelane/sidelane/internal/atomicfile"
	"github.com/sidelane/sidelane/internal/redirect"
)

// State is what the plugin keeps about one captured attachment (container ID + interface), so
// that CHECK, DEL and GC act on what ADD did even when the configuration has changed since.
type State struct {
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifName"`
	Netns       string            `json:"netns"`
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid,omitempty"`
	Backend     string            `json:"backend"`
	IPv6        bool              `json:"ipv6"`
	Settings    redirect.Settings `json:"settings"`
	Time        time.Time         `json:"time"`
}

const stateSuffix = ".json"

// stateFile returns the path of the state file of an attachment: a hash of the container ID and
// the interface name, so that no pair of them can collide or escape dir. The file's content
// names the attachment.
func stateFile(dir, containerID, ifName string) (string, error) {
	if containerID == "" {
		return "", errors.New("state: empty container ID")
	}
	if ifName == "" {
		return "", errors.New("state: empty interface name")
	}
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return filepath.Join(dir, hex.EncodeToString(sum[:20])+stateSuffix), nil
}

// errStateCorrupt marks a state file that cannot be parsed. State files are written without
// fsync (see saveState), so after a power loss one may be empty or cut; it then belongs to a
// network namespace that died with the reboot.
var errStateCorrupt = errors.New("corrupt state file")

// saveState writes s atomically (package atomicfile) without fsync: readers see the old file
// or the new one, never a part. The fsyncs (two: file and directory) were most of an ADD's
// time, and they buy nothing: after a power loss every network namespace is gone, so the only
// readers of an older state file are a DEL or a GC for an attachment that no longer exists,
// and both drop a file they cannot parse when its netns is gone (DEL) or it is not a valid
// attachment (GC).
func saveState(dir string, s State) error {
	path, err := stateFile(dir, s.ContainerID, s.IfName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600, atomicfile.NoSync); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// loadState reads the state of an attachment; ok is false when there is none.
func loadState(dir, containerID, ifName string) (State, bool, error) {
	path, err := stateFile(dir, containerID, ifName)
	if err != nil {
		return State{}, false, err
	}
	return readState(path)
}

func readState(path string) (State, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, false, fmt.Errorf("state: %s: %w: %w", path, errStateCorrupt, err)
	}
	return s, true, nil
}

// deleteState removes the state of an attachment; it is not an error when there is none.
func deleteState(dir, containerID, ifName string) error {
	path, err := stateFile(dir, containerID, ifName)
	if err != nil {
		return err
	}
	return removeStatePath(path)
}

// removeStatePath removes one state file; it is not an error when it is gone.
func removeStatePath(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// listStates returns every state file in dir (none when dir does not exist).
func listStates(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), stateSuffix) && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}
