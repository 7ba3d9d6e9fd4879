// Package atomicfile replaces files so that a reader sees the old content or the new one,
// never a part: the new content goes into a temporary file in the same directory, which is
// fsynced, given its mode and renamed into place, and the directory is fsynced so that the
// rename survives a crash. Sidelane's files on nodes (the conflist, the plugin binary and
// kubeconfig, the plugin's attachment state, the agent's record) and its build outputs are
// all written through it.
//
// With the NoSync option the fsyncs are left out: readers still see the old content or the new
// one, but after a power loss the file may hold either, or be empty. That is for files whose
// only reader after a power loss has nothing left to act on (the CNI plugin's per-attachment
// state: its network namespace is gone with the reboot), where the fsyncs would be most of
// the writer's time.
//
// Temporary files are named ".<name>.<random>.tmp": hidden, and with an extension that no
// CNI runtime reads as a network configuration.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Option changes how a file is written.
type Option int

const (
	// NoSync leaves out the fsyncs of the file and of its directory (see the package comment
	// for when that is right).
	NoSync Option = iota + 1
)

// Write replaces path with data, with the given mode.
func Write(path string, data []byte, mode os.FileMode, opts ...Option) error {
	return WriteFrom(path, mode, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	}, opts...)
}

// WriteFrom replaces path with what write writes, with the given mode. When write (or
// anything after it) fails, path is left as it was and the temporary file is removed.
func WriteFrom(path string, mode os.FileMode, write func(io.Writer) error, opts ...Option) error {
	sync := !slices.Contains(opts, NoSync)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		done = true
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	done = true
	if sync {
		SyncDir(dir)
	}
	return nil
}

// SyncDir makes a rename or a removal in dir durable; failures are ignored (some filesystems
// refuse it).
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
