package postgres

import (
	"context"
	"testing"

	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
	"github.com/vtk/dispenser/internal/testenv"
)

func TestStore(t *testing.T) {
	s, err := Open(context.Background(), testenv.PostgresSchema(t, "revoke_test_"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revoketest.RunStore(t, s)
}

// TestOpenAdoptsATableFromBeforeMigrations: a schema the old inline DDL
// made (version 1 runs the same statements) migrates to version 1 keeping
// its revocations, and later opens find nothing left to do.
func TestOpenAdoptsATableFromBeforeMigrations(t *testing.T) {
	dsn := testenv.PostgresSchema(t, "revoke_test_")
	legacy, err := migrations.ReadFile("migrations/001_revocations.sql")
	if err != nil {
		t.Fatal(err)
	}
	revoketest.Adoption(t, "pgx", dsn, string(legacy), `now()`, func() (revoke.Store, func() error, error) {
		s, err := Open(context.Background(), dsn)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}
