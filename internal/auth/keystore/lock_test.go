package keystore

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentWritersLoseNothing: two stores on one file (two `keys`
// commands, or a command and a server) creating keys at once must not lose
// each other's keys to a read-modify-write race.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys.json")
	a, err := NewFileStore(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewFileStore(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	const each = 25
	var wg sync.WaitGroup
	for _, s := range []*FileStore{a, b} {
		wg.Add(1)
		go func(s *FileStore) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := s.Create(context.Background(), "w", "acme"); err != nil {
					t.Error(err)
					return
				}
			}
		}(s)
	}
	wg.Wait()
	fresh, err := NewFileStore(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := fresh.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2*each {
		t.Fatalf("%d keys on disk, want %d: concurrent writers lost updates", len(keys), 2*each)
	}
}
