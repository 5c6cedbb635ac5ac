package keystore

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vtk/dispenser/internal/migrate/migratetest"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestSQLStoreAdoptsATableFromBeforeMigrations: a database the old inline
// schema made (version 1 runs the same statement) migrates to version 1
// without losing its keys, and later opens find nothing left to do.
func TestSQLStoreAdoptsATableFromBeforeMigrations(t *testing.T) {
	legacy, err := migrations.ReadFile("migrations/001_access_keys.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		driver string
		dsn    func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.db") }},
		{"pgx", func(t *testing.T) string { return testenv.PostgresSchema(t, "keystore_test_") }},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			dsn := tc.dsn(t)
			migratetest.Adoption{
				Driver: tc.driver, DSN: dsn, Table: "dispenser_access_keys_schema", Versions: []int64{1},
				Legacy: []string{string(legacy), `INSERT INTO dispenser_access_keys (id, name, org, secret, created_unix, disabled)
					VALUES ('DSPKOLDKEY0000000001', 'old-worker', 'acme', 'old-secret', 1700000000, 0)`},
				Open: func(t *testing.T) func() error {
					s, err := NewSQLStore(tc.driver, dsn, nil)
					if err != nil {
						t.Fatal(err)
					}
					k, err := s.Lookup(context.Background(), "DSPKOLDKEY0000000001")
					if err != nil || k.Name != "old-worker" || k.Secret.Reveal() != "old-secret" {
						t.Fatalf("the old key after migrating: %+v, %v", k, err)
					}
					return s.Close
				},
			}.Run(t)
		})
	}
}
