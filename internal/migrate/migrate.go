// Package migrate applies a component's versioned SQL migrations, embedded
// in the binary, to SQLite or PostgreSQL. Every table the dispenser keeps
// (the audit trail, revocations, access keys) changes only through it, so a
// column added later has a path onto a database an older version created.
//
// A migration is a file NNN_description.sql; NNN is its version. Each
// component records the versions it applied in a table of its own (one row
// each), and Apply runs the missing ones in version order, all in one
// transaction. On PostgreSQL the transaction first takes an advisory lock,
// so replicas starting together migrate one at a time.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Set is one component's schema: its migrations and the table recording
// which ran.
type Set struct {
	// Files holds the migrations, NNN_description.sql, in directory Dir
	// (typically an embed.FS and "migrations").
	Files fs.FS
	Dir   string
	// Table records the applied versions. It is created when missing.
	Table string
	// Lock names the PostgreSQL advisory lock taken (per schema) while
	// migrating; it must stay the same across versions of the dispenser,
	// or an old and a new replica would migrate at once.
	Lock string
}

// Migration is one file of a Set.
type Migration struct {
	Version int
	Name    string
}

var tableRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Migrations lists the set's migrations in version order. A file whose
// name does not start with a version, or two files with one version, are
// errors.
func (s Set) Migrations() ([]Migration, error) {
	dir := s.Dir
	if dir == "" {
		dir = "."
	}
	names, err := fs.Glob(s.Files, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	out := make([]Migration, 0, len(names))
	seen := map[int]string{}
	for _, name := range names {
		name = path.Base(name)
		v, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: bad name (want NNN_description.sql)", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", prev, name)
		}
		seen[v] = name
		out = append(out, Migration{Version: v, Name: name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Latest is the version of the set's newest migration (what a database
// opened without migrating must be at).
func (s Set) Latest() (int, error) {
	ms, err := s.Migrations()
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	return ms[len(ms)-1].Version, nil
}

// Apply runs the migrations db has not recorded, in one transaction.
func (s Set) Apply(ctx context.Context, db DB) (err error) {
	if !tableRe.MatchString(s.Table) {
		return fmt.Errorf("migrate: bad version table name %q", s.Table)
	}
	ms, err := s.Migrations()
	if err != nil {
		return err
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.rollback(ctx)
		}
	}()
	if db.postgres() && s.Lock != "" {
		if err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || current_schema(), 0))`, s.Lock); err != nil {
			return err
		}
	}
	if err := tx.exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.Table+` (version INTEGER PRIMARY KEY)`); err != nil {
		return err
	}
	for _, m := range ms {
		if err := s.applyOne(ctx, tx, m); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return tx.commit(ctx)
}

func (s Set) applyOne(ctx context.Context, tx tx, m Migration) error {
	done, err := tx.exists(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.Table+` WHERE version = $1)`, m.Version)
	if err != nil || done {
		return err
	}
	body, err := fs.ReadFile(s.Files, path.Join(s.Dir, m.Name))
	if err != nil {
		return err
	}
	if err := tx.exec(ctx, string(body)); err != nil {
		return err
	}
	return tx.exec(ctx, `INSERT INTO `+s.Table+` (version) VALUES ($1)`, m.Version)
}

// DB is a database Apply can migrate: SQLite or SQL (database/sql), or
// Pgx (a pgx pool).
type DB interface {
	begin(ctx context.Context) (tx, error)
	postgres() bool
}

type tx interface {
	exec(ctx context.Context, q string, args ...any) error
	exists(ctx context.Context, q string, args ...any) (bool, error)
	commit(ctx context.Context) error
	// rollback ends a failed migration. When ctx is what ended, the
	// driver drops the connection, and the transaction with it.
	rollback(ctx context.Context)
}

// SQL is a database/sql database of driver "sqlite" or "pgx". A SQLite
// file other connections may write meanwhile is best opened with
// _txlock=immediate, so the migration holds the write lock from its start.
func SQL(driver string, db *sql.DB) DB { return sqlDB{db: db, pg: driver == "pgx"} }

type sqlDB struct {
	db *sql.DB
	pg bool
}

func (d sqlDB) postgres() bool { return d.pg }

func (d sqlDB) begin(ctx context.Context) (tx, error) {
	t, err := d.db.BeginTx(ctx, nil)
	return sqlTx{t}, err
}

type sqlTx struct{ t *sql.Tx }

func (t sqlTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.t.ExecContext(ctx, q, args...)
	return err
}

func (t sqlTx) exists(ctx context.Context, q string, args ...any) (bool, error) {
	var ok bool
	err := t.t.QueryRowContext(ctx, q, args...).Scan(&ok)
	return ok, err
}

func (t sqlTx) commit(context.Context) error { return t.t.Commit() }
func (t sqlTx) rollback(context.Context)     { _ = t.t.Rollback() }

// Pgx is a PostgreSQL pool.
func Pgx(pool *pgxpool.Pool) DB { return pgxDB{pool} }

type pgxDB struct{ pool *pgxpool.Pool }

func (pgxDB) postgres() bool { return true }

func (d pgxDB) begin(ctx context.Context) (tx, error) {
	t, err := d.pool.Begin(ctx)
	return pgxTx{t}, err
}

type pgxTx struct{ t pgx.Tx }

func (t pgxTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.t.Exec(ctx, q, args...)
	return err
}

func (t pgxTx) exists(ctx context.Context, q string, args ...any) (bool, error) {
	var ok bool
	err := t.t.QueryRow(ctx, q, args...).Scan(&ok)
	return ok, err
}

func (t pgxTx) commit(ctx context.Context) error { return t.t.Commit(ctx) }
func (t pgxTx) rollback(ctx context.Context)     { _ = t.t.Rollback(ctx) }
