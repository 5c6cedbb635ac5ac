package keystore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/vtk/dispenser/internal/testenv"
)

// legacyKeyTable is the table as releases before versioned migrations
// created it, inline, on every open.
const legacyKeyTable = `CREATE TABLE IF NOT EXISTS dispenser_access_keys (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	org TEXT NOT NULL,
	secret TEXT NOT NULL,
	created_unix BIGINT NOT NULL,
	disabled INTEGER NOT NULL DEFAULT 0
)`

// TestSQLStoreAdoptsATableFromBeforeMigrations: a database the old inline
// schema made migrates to version 1 without losing its keys, and later
// opens find nothing left to do.
func TestSQLStoreAdoptsATableFromBeforeMigrations(t *testing.T) {
	for _, tc := range []struct {
		driver string
		dsn    func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.db") }},
		{"pgx", func(t *testing.T) string { return testenv.PostgresSchema(t, "keystore_test_") }},
	} {
		driver := tc.driver
		t.Run(driver, func(t *testing.T) {
			dsn := tc.dsn(t)
			old, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{legacyKeyTable,
				`INSERT INTO dispenser_access_keys (id, name, org, secret, created_unix, disabled) VALUES ('DSPKOLDKEY0000000001', 'old-worker', 'acme', 'old-secret', 1700000000, 0)`} {
				if _, err := old.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			_ = old.Close()
			for range 2 {
				s, err := NewSQLStore(driver, dsn, nil)
				if err != nil {
					t.Fatal(err)
				}
				k, err := s.Lookup(context.Background(), "DSPKOLDKEY0000000001")
				if err != nil || k.Name != "old-worker" || k.Secret.Reveal() != "old-secret" {
					t.Fatalf("the old key after migrating: %+v, %v", k, err)
				}
				var versions []int
				rows, err := s.db.Query(`SELECT version FROM dispenser_access_keys_schema`)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var v int
					_ = rows.Scan(&v)
					versions = append(versions, v)
				}
				_ = rows.Close()
				if len(versions) != 1 || versions[0] != 1 {
					t.Fatalf("recorded versions %v, want [1]", versions)
				}
				_ = s.Close()
			}
		})
	}
}
