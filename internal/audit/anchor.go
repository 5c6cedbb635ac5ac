package audit

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// DirAnchor keeps the newest checkpoint of each log as a file in a
// directory, ideally on another volume (or a mount the database's
// operators cannot write). Each write is atomic (temporary file, fsync,
// rename, directory fsync).
type DirAnchor struct {
	Dir string
	mu  sync.Mutex
}

var (
	_ Anchor       = (*DirAnchor)(nil)
	_ OriginLister = (*DirAnchor)(nil)
)

// ErrAnchorRollback is returned by Put for a checkpoint older than the
// anchored one.
var ErrAnchorRollback = errors.New("audit: refusing to anchor a checkpoint smaller than the anchored one (was the database restored or rolled back?)")

func (d *DirAnchor) file(origin string) string {
	return filepath.Join(d.Dir, url.PathEscape(origin)+".checkpoint")
}

// Put implements Anchor.
func (d *DirAnchor) Put(_ context.Context, origin string, size int64, signed []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return err
	}
	cur, err := os.ReadFile(d.file(origin))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if cur != nil {
		if n, ok := noteSize(cur); ok && n > size {
			return fmt.Errorf("%w: anchored %d, new %d", ErrAnchorRollback, n, size)
		}
	}
	tmp, err := os.CreateTemp(d.Dir, ".checkpoint-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(signed); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), d.file(origin)); err != nil {
		return err
	}
	dir, err := os.Open(d.Dir)
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Latest implements Anchor.
func (d *DirAnchor) Latest(_ context.Context, origin string) ([]byte, error) {
	b, err := os.ReadFile(d.file(origin))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Origins implements OriginLister: the origins anchored in the directory.
func (d *DirAnchor) Origins() ([]string, error) {
	ents, err := os.ReadDir(d.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".checkpoint")
		if !ok || strings.HasPrefix(n, ".") {
			continue
		}
		if o, err := url.PathUnescape(n); err == nil {
			out = append(out, o)
		}
	}
	return out, nil
}

// noteSize reads the (unverified) size line of a checkpoint note; only
// used to refuse rollbacks, never to trust a checkpoint.
func noteSize(b []byte) (int64, bool) {
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	return n, err == nil
}
