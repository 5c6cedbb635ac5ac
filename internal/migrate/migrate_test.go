package migrate_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/vtk/dispenser/internal/migrate"
	"github.com/vtk/dispenser/internal/migrate/migratetest"
	"github.com/vtk/dispenser/internal/testenv"
)

// target is a database the tests migrate: its migrate.DB and a way to
// query it.
type target struct {
	db    migrate.DB
	query func(t *testing.T, q string) []int64
}

func sqliteTarget(t *testing.T) target {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db")+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return target{db: migrate.SQL("sqlite", db), query: func(t *testing.T, q string) []int64 { return migratetest.Ints(t, db, q) }}
}

func postgresSQLTarget(t *testing.T) target {
	db, err := sql.Open("pgx", testenv.PostgresSchema(t, "migrate_test_"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return target{db: migrate.SQL("pgx", db), query: func(t *testing.T, q string) []int64 { return migratetest.Ints(t, db, q) }}
}

func pgxTarget(t *testing.T) target {
	dsn := testenv.PostgresSchema(t, "migrate_test_")
	read, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = read.Close() })
	return target{db: migrate.Pgx(pgxPool(t, dsn)), query: func(t *testing.T, q string) []int64 { return migratetest.Ints(t, read, q) }}
}

func pgxPool(t *testing.T, dsn string) *pgxpool.Pool {
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var targets = []struct {
	name string
	open func(t *testing.T) target
}{{"sqlite", sqliteTarget}, {"postgres database/sql", postgresSQLTarget}, {"postgres pgx", pgxTarget}}

func files(m map[string]string) fstest.MapFS {
	fs := fstest.MapFS{}
	for name, body := range m {
		fs[name] = &fstest.MapFile{Data: []byte(body)}
	}
	return fs
}

// The first migration creates its table without IF NOT EXISTS: running it
// twice would fail, so a second Apply proves it ran once.
var (
	first  = map[string]string{"001_things.sql": "CREATE TABLE things (a INTEGER NOT NULL)"}
	second = map[string]string{
		"001_things.sql": first["001_things.sql"],
		"002_column.sql": "ALTER TABLE things ADD COLUMN b INTEGER NOT NULL DEFAULT 7",
		"README.md":      "not a migration",
		"003_index.sql":  "CREATE INDEX things_b ON things (b);\nCREATE INDEX things_a ON things (a)",
	}
)

func TestApplyRunsEachMigrationOnceInOrder(t *testing.T) {
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := tc.open(t)
			v1 := migrate.Set{Files: files(first), Table: "things_schema", Lock: "test-migrate"}
			if err := v1.Apply(ctx, db.db); err != nil {
				t.Fatal(err)
			}
			if got := db.query(t, "SELECT version FROM things_schema ORDER BY version"); len(got) != 1 || got[0] != 1 {
				t.Fatalf("after the first set: versions %v", got)
			}
			v2 := migrate.Set{Files: files(second), Table: "things_schema", Lock: "test-migrate"}
			for range 2 {
				if err := v2.Apply(ctx, db.db); err != nil {
					t.Fatal(err)
				}
			}
			if got := db.query(t, "SELECT version FROM things_schema ORDER BY version"); len(got) != 3 || got[2] != 3 {
				t.Fatalf("after the second set, twice: versions %v", got)
			}
			db.query(t, "INSERT INTO things (a) VALUES (1) RETURNING b")
			if got := db.query(t, "SELECT b FROM things"); len(got) != 1 || got[0] != 7 {
				t.Fatalf("the added column: %v", got)
			}
			if latest, err := v2.Latest(); err != nil || latest != 3 {
				t.Fatalf("Latest = %d, %v", latest, err)
			}
		})
	}
}

// TestFailedMigrationAppliesNothing: a failing migration rolls back every
// migration of the run, and the error names the file.
func TestFailedMigrationAppliesNothing(t *testing.T) {
	for _, tc := range targets {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.open(t)
			set := migrate.Set{Files: files(map[string]string{
				"001_things.sql": first["001_things.sql"],
				"002_broken.sql": "ALTER TABLE nowhere ADD COLUMN b INTEGER",
			}), Table: "things_schema", Lock: "test-migrate"}
			err := set.Apply(context.Background(), db.db)
			if err == nil || !strings.Contains(err.Error(), "002_broken.sql") {
				t.Fatalf("Apply = %v, want the failing file named", err)
			}
			fixed := migrate.Set{Files: files(first), Table: "things_schema", Lock: "test-migrate"}
			if err := fixed.Apply(context.Background(), db.db); err != nil {
				t.Fatalf("001 after the failed run (it must have been rolled back): %v", err)
			}
		})
	}
}

func TestBadSets(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  migrate.Set
		want string
	}{
		{"no version", migrate.Set{Files: files(map[string]string{"things.sql": "SELECT 1"}), Table: "t_schema"}, "bad name"},
		{"version zero", migrate.Set{Files: files(map[string]string{"000_x.sql": "SELECT 1"}), Table: "t_schema"}, "bad name"},
		{"same version twice", migrate.Set{Files: files(map[string]string{"001_a.sql": "SELECT 1", "1_b.sql": "SELECT 1"}), Table: "t_schema"}, "same version"},
		{"bad table", migrate.Set{Files: files(first), Table: "t; DROP TABLE x"}, "bad version table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.set.Apply(context.Background(), sqliteTarget(t).db)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestConcurrentReplicasMigrateOneAtATime: replicas starting together on
// one PostgreSQL schema all succeed; the advisory lock makes the second
// see what the first applied.
func TestConcurrentReplicasMigrateOneAtATime(t *testing.T) {
	dsn := testenv.PostgresSchema(t, "migrate_test_")
	set := migrate.Set{Files: files(second), Table: "things_schema", Lock: "test-migrate"}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		pool := pgxPool(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- set.Apply(context.Background(), migrate.Pgx(pool))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestApplyContinuesAnOlderRunnersTable: the audit store's SQLite version
// table was created as (version INTEGER NOT NULL) by the runner before
// this one; Apply reads it and runs only what it does not record.
func TestApplyContinuesAnOlderRunnersTable(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "old.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{first["001_things.sql"], `CREATE TABLE things_schema (version INTEGER NOT NULL)`, `INSERT INTO things_schema (version) VALUES (1)`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	set := migrate.Set{Files: files(second), Table: "things_schema"}
	if err := set.Apply(context.Background(), migrate.SQL("sqlite", db)); err != nil {
		t.Fatal(err)
	}
	if got := migratetest.Ints(t, db, "SELECT version FROM things_schema ORDER BY version"); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("versions %v", got)
	}
}
