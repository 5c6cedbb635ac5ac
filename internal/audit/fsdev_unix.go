//go:build unix

package audit

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// deviceOf returns the device id of the filesystem holding path, or of its
// nearest existing parent when path does not exist yet (an anchor
// directory is created on first use).
func deviceOf(path string) (uint64, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return 0, err
	}
	for {
		var st syscall.Stat_t
		err := syscall.Stat(p, &st)
		if err == nil {
			return uint64(st.Dev), nil // int32 on some platforms
		}
		if !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return 0, err
		}
		p = parent
	}
}
