package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/sidelane/sidelane/internal/atomicfile"
	"github.com/sidelane/sidelane/internal/conflist"
	"github.com/sidelane/sidelane/internal/contract"
)

// errChanged means the primary's file changed while we were computing our edit; the edit was
// not written and must be recomputed from the new content.
var errChanged = errors.New("CNI configuration changed while editing it")

// Install installs the plugin once: the binary and our entry in the primary conflist (and
// removes the credential files of older releases). While there is no valid primary configuration it
// waits (polling every cfg.PollInterval) until ctx ends; it never writes a configuration of its
// own that would make the node look network-ready. Running it again changes nothing.
func Install(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if err := installBinary(cfg); err != nil {
		return err
	}
	if err := removeLegacyCredentials(cfg); err != nil {
		return err
	}
	st, err := loadState(cfg)
	if err != nil {
		return err
	}
	for {
		_, err := reconcile(cfg, st, time.Now())
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNoPrimary) && !errors.Is(err, errInFlux) && !errors.Is(err, errChanged) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the primary CNI: %w (%w)", ctx.Err(), err)
		case <-time.After(cfg.PollInterval):
		}
	}
}

func installBinary(cfg Config) error {
	if cfg.SourceBinary == "" {
		return nil
	}
	if err := os.MkdirAll(cfg.CNIBinDir, 0o755); err != nil {
		return fmt.Errorf("creating CNI bin dir: %w", err)
	}
	_, err := copyBinary(cfg.SourceBinary, filepath.Join(cfg.CNIBinDir, contract.PluginBinary))
	return err
}

// outcome is what one reconcile did.
type outcome struct {
	// Path is the primary conflist that now holds our entry.
	Path string
	// Wrote is true when a file was written.
	Wrote bool
	// Overwritten is true when the primary had rewritten a file we had chained into and our
	// entry was gone (or its .conf reappeared).
	Overwritten bool
}

// reconcile makes sure the primary conflist holds our entry exactly once, with the configured
// content, and that the state knows the primary's own bytes.
func reconcile(cfg Config, st *state, now time.Time) (outcome, error) {
	p, _, err := choosePrimary(cfg, st, now)
	if err != nil {
		return outcome{}, err
	}
	if p.List {
		return reconcileList(cfg, st, p)
	}
	return reconcileConf(cfg, st, p)
}

func reconcileList(cfg Config, st *state, p *primary) (outcome, error) {
	name := filepath.Base(p.Path)
	out := outcome{Path: p.Path}
	n, err := conflist.Count(p.Bytes, contract.PluginType)
	if err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}
	rec := st.Files[name]
	var original []byte
	switch {
	case n == 0:
		original = p.Bytes
		if rec != nil && rec.Written != nil {
			out.Overwritten = true
		}
		if rec != nil && rec.ConvertedFrom != "" {
			// The primary now writes this .conflist itself: it is the original from now on.
			rec.ConvertedFrom, rec.Displaced, rec.HadDisplaced = "", nil, false
		}
	case rec != nil && bytes.Equal(hashBytes(p.Bytes), rec.Written):
		original = rec.Original
	default:
		original, _, err = conflist.Remove(p.Bytes, contract.PluginType)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
	}
	entry, err := conflist.Entry(p.Bytes, cfg.PluginConfig)
	if err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}
	next, changed, err := conflist.Upsert(p.Bytes, contract.PluginType, entry)
	if err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}
	if rec == nil {
		rec = &fileRecord{}
		st.Files[name] = rec
	}
	if rec.ConvertedFrom == "" || n == 0 {
		rec.Original = original
	}
	rec.Written = hashBytes(next)
	if err := saveState(cfg, st); err != nil {
		return out, err
	}
	if !changed {
		return out, nil
	}
	if err := unchangedSince(p); err != nil {
		return out, err
	}
	if err := atomicfile.Write(p.Path, next, p.Mode); err != nil {
		return out, err
	}
	out.Wrote = true
	return out, nil
}

// reconcileConf converts a single-plugin .conf (or .json) into <name>.conflist with our entry
// last and removes the .conf; uninstall writes the .conf back.
func reconcileConf(cfg Config, st *state, p *primary) (outcome, error) {
	confName := filepath.Base(p.Path)
	listName := strings.TrimSuffix(confName, filepath.Ext(confName)) + ".conflist"
	listPath := filepath.Join(cfg.CNIConfDir, listName)
	out := outcome{Path: listPath}
	list, err := conflist.FromConf(p.Bytes)
	if err != nil {
		return out, fmt.Errorf("%s: %w", confName, err)
	}
	entry, err := conflist.Entry(list, cfg.PluginConfig)
	if err != nil {
		return out, fmt.Errorf("%s: %w", confName, err)
	}
	next, _, err := conflist.Upsert(list, contract.PluginType, entry)
	if err != nil {
		return out, fmt.Errorf("%s: %w", confName, err)
	}
	rec := st.Files[listName]
	if rec == nil {
		rec = &fileRecord{}
		if cur, err := os.ReadFile(listPath); err == nil {
			rec.Displaced, rec.HadDisplaced = cur, true
		}
		st.Files[listName] = rec
	} else if rec.Written != nil {
		out.Overwritten = true // the primary wrote its .conf again
	}
	rec.Original, rec.ConvertedFrom, rec.Written = p.Bytes, confName, hashBytes(next)
	if err := saveState(cfg, st); err != nil {
		return out, err
	}
	if err := unchangedSince(p); err != nil {
		return out, err
	}
	// The .conflist goes in before the .conf goes away, so that there is always a config.
	if err := atomicfile.Write(listPath, next, p.Mode); err != nil {
		return out, err
	}
	if err := removeIfExists(p.Path); err != nil {
		return out, err
	}
	atomicfile.SyncDir(cfg.CNIConfDir)
	out.Wrote = true
	return out, nil
}

// unchangedSince narrows the window in which our write could replace a newer write by the
// primary: right before renaming, the file must still hold what the edit was computed from.
func unchangedSince(p *primary) error {
	cur, err := os.ReadFile(p.Path)
	if err != nil || !bytes.Equal(cur, p.Bytes) {
		return fmt.Errorf("%w: %s", errChanged, filepath.Base(p.Path))
	}
	return nil
}

// Mode says what Uninstall removes.
type Mode int

const (
	// RemoveAll gives every conflist back exactly as the primary CNI last wrote it, and removes
	// the binary and the install state.
	RemoveAll Mode = iota
	// KeepForUpgrade leaves the binary, the entry and the state in place so that
	// pods created while the agent is being replaced still get their rules; the next agent
	// takes over from the state.
	KeepForUpgrade
)

// Uninstall removes what Install and the Watcher put on the node (stop the Watcher first). It
// keeps going after an error and returns all of them.
func Uninstall(cfg Config, mode Mode) error {
	src := cfg.SourceBinary
	cfg.SourceBinary = "" // not needed to uninstall
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	cfg.SourceBinary = src
	if mode == KeepForUpgrade {
		return nil
	}
	st, err := loadState(cfg)
	if err != nil {
		return err
	}
	var errs []error
	names := make([]string, 0, len(st.Files))
	for name := range st.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := restore(cfg, name, st.Files[name]); err != nil {
			errs = append(errs, err)
		}
	}
	// Entries the state does not know about (state lost, older release): remove them in place.
	files, err := libcni.ConfFiles(cfg.CNIConfDir, []string{".conflist"})
	if err != nil {
		errs = append(errs, fmt.Errorf("listing %s: %w", cfg.CNIConfDir, err))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if n, err := conflist.Count(b, contract.PluginType); err != nil || n == 0 {
			continue
		}
		if err := removeEntry(f, b); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeLegacyCredentials(cfg); err != nil {
		errs = append(errs, err)
	}
	if err := removeIfExists(filepath.Join(cfg.CNIBinDir, contract.PluginBinary)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := removeIfExists(statePath(cfg)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// restore gives one file back.
func restore(cfg Config, name string, rec *fileRecord) error {
	path := filepath.Join(cfg.CNIConfDir, name)
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the primary removed it; nothing of ours is left there
	}
	if err != nil {
		return fmt.Errorf("uninstall: reading %s: %w", path, err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	ours := bytes.Equal(hashBytes(cur), rec.Written)
	n, _ := conflist.Count(cur, contract.PluginType)
	if !ours && n == 0 {
		return nil // rewritten by the primary since; its content is its own
	}
	if rec.ConvertedFrom != "" {
		confPath := filepath.Join(cfg.CNIConfDir, rec.ConvertedFrom)
		if _, err := os.Stat(confPath); errors.Is(err, fs.ErrNotExist) {
			if err := atomicfile.Write(confPath, rec.Original, mode); err != nil {
				return fmt.Errorf("uninstall: %w", err)
			}
		}
		if rec.HadDisplaced {
			if err := atomicfile.Write(path, rec.Displaced, mode); err != nil {
				return fmt.Errorf("uninstall: %w", err)
			}
			return nil
		}
		return removeIfExists(path)
	}
	if ours {
		if err := atomicfile.Write(path, rec.Original, mode); err != nil {
			return fmt.Errorf("uninstall: %w", err)
		}
		return nil
	}
	return removeEntry(path, cur)
}

// removeEntry deletes our entry from a conflist in place, every other byte unchanged.
func removeEntry(path string, cur []byte) error {
	out, found, err := conflist.Remove(cur, contract.PluginType)
	if err != nil {
		return fmt.Errorf("uninstall: %s: %w", path, err)
	}
	if !found {
		return nil
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := atomicfile.Write(path, out, mode); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	return nil
}

// removeLegacyCredentials removes the plugin kubeconfig and token copy that releases before the
// agent protocol wrote into the conf dir: the plugin holds no credential any more.
func removeLegacyCredentials(cfg Config) error {
	var errs []error
	for _, name := range contract.LegacyCredentialFiles {
		if err := removeIfExists(filepath.Join(cfg.CNIConfDir, name)); err != nil {
			errs = append(errs, fmt.Errorf("removing the credential file of an older release: %w", err))
		}
	}
	return errors.Join(errs...)
}
