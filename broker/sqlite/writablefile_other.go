//go:build !unix

package sqlite

import (
	"errors"
	"os"
)

// writableFile reports whether path may be written, from its read-only
// attribute: the one that Windows keeps in the permission bits.
func writableFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o200 == 0 {
		return errors.New("the file is marked read-only")
	}
	return nil
}
