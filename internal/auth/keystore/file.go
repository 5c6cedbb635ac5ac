package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileStore keeps keys in a JSON file readable only by its owner. It
// refuses a file that is group- or world-accessible, and re-reads the file
// when its size or modification time changes.
type FileStore struct {
	path string
	seal *sealer

	mu      sync.Mutex
	modTime time.Time
	size    int64
	loaded  bool
	keys    map[string]fileKey
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a store over path; kek (32 bytes) may be nil.
func NewFileStore(path string, kek []byte) (*FileStore, error) {
	s := &FileStore{path: path}
	if kek != nil {
		var err error
		if s.seal, err = newSealer(kek); err != nil {
			return nil, err
		}
	}
	return s, nil
}

type fileKey struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Org      string    `json:"org"`
	Secret   string    `json:"secret"`
	Created  time.Time `json:"created"`
	Disabled bool      `json:"disabled,omitempty"`
}

type fileDoc struct {
	Version int       `json:"version"`
	Keys    []fileKey `json:"keys"`
}

// refresh loads the file if it changed. A missing file is an empty store.
func (s *FileStore) refresh() error {
	st, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.keys, s.loaded, s.modTime, s.size = map[string]fileKey{}, true, time.Time{}, -1
		return nil
	}
	if err != nil {
		return err
	}
	if s.loaded && st.ModTime().Equal(s.modTime) && st.Size() == s.size {
		return nil
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %04o: refusing a group- or world-accessible key file (chmod 600 it)", s.path, st.Mode().Perm())
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return err
	}
	var doc fileDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("key file %s: %w", s.path, err)
	}
	keys := make(map[string]fileKey, len(doc.Keys))
	for _, k := range doc.Keys {
		keys[k.ID] = k
	}
	s.keys, s.loaded, s.modTime, s.size = keys, true, st.ModTime(), st.Size()
	return nil
}

func (s *FileStore) save() error {
	doc := fileDoc{Version: 1}
	for _, k := range s.keys {
		doc.Keys = append(doc.Keys, k)
	}
	sortKeys(doc.Keys)
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".dispenser-keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return err
	}
	s.loaded = false // re-stat on next use
	return nil
}

// Lookup implements Store.
func (s *FileStore) Lookup(_ context.Context, id string) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return Key{}, err
	}
	fk, ok := s.keys[id]
	if !ok {
		return Key{}, ErrNotFound
	}
	sec, err := s.seal.open(fk.ID, fk.Secret)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: fk.ID, Name: fk.Name, Org: fk.Org, Secret: sec, Created: fk.Created, Disabled: fk.Disabled}, nil
}

// Create implements Store.
func (s *FileStore) Create(_ context.Context, name, org string) (Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Two `keys` commands (or a command and a server) may write at once:
	// the read-modify-write below runs under an exclusive file lock.
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return Key{}, err
	}
	defer unlock()
	if err := s.refresh(); err != nil {
		return Key{}, err
	}
	k, err := newKey(name, org, time.Now())
	if err != nil {
		return Key{}, err
	}
	stored, err := s.seal.seal(k.ID, k.Secret)
	if err != nil {
		return Key{}, err
	}
	s.keys[k.ID] = fileKey{ID: k.ID, Name: name, Org: org, Secret: stored, Created: k.Created}
	if err := s.save(); err != nil {
		delete(s.keys, k.ID)
		return Key{}, err
	}
	return k, nil
}

// List implements Store.
func (s *FileStore) List(context.Context) ([]Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(); err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(s.keys))
	for _, fk := range s.keys {
		out = append(out, Key{ID: fk.ID, Name: fk.Name, Org: fk.Org, Created: fk.Created, Disabled: fk.Disabled})
	}
	sortPublic(out)
	return out, nil
}

// Disable implements Store.
func (s *FileStore) Disable(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Two `keys` commands (or a command and a server) may write at once:
	// the read-modify-write below runs under an exclusive file lock.
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.refresh(); err != nil {
		return err
	}
	fk, ok := s.keys[id]
	if !ok {
		return ErrNotFound
	}
	fk.Disabled = true
	s.keys[id] = fk
	return s.save()
}
