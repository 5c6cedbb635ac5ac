package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

func TestStore(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "audit db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revoketest.RunStore(t, s)
}

// TestOpenAdoptsATableFromBeforeMigrations: a database the old inline
// schema made (version 1 runs the same statements) migrates to version 1
// keeping its revocations, and later opens find nothing left to do.
func TestOpenAdoptsATableFromBeforeMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	legacy, err := migrations.ReadFile("migrations/001_revocations.sql")
	if err != nil {
		t.Fatal(err)
	}
	revoketest.Adoption(t, "sqlite", path, string(legacy), `1700000000000000`, func() (revoke.Store, func() error, error) {
		s, err := Open(context.Background(), path)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}
