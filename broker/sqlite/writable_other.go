//go:build !unix

package sqlite

import (
	"os"
	"path/filepath"
)

// writable creates and removes a file in dir: Windows has no access(2).
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".symphony-probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(filepath.Clean(f.Name()))
}
