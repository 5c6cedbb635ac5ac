package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// legacyTable is the table as releases before versioned migrations
// created it, inline, on every open.
const legacyTable = `CREATE TABLE IF NOT EXISTS revocations (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	value      TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	created_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS revocations_expires_at ON revocations (expires_at)`

// TestOpenAdoptsATableFromBeforeMigrations: a schema the old inline DDL
// made migrates to version 1 keeping its revocations, and later opens find
// nothing left to do.
func TestOpenAdoptsATableFromBeforeMigrations(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresSchema(t, "revoke_test_")
	old, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{legacyTable,
		`INSERT INTO revocations (id, kind, value, reason, created_by, created_at) VALUES ('rev_old', 'job', 'job-1', 'leaked', 'ops', now())`} {
		if _, err := old.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_ = old.Close(ctx)
	for range 2 {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		list, err := s.List(ctx, time.Time{})
		if err != nil || len(list) != 1 || list[0].ID != "rev_old" || list[0].Value != "job-1" || list[0].CreatedBy != "ops" {
			t.Fatalf("the old revocation after migrating: %+v, %v", list, err)
		}
		rows, err := s.pool.Query(ctx, `SELECT version FROM revocations_schema`)
		if err != nil {
			t.Fatal(err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil || len(versions) != 1 || versions[0] != 1 {
			t.Fatalf("recorded versions %v, %v; want [1]", versions, err)
		}
		_ = s.Close()
	}
}
