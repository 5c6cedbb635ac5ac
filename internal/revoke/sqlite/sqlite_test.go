package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

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

// legacyTable is the table as releases before versioned migrations
// created it, inline, on every open.
const legacyTable = `CREATE TABLE IF NOT EXISTS revocations (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	value      TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS revocations_expires_at ON revocations (expires_at)`

// TestOpenAdoptsATableFromBeforeMigrations: a database the old inline
// schema made migrates to version 1 keeping its revocations, and later
// opens find nothing left to do.
func TestOpenAdoptsATableFromBeforeMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	old, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{legacyTable,
		`INSERT INTO revocations (id, kind, value, reason, created_by, created_at) VALUES ('rev_old', 'job', 'job-1', 'leaked', 'ops', 1700000000000000)`} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_ = old.Close()
	for range 2 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		list, err := s.List(ctx, time.Time{})
		if err != nil || len(list) != 1 || list[0].ID != "rev_old" || list[0].Value != "job-1" || list[0].CreatedBy != "ops" {
			t.Fatalf("the old revocation after migrating: %+v, %v", list, err)
		}
		var versions []int
		rows, err := s.db.Query(`SELECT version FROM revocations_schema`)
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
}
