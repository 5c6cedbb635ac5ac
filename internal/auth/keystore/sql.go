package keystore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	// SQL drivers for the sqlite and postgres store types.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/vtk/dispenser/internal/migrate"
)

// SQLStore keeps keys in the table dispenser_access_keys of a SQLite or
// PostgreSQL database (typically the audit database).
type SQLStore struct {
	db   *sql.DB
	seal *sealer
}

var _ Store = (*SQLStore)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// sqlSchema is the key table's versioned migrations (one set for SQLite
// and PostgreSQL).
var sqlSchema = migrate.Set{Files: migrations, Dir: "migrations", Table: "dispenser_access_keys_schema", Lock: "dispenser-access-keys-migrate"}

// openSQL opens driver ("sqlite" or "pgx") at dsn and creates or migrates
// the key table.
func openSQL(driver, dsn string, seal *sealer) (*SQLStore, error) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	if driver == "sqlite" {
		db.SetMaxOpenConns(1) // SQLite allows one writer; avoid SQLITE_BUSY.
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sqlSchema.Apply(ctx, migrate.SQL(driver, db)); err != nil {
		db.Close()
		return nil, fmt.Errorf("key store: create table: %w", err)
	}
	return &SQLStore{db: db, seal: seal}, nil
}

// NewSQLStore opens driver ("sqlite" or "pgx") at dsn, creating or
// migrating the key table. kek (32 bytes) seals the stored secrets; nil
// stores them as they are.
func NewSQLStore(driver, dsn string, kek []byte) (*SQLStore, error) {
	var seal *sealer
	if kek != nil {
		var err error
		if seal, err = newSealer(kek); err != nil {
			return nil, err
		}
	}
	return openSQL(driver, dsn, seal)
}

// Close closes the database.
func (s *SQLStore) Close() error { return s.db.Close() }

// Lookup implements Store.
func (s *SQLStore) Lookup(ctx context.Context, id string) (Key, error) {
	// The id comes from an unauthenticated request. One that is not valid
	// text (PostgreSQL refuses invalid UTF-8 and NUL) names no key, and
	// must not look like a database failure.
	if !utf8.ValidString(id) || strings.ContainsRune(id, 0) {
		return Key{}, ErrNotFound
	}
	var k Key
	var stored string
	var created int64
	var disabled int
	err := s.db.QueryRowContext(ctx, `SELECT id, name, org, secret, created_unix, disabled FROM dispenser_access_keys WHERE id = $1`, id).
		Scan(&k.ID, &k.Name, &k.Org, &stored, &created, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, ErrNotFound
	}
	if err != nil {
		return Key{}, err
	}
	if k.Secret, err = s.seal.open(k.ID, stored); err != nil {
		return Key{}, err
	}
	k.Created, k.Disabled = time.Unix(created, 0).UTC(), disabled != 0
	return k, nil
}

// Create implements Store.
func (s *SQLStore) Create(ctx context.Context, name, org string) (Key, error) {
	k, err := newKey(name, org, time.Now())
	if err != nil {
		return Key{}, err
	}
	stored, err := s.seal.seal(k.ID, k.Secret)
	if err != nil {
		return Key{}, err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO dispenser_access_keys (id, name, org, secret, created_unix, disabled) VALUES ($1, $2, $3, $4, $5, 0)`,
		k.ID, k.Name, k.Org, stored, k.Created.Unix())
	if err != nil {
		return Key{}, err
	}
	return k, nil
}

// List implements Store.
func (s *SQLStore) List(ctx context.Context) ([]Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, org, created_unix, disabled FROM dispenser_access_keys`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		var k Key
		var created int64
		var disabled int
		if err := rows.Scan(&k.ID, &k.Name, &k.Org, &created, &disabled); err != nil {
			return nil, err
		}
		k.Created, k.Disabled = time.Unix(created, 0).UTC(), disabled != 0
		out = append(out, k)
	}
	sortPublic(out)
	return out, rows.Err()
}

// Disable implements Store.
func (s *SQLStore) Disable(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE dispenser_access_keys SET disabled = 1 WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

func sortKeys(ks []fileKey) {
	sort.Slice(ks, func(i, j int) bool {
		if !ks[i].Created.Equal(ks[j].Created) {
			return ks[i].Created.Before(ks[j].Created)
		}
		return ks[i].ID < ks[j].ID
	})
}

func sortPublic(ks []Key) {
	sort.Slice(ks, func(i, j int) bool {
		if !ks[i].Created.Equal(ks[j].Created) {
			return ks[i].Created.Before(ks[j].Created)
		}
		return ks[i].ID < ks[j].ID
	})
}
