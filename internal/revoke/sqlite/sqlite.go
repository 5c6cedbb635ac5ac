// Package sqlite stores revocations in the audit's SQLite database, in
// their own table.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"net/url"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/vtk/dispenser/internal/migrate"
	"github.com/vtk/dispenser/internal/revoke"
)

// Store is a revoke.Store on SQLite.
type Store struct{ db *sql.DB }

var _ revoke.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// schema is the revocation table's versioned migrations.
var schema = migrate.Set{Files: migrations, Dir: "migrations", Table: "revocations_schema"}

// Open opens (creating and migrating when needed) the database file at
// path.
func Open(ctx context.Context, path string) (*Store, error) {
	// WAL and a busy timeout: the audit writer shares this file. The
	// migration's transaction takes the write lock from its start.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if err := schema.Apply(ctx, migrate.SQL("sqlite", db)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("revocations schema in %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Add implements revoke.Store.
func (s *Store) Add(ctx context.Context, r revoke.Revocation) error {
	var exp any
	if r.ExpiresAt != nil {
		exp = r.ExpiresAt.UnixMicro()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO revocations (id, kind, value, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		r.ID, string(r.Kind), r.Value, r.Reason, r.CreatedBy, r.CreatedAt.UnixMicro(), exp)
	return err
}

// List implements revoke.Store.
func (s *Store) List(ctx context.Context, activeAt time.Time) ([]revoke.Revocation, error) {
	q, args := `SELECT id, kind, value, reason, created_by, created_at, expires_at FROM revocations`, []any{}
	if !activeAt.IsZero() {
		q, args = q+` WHERE expires_at IS NULL OR expires_at > ?`, append(args, activeAt.UnixMicro())
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []revoke.Revocation
	for rows.Next() {
		var r revoke.Revocation
		var kind string
		var created int64
		var exp sql.NullInt64
		if err := rows.Scan(&r.ID, &kind, &r.Value, &r.Reason, &r.CreatedBy, &created, &exp); err != nil {
			return nil, err
		}
		r.Kind, r.CreatedAt = revoke.Kind(kind), time.UnixMicro(created).UTC()
		if exp.Valid {
			t := time.UnixMicro(exp.Int64).UTC()
			r.ExpiresAt = &t
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Delete implements revoke.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM revocations WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return revoke.ErrNotFound
	}
	return err
}
