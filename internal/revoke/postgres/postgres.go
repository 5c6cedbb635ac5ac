// Package postgres stores revocations in the audit's PostgreSQL database,
// in their own table, so every replica sees the same list.
package postgres

import (
	"context"
	"embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vtk/dispenser/internal/migrate"
	"github.com/vtk/dispenser/internal/revoke"
)

// Store is a revoke.Store on PostgreSQL.
type Store struct{ pool *pgxpool.Pool }

var _ revoke.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// schema is the revocation table's versioned migrations.
var schema = migrate.Set{Files: migrations, Dir: "migrations", Table: "revocations_schema", Lock: "dispenser-revocations-migrate"}

// Open connects with dsn and creates or migrates the table when needed.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("revocation store dsn: %w", err) // pgx never puts the password in this error
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := schema.Apply(ctx, migrate.Pgx(pool)); err != nil {
		pool.Close()
		return nil, fmt.Errorf("revocations schema: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() error { s.pool.Close(); return nil }

// Add implements revoke.Store.
func (s *Store) Add(ctx context.Context, r revoke.Revocation) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO revocations (id, kind, value, reason, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		r.ID, string(r.Kind), r.Value, r.Reason, r.CreatedBy, r.CreatedAt, r.ExpiresAt)
	return err
}

// List implements revoke.Store.
func (s *Store) List(ctx context.Context, activeAt time.Time) ([]revoke.Revocation, error) {
	q, args := `SELECT id, kind, value, reason, created_by, created_at, expires_at FROM revocations`, []any{}
	if !activeAt.IsZero() {
		q, args = q+` WHERE expires_at IS NULL OR expires_at > $1`, append(args, activeAt)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (revoke.Revocation, error) {
		var r revoke.Revocation
		var kind string
		var exp *time.Time
		err := row.Scan(&r.ID, &kind, &r.Value, &r.Reason, &r.CreatedBy, &r.CreatedAt, &exp)
		r.Kind, r.CreatedAt = revoke.Kind(kind), r.CreatedAt.UTC()
		if exp != nil {
			t := exp.UTC()
			r.ExpiresAt = &t
		}
		return r, err
	})
}

// Delete implements revoke.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM revocations WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return revoke.ErrNotFound
	}
	return nil
}
