package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/sidelane/sidelane/internal/conflist"
)

// ErrNoPrimary means there is no valid primary CNI configuration yet; Install waits.
var ErrNoPrimary = errors.New("no primary CNI configuration")

// errInFlux means a file that would be chosen is being written right now; look again shortly.
var errInFlux = errors.New("CNI configuration is being written")

// settleTime: an invalid file modified more recently than this is assumed to be half-written
// by its owner rather than broken, so the next file is not chosen in its place.
const settleTime = 2 * time.Second

// primary is the chosen configuration file.
type primary struct {
	Path  string
	Bytes []byte
	Mode  os.FileMode
	// List is true for a .conflist, false for a single-plugin .conf/.json.
	List bool
}

// skippedFile is a config file that was not chosen because it is invalid.
type skippedFile struct {
	Path string
	Err  error
}

func (s skippedFile) String() string { return fmt.Sprintf("%s: %v", filepath.Base(s.Path), s.Err) }

// choosePrimary picks the configuration the container runtime uses, the way libcni-based
// runtimes do: with ConfName, that file; else the first valid file in lexical order among
// .conf, .conflist and .json. Invalid files are skipped (and returned).
func choosePrimary(cfg Config, st *state, now time.Time) (*primary, []skippedFile, error) {
	var candidates []string
	if cfg.ConfName != "" {
		p := filepath.Join(cfg.CNIConfDir, cfg.ConfName)
		if _, err := os.Stat(p); err != nil {
			// We may have converted the named .conf into a .conflist ourselves.
			for name, rec := range st.Files {
				if rec.ConvertedFrom == cfg.ConfName {
					p = filepath.Join(cfg.CNIConfDir, name)
				}
			}
		}
		candidates = []string{p}
	} else {
		files, err := libcni.ConfFiles(cfg.CNIConfDir, []string{".conf", ".conflist", ".json"})
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", cfg.CNIConfDir, err)
		}
		sort.Strings(files)
		candidates = files
	}
	var skipped []skippedFile
	for _, path := range candidates {
		p, err := loadCandidate(path)
		if err == nil {
			return p, skipped, nil
		}
		if errors.Is(err, fs.ErrNotExist) && cfg.ConfName != "" {
			return nil, skipped, fmt.Errorf("%w: the named primary (--cni-conf-name) %s does not exist in %s", ErrNoPrimary, cfg.ConfName, cfg.CNIConfDir)
		}
		if st, serr := os.Stat(path); serr == nil && (st.Size() == 0 || now.Sub(st.ModTime()) < settleTime) {
			return nil, skipped, fmt.Errorf("%w: %s: %v", errInFlux, filepath.Base(path), err)
		}
		skipped = append(skipped, skippedFile{Path: path, Err: err})
		if cfg.ConfName != "" {
			return nil, skipped, fmt.Errorf("%w: the named primary (--cni-conf-name) %s is invalid: %v", ErrNoPrimary, cfg.ConfName, err)
		}
	}
	suffix := ""
	if len(skipped) > 0 {
		var parts []string
		for _, s := range skipped {
			parts = append(parts, s.String())
		}
		suffix = " (skipped invalid: " + strings.Join(parts, "; ") + ")"
	}
	return nil, skipped, fmt.Errorf("%w in %s%s", ErrNoPrimary, cfg.CNIConfDir, suffix)
}

// loadCandidate reads and validates one configuration file with libcni's own parsers.
func loadCandidate(path string) (*primary, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	p := &primary{Path: path, Bytes: b, Mode: st.Mode().Perm()}
	if strings.HasSuffix(path, ".conflist") {
		p.List = true
		list, err := libcni.ConfListFromBytes(b)
		if err != nil {
			return nil, err
		}
		if _, err := conflist.Parse(b); err != nil {
			return nil, fmt.Errorf("cannot chain into %s: %w", list.Name, err)
		}
		if len(list.Plugins) == 0 {
			return nil, fmt.Errorf("no plugins in list")
		}
		return p, nil
	}
	if _, err := libcni.ConfFromBytes(b); err != nil {
		return nil, err
	}
	if _, err := conflist.FromConf(b); err != nil {
		return nil, err
	}
	return p, nil
}
