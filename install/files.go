package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/sidelane/sidelane/internal/atomicfile"
)

// copyBinary copies src to dst atomically (mode 0755) unless dst already has the same bytes.
// It reports whether it wrote.
func copyBinary(src, dst string) (bool, error) {
	want, err := fileHash(src)
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	if have, err := fileHash(dst); err == nil && bytes.Equal(have, want) {
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm()&0o111 != 0 {
			return false, nil
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	defer in.Close()
	if err := atomicfile.WriteFrom(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	}); err != nil {
		return false, fmt.Errorf("installing plugin binary: %w", err)
	}
	return true, nil
}

func fileHash(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func hashBytes(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// removeIfExists removes path; a missing file is not an error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

func mkdirAll(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return nil
}
