package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sidelane/sidelane/internal/atomicfile"
)

// stateFile is the name of the install state in Config.StateDir. Never change it: a newer
// agent must find what an older one wrote.
const stateFile = "install-state.json"

// state is what uninstall needs to give every file back exactly.
type state struct {
	Version int `json:"version"`
	// Files maps the base name of every conf file we wrote to its record.
	Files map[string]*fileRecord `json:"files"`
}

// fileRecord remembers one conf file we chained into.
type fileRecord struct {
	// Original is the exact content the primary CNI last wrote, without our entry. For a
	// converted .conf it is the .conf's content.
	Original []byte `json:"original"`
	// ConvertedFrom is the base name of the .conf/.json that we replaced by this .conflist.
	ConvertedFrom string `json:"convertedFrom,omitempty"`
	// Displaced is what was in this .conflist's place before we converted the .conf into it
	// (only when HadDisplaced).
	Displaced    []byte `json:"displaced,omitempty"`
	HadDisplaced bool   `json:"hadDisplaced,omitempty"`
	// Written is the SHA-256 of the bytes we last wrote to the file.
	Written []byte `json:"written,omitempty"`
}

func statePath(cfg Config) string { return filepath.Join(cfg.StateDir, stateFile) }

func loadState(cfg Config) (*state, error) {
	st := &state{Version: 1, Files: map[string]*fileRecord{}}
	b, err := os.ReadFile(statePath(cfg))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading install state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("install state %s is corrupt (remove it to start over): %w", statePath(cfg), err)
	}
	if st.Files == nil {
		st.Files = map[string]*fileRecord{}
	}
	return st, nil
}

func saveState(cfg Config, st *state) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding install state: %w", err)
	}
	if cur, err := os.ReadFile(statePath(cfg)); err == nil && string(cur) == string(b) {
		return nil
	}
	return atomicfile.Write(statePath(cfg), b, 0o600)
}
