package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vtk/dispenser/internal/revoke/revoketest"
	"github.com/vtk/dispenser/internal/testenv"
)

// Schema creates a fresh schema and returns a DSN whose search_path is it.
func Schema(t *testing.T) string {
	t.Helper()
	dsn := testenv.Postgres(t)
	name := testenv.UniqueName("revoke_test_")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	return dsn + "&search_path=" + name
}

func TestStore(t *testing.T) {
	s, err := Open(context.Background(), Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revoketest.RunStore(t, s)
}
