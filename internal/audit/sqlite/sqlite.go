// Package sqlite is the embedded audit store: one SQLite file in WAL mode
// with synchronous=FULL (a commit is on disk before Append returns), created
// and migrated on first start. It needs no cgo (modernc.org/sqlite).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/auditsql"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a SQLite audit trail holding one log.
type Store struct {
	w   *sql.DB // the one writer connection (BEGIN IMMEDIATE)
	r   *sql.DB // readers
	log string
	now func() time.Time
}

var _ audit.Trail = (*Store)(nil)

// Options configure Open.
type Options struct {
	// Path is the database file; it is created when missing.
	Path string
	// Log names the log this store appends to (default "main").
	Log string
}

func dsn(path string, extra ...string) string {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating and migrating as needed) the store at o.Path.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Log == "" {
		o.Log = "main"
	}
	if !audit.ValidLogName(o.Log) {
		return nil, fmt.Errorf("audit sqlite: invalid log name %q", o.Log)
	}
	w, err := sql.Open("sqlite", dsn(o.Path, "_txlock", "immediate"))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w, log: o.Log, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	r, err := sql.Open("sqlite", dsn(o.Path, "_txlock", "deferred"))
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	s.r = r
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return errors.Join(s.w.Close(), s.r.Close()) }

// Log is the name of the log this store appends to.
func (s *Store) Log() string { return s.log }

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS audit_schema (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "migrations/"), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", name)
		}
		if err := s.apply(ctx, v, name); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

func (s *Store) apply(ctx context.Context, v int, name string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit_schema WHERE version >= ?`, v).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_schema (version) VALUES (?)`, v); err != nil {
		return err
	}
	return tx.Commit()
}

type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func readHashes(ctx context.Context, q queryer, log string, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		var b []byte
		if err := q.QueryRowContext(ctx, `SELECT hash FROM audit_hashes WHERE log = ? AND idx = ?`, log, x).Scan(&b); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("audit sqlite: stored hash %d of log %s is missing", x, log)
			}
			return nil, err
		}
		if len(b) != len(out[i]) {
			return nil, fmt.Errorf("audit sqlite: stored hash %d of log %s has %d bytes", x, log, len(b))
		}
		copy(out[i][:], b)
	}
	return out, nil
}

func readHead(ctx context.Context, q queryer, log string) (audit.Head, error) {
	var h audit.Head
	var b []byte
	err := q.QueryRowContext(ctx, `SELECT size, hash FROM audit_heads WHERE log = ?`, log).Scan(&h.Size, &b)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{}, nil
	}
	if err != nil {
		return h, err
	}
	copy(h.Hash[:], b)
	return h, nil
}

// Append implements audit.Store: one IMMEDIATE transaction, committed with
// a full fsync, holding the records, their Merkle nodes and the new head.
func (s *Store) Append(ctx context.Context, recs []audit.Record) ([]audit.Entry, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	head, err := readHead(ctx, tx, s.log)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: read head: %w", err)
	}
	sealed, err := audit.Seal(s.log, head, recs, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, tx, s.log, idx)
	}))
	if err != nil {
		return nil, err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO audit_records (log, seq, `+strings.Join(auditsql.Columns, ", ")+`, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: prepare: %w", err)
	}
	defer ins.Close()
	for i, e := range sealed.Entries {
		args := append([]any{s.log, e.Seq}, auditsql.Values(e.Record)...)
		args = append(args, sealed.Bodies[i], sealed.Hashes[i][:])
		if _, err := ins.ExecContext(ctx, args...); err != nil {
			return nil, fmt.Errorf("audit sqlite: insert record: %w", err)
		}
	}
	hins, err := tx.PrepareContext(ctx, `INSERT INTO audit_hashes (log, idx, hash) VALUES (?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: prepare: %w", err)
	}
	defer hins.Close()
	for _, h := range sealed.Tree {
		if _, err := hins.ExecContext(ctx, s.log, h.Index, h.Hash[:]); err != nil {
			return nil, fmt.Errorf("audit sqlite: insert hash: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_heads (log, size, hash) VALUES (?, ?, ?)
		ON CONFLICT (log) DO UPDATE SET size = excluded.size, hash = excluded.hash`, s.log, sealed.Head.Size, sealed.Head.Hash[:]); err != nil {
		return nil, fmt.Errorf("audit sqlite: update head: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("audit sqlite: commit: %w", err)
	}
	return sealed.Entries, nil
}

// Query implements audit.Querier.
func (s *Store) Query(ctx context.Context, f audit.Filter) (audit.Page, error) {
	if err := f.Normalize(); err != nil {
		return audit.Page{}, err
	}
	where, args := auditsql.Where(f, func(int) string { return "?" })
	rows, err := s.r.QueryContext(ctx, `SELECT body FROM audit_records WHERE `+where+` `+auditsql.OrderBy+` LIMIT `+strconv.Itoa(f.Limit+1), args...)
	if err != nil {
		return audit.Page{}, fmt.Errorf("audit sqlite: query: %w", err)
	}
	defer rows.Close()
	return auditsql.ReadPage(rows, f.Limit)
}

// Logs implements audit.LogReader.
func (s *Store) Logs(ctx context.Context) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT log FROM audit_heads UNION SELECT DISTINCT log FROM audit_checkpoints ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// Head implements audit.LogReader.
func (s *Store) Head(ctx context.Context, log string) (audit.Head, error) {
	return readHead(ctx, s.r, log)
}

// Scan implements audit.LogReader.
func (s *Store) Scan(ctx context.Context, log string, from int64, fn func(audit.Row) error) error {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, body, hash FROM audit_records WHERE log = ? AND seq >= ? ORDER BY seq`, log, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r audit.Row
		if err := rows.Scan(&r.Seq, &r.Body, &r.Hash); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Body implements audit.LogReader.
func (s *Store) Body(ctx context.Context, log string, seq int64) ([]byte, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT body FROM audit_records WHERE log = ? AND seq = ?`, log, seq).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, audit.ErrNotFound
	}
	return b, err
}

// ReadHashes implements audit.LogReader.
func (s *Store) ReadHashes(ctx context.Context, log string, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, s.r, log, idx)
}

// PutCheckpoint implements audit.CheckpointStore.
func (s *Store) PutCheckpoint(ctx context.Context, log string, size int64, signed []byte) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO audit_checkpoints (log, size, note, created_ns) VALUES (?, ?, ?, ?)
		ON CONFLICT (log, size) DO NOTHING`, log, size, signed, s.now().UnixNano())
	return err
}

// LatestCheckpoint implements audit.CheckpointStore.
func (s *Store) LatestCheckpoint(ctx context.Context, log string) ([]byte, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints WHERE log = ? ORDER BY size DESC LIMIT 1`, log).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// CheckpointAt implements audit.CheckpointStore.
func (s *Store) CheckpointAt(ctx context.Context, log string, size int64) ([]byte, error) {
	var b []byte
	err := s.r.QueryRowContext(ctx, `SELECT note FROM audit_checkpoints WHERE log = ? AND size = ?`, log, size).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// FirstSeqSince implements audit.Pruner.
func (s *Store) FirstSeqSince(ctx context.Context, log string, t time.Time) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE((SELECT MIN(seq) FROM audit_records WHERE log = ? AND time_ns >= ?),
		(SELECT size FROM audit_heads WHERE log = ?), 0)`, log, t.UnixNano(), log).Scan(&n)
	return n, err
}

// Prune implements audit.Pruner.
func (s *Store) Prune(ctx context.Context, log string, p int64) (int64, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_prune (log, before) VALUES (?, ?)
		ON CONFLICT (log) DO UPDATE SET before = excluded.before WHERE excluded.before > audit_prune.before`, log, p); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM audit_records WHERE log = ? AND seq < ?`, log, p-1)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, tx.Commit()
}

// PrunedBefore implements audit.Pruner.
func (s *Store) PrunedBefore(ctx context.Context, log string) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT before FROM audit_prune WHERE log = ?`, log).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}
