// Package postgres is the shared audit store for several dispenser
// replicas: each replica appends to its own log (shard), claimed with an
// advisory lock and fenced by a compare-and-swap on the log's head row, so
// replicas never serialize on each other. Schema migrations are embedded,
// versioned and idempotent, and applied at start.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/auditsql"
	"github.com/vtk/dispenser/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// schema is the audit tables' versioned migrations. The lock's name is
// the one earlier releases took: an old and a new replica starting
// together still migrate one at a time.
var schema = migrate.Set{Files: migrations, Dir: "migrations", Table: "audit_schema", Lock: "dispenser-audit-migrate"}

// ErrLogInUse is returned by Open when another replica holds the log.
var ErrLogInUse = errors.New("audit postgres: the log is held by another replica (give each replica its own audit.log or server.replica_id)")

// ErrFenced is returned by Append when the head moved under this replica:
// another writer appended to its log.
var ErrFenced = errors.New("audit postgres: the log head changed under this replica; refusing to fork the log")

// Store is a PostgreSQL audit trail; it appends to one log and reads all.
type Store struct {
	pool     *pgxpool.Pool
	log      string
	now      func() time.Time
	readOnly bool
	borrow   bool
	problems func(string)

	// lockMu guards lock, the connection holding the log's session-level
	// advisory lock. Appends run on that connection: while it is alive the
	// lock is held, and when it dies (network cut, backend terminated,
	// server restart) the append fails instead of writing unlocked, and the
	// next append claims the lock again or fails with ErrLogInUse.
	lockMu sync.Mutex
	lock   *pgxpool.Conn
}

var _ audit.Trail = (*Store)(nil)

// Options configure Open.
type Options struct {
	DSN string
	// Log is this replica's log; no two live replicas may share one.
	Log string
	// ReadOnly opens without claiming a log or migrating, and every
	// session is read-only (default_transaction_read_only): for verify and
	// query, which must create and change nothing.
	ReadOnly bool
	// Borrow appends to Log without claiming it (dispenser audit adopt
	// while the log's replica runs): every append is still fenced by the
	// compare-and-swap of the head, so two writers never fork the log (one
	// of two racing appends fails with ErrFenced).
	Borrow bool
	// Problems, when set, is told of every row a query skips because no
	// entry stands behind it (tampering), for logs and metrics.
	Problems func(string)
}

// ErrReadOnly is returned by writes to a store opened read-only.
var ErrReadOnly = errors.New("audit postgres: opened read-only")

// Open connects, migrates and claims the log.
func Open(ctx context.Context, o Options) (*Store, error) {
	if !o.ReadOnly && !audit.ValidLogName(o.Log) {
		return nil, fmt.Errorf("audit postgres: invalid log name %q", o.Log)
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("audit postgres: %w", err)
	}
	if o.ReadOnly {
		// Every statement of every session runs in a read-only transaction:
		// the server refuses any write, whatever the role may do.
		cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("audit postgres: %w", err)
	}
	s := &Store{pool: pool, log: o.Log, now: time.Now, readOnly: o.ReadOnly, borrow: o.Borrow, problems: o.Problems}
	if o.ReadOnly {
		if err := s.checkSchema(ctx); err != nil {
			pool.Close()
			return nil, err
		}
		return s, nil
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("audit postgres: migrate: %w", err)
	}
	if o.Borrow {
		return s, nil
	}
	s.lockMu.Lock()
	err = s.claim(ctx)
	s.lockMu.Unlock()
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// claim takes a connection and the log's advisory lock on it. lockMu held.
func (s *Store) claim(ctx context.Context) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("audit postgres: %w", err)
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('dispenser-audit:' || current_schema() || ':' || $1, 0))`, s.log).Scan(&ok); err != nil {
		dropConn(c)
		return fmt.Errorf("audit postgres: %w", err)
	}
	if !ok {
		c.Release()
		return fmt.Errorf("%w: %s", ErrLogInUse, s.log)
	}
	s.lock = c
	return nil
}

// dropConn closes c (ending its session and so any advisory lock it held)
// and returns it to the pool, which discards closed connections.
func dropConn(c *pgxpool.Conn) {
	_ = c.Conn().Close(context.Background())
	c.Release()
}

// lockedConn returns the connection holding the log's lock, claiming the
// lock again when the previous connection was lost. lockMu held.
func (s *Store) lockedConn(ctx context.Context) (*pgxpool.Conn, error) {
	if s.lock != nil && s.lock.Conn().IsClosed() {
		dropConn(s.lock)
		s.lock = nil
	}
	if s.lock == nil {
		if err := s.claim(ctx); err != nil {
			return nil, err
		}
	}
	return s.lock, nil
}

// Close releases the log and the pool.
func (s *Store) Close() error {
	s.lockMu.Lock()
	if s.lock != nil {
		// Closing the connection drops its session-level advisory lock.
		dropConn(s.lock)
		s.lock = nil
	}
	s.lockMu.Unlock()
	s.pool.Close()
	return nil
}

// Log is the name of the log this store appends to.
func (s *Store) Log() string { return s.log }

// checkSchema makes sure a store opened read-only has the audit tables of
// this version (a read-only open cannot create or migrate them).
func (s *Store) checkSchema(ctx context.Context) error {
	latest, err := schema.Latest()
	if err != nil {
		return err
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('audit_schema') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("audit postgres: %w", err)
	}
	if !exists {
		return errors.New("audit postgres: the database (schema) holds no audit trail: it does not exist here")
	}
	var v *int
	if err := s.pool.QueryRow(ctx, `SELECT MAX(version) FROM audit_schema`).Scan(&v); err != nil {
		return fmt.Errorf("audit postgres: %w", err)
	}
	if v == nil || *v < latest {
		return fmt.Errorf("audit postgres: the schema is at version %v, this dispenser's is %d: start a dispenser once to migrate it", v, latest)
	}
	return nil
}

// migrate applies the embedded migrations the schema has not recorded;
// replicas starting together migrate one at a time.
func (s *Store) migrate(ctx context.Context) error {
	return schema.Apply(ctx, migrate.Pgx(s.pool))
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readHashes(ctx context.Context, q querier, log string, idx []int64) ([]tlog.Hash, error) {
	rows, err := q.Query(ctx, `SELECT idx, hash FROM audit_hashes WHERE log = $1 AND idx = ANY($2)`, log, idx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := map[int64]tlog.Hash{}
	for rows.Next() {
		var i int64
		var b []byte
		if err := rows.Scan(&i, &b); err != nil {
			return nil, err
		}
		var h tlog.Hash
		if len(b) != len(h) {
			return nil, fmt.Errorf("audit postgres: stored hash %d of log %s has %d bytes", i, log, len(b))
		}
		copy(h[:], b)
		got[i] = h
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(idx))
	for j, i := range idx {
		h, ok := got[i]
		if !ok {
			return nil, fmt.Errorf("audit postgres: stored hash %d of log %s is missing", i, log)
		}
		out[j] = h
	}
	return out, nil
}

func readHead(ctx context.Context, q querier, log string) (audit.Head, bool, error) {
	var h audit.Head
	var b []byte
	err := q.QueryRow(ctx, `SELECT size, hash FROM audit_heads WHERE log = $1`, log).Scan(&h.Size, &b)
	if errors.Is(err, pgx.ErrNoRows) {
		return audit.Head{}, false, nil
	}
	if err != nil {
		return h, false, err
	}
	copy(h.Hash[:], b)
	return h, true, nil
}

// Append implements audit.Store: one transaction (synchronous commit) with
// the records, their Merkle nodes and a compare-and-swap of the head.
func (s *Store) Append(ctx context.Context, recs []audit.Record) ([]audit.Entry, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if s.borrow {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("audit postgres: begin: %w", err)
		}
		entries, err := s.appendTx(ctx, tx, recs)
		if err != nil {
			_ = tx.Rollback(ctx)
			return nil, err
		}
		return entries, nil
	}
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	c, err := s.lockedConn(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := c.Begin(ctx)
	if err != nil && c.Conn().IsClosed() {
		// The lock's connection died while idle (nothing of this batch is
		// written yet): claim the lock on a new connection and go on, or
		// fail with ErrLogInUse if another replica holds the log now.
		dropConn(c)
		s.lock = nil
		if c, err = s.lockedConn(ctx); err != nil {
			return nil, err
		}
		tx, err = c.Begin(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("audit postgres: begin: %w", err)
	}
	entries, err := s.appendTx(ctx, tx, recs)
	if err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	return entries, nil
}

// appendTx writes recs in tx and commits it.
func (s *Store) appendTx(ctx context.Context, tx pgx.Tx, recs []audit.Record) ([]audit.Entry, error) {
	head, exists, err := readHead(ctx, tx, s.log)
	if err != nil {
		return nil, fmt.Errorf("audit postgres: read head: %w", err)
	}
	sealed, err := audit.Seal(s.log, head, recs, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, tx, s.log, idx)
	}))
	if err != nil {
		return nil, err
	}
	rows := make([][]any, len(sealed.Entries))
	for i, e := range sealed.Entries {
		row := append([]any{s.log, e.Seq}, auditsql.Values(e.Record)...)
		rows[i] = append(row, sealed.Bodies[i], sealed.Hashes[i][:])
	}
	cols := append(append([]string{"log", "seq"}, auditsql.Columns...), "body", "hash")
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_records"}, cols, pgx.CopyFromRows(rows)); err != nil {
		return nil, fmt.Errorf("audit postgres: insert records: %w", err)
	}
	hrows := make([][]any, len(sealed.Tree))
	for i, h := range sealed.Tree {
		hrows[i] = []any{s.log, h.Index, h.Hash[:]}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_hashes"}, []string{"log", "idx", "hash"}, pgx.CopyFromRows(hrows)); err != nil {
		return nil, fmt.Errorf("audit postgres: insert hashes: %w", err)
	}
	if exists {
		tag, err := tx.Exec(ctx, `UPDATE audit_heads SET size = $2, hash = $3 WHERE log = $1 AND size = $4 AND hash = $5`,
			s.log, sealed.Head.Size, sealed.Head.Hash[:], head.Size, head.Hash[:])
		if err != nil {
			return nil, fmt.Errorf("audit postgres: update head: %w", err)
		}
		if tag.RowsAffected() != 1 {
			return nil, ErrFenced
		}
	} else if _, err := tx.Exec(ctx, `INSERT INTO audit_heads (log, size, hash) VALUES ($1, $2, $3)`, s.log, sealed.Head.Size, sealed.Head.Hash[:]); err != nil {
		return nil, fmt.Errorf("audit postgres: create head: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("audit postgres: commit: %w", err)
	}
	return sealed.Entries, nil
}

// Query implements audit.Querier.
func (s *Store) Query(ctx context.Context, f audit.Filter) (audit.Page, error) {
	if err := f.Normalize(); err != nil {
		return audit.Page{}, err
	}
	where, args := auditsql.Where(f, func(i int) string { return "$" + strconv.Itoa(i) })
	rows, err := s.pool.Query(ctx, `SELECT body, `+auditsql.PageColumns+` FROM audit_records WHERE `+where+` `+auditsql.OrderBy+` LIMIT `+strconv.Itoa(f.Limit+1), args...)
	if err != nil {
		return audit.Page{}, fmt.Errorf("audit postgres: query: %w", err)
	}
	defer rows.Close()
	return auditsql.ReadPage(rows, f.Limit, "audit_records", s.report)
}

// report tells the Problems hook of a row no entry stands behind.
func (s *Store) report(problem string) {
	if s.problems != nil {
		s.problems(problem)
	}
}

// logsSQL lists every log named by a head, a checkpoint or an entry (a
// log of entries without a head is still shown by queries, so verify must
// see it). The entries' logs are read one index probe per log.
const logsSQL = `WITH RECURSIVE l(log) AS (
		SELECT MIN(log) FROM audit_records
		UNION ALL SELECT (SELECT MIN(log) FROM audit_records WHERE log > l.log) FROM l WHERE l.log IS NOT NULL)
	SELECT log FROM audit_heads UNION SELECT log FROM audit_checkpoints UNION SELECT log FROM l WHERE log IS NOT NULL ORDER BY 1`

// Logs implements audit.LogReader.
func (s *Store) Logs(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, logsSQL)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Head implements audit.LogReader.
func (s *Store) Head(ctx context.Context, log string) (audit.Head, error) {
	h, _, err := readHead(ctx, s.pool, log)
	return h, err
}

// Scan implements audit.LogReader.
func (s *Store) Scan(ctx context.Context, log string, from int64, fn func(audit.Row) error) error {
	rows, err := s.pool.Query(ctx, `SELECT seq, body, hash, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket
		FROM audit_records WHERE log = $1 AND seq >= $2 ORDER BY seq`, log, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r audit.Row
		// The indexed columns are copies a query trusts: verify compares them.
		c := audit.IndexCopy{Where: "audit_records"}
		f := &c.Fields
		if err := rows.Scan(&r.Seq, &r.Body, &r.Hash, &f.TimeNs, &f.Outcome, &f.Org, &f.Principal, &f.JobID, &f.TaskID, &f.AccessKeyID, &f.Bucket); err != nil {
			return err
		}
		f.Log, f.Seq = log, r.Seq
		r.Copies = []audit.IndexCopy{c}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Body implements audit.LogReader.
func (s *Store) Body(ctx context.Context, log string, seq int64) ([]byte, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM audit_records WHERE log = $1 AND seq = $2`, log, seq).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, audit.ErrNotFound
	}
	return b, err
}

// ReadHashes implements audit.LogReader.
func (s *Store) ReadHashes(ctx context.Context, log string, idx []int64) ([]tlog.Hash, error) {
	return readHashes(ctx, s.pool, log, idx)
}

// ReadHashRange implements audit.LogReader.
func (s *Store) ReadHashRange(ctx context.Context, log string, lo, hi int64) ([]audit.StoredHash, error) {
	rows, err := s.pool.Query(ctx, `SELECT idx, hash FROM audit_hashes WHERE log = $1 AND idx >= $2 AND idx < $3 ORDER BY idx`, log, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return auditsql.ReadStoredHashes(rows)
}

// Strays implements audit.LogReader. The query columns live on
// audit_records itself, so a row outside every chain is an entry row past
// its log's head, which Verify's scan reports; there are no derived
// tables to check.
func (s *Store) Strays(context.Context, bool, func(audit.Stray) error) error { return nil }

// PutCheckpoint implements audit.CheckpointStore.
func (s *Store) PutCheckpoint(ctx context.Context, log string, size int64, signed []byte) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO audit_checkpoints (log, size, note, created_ns) VALUES ($1, $2, $3, $4)
		ON CONFLICT (log, size) DO NOTHING`, log, size, signed, s.now().UnixNano())
	return err
}

// LatestCheckpoint implements audit.CheckpointStore.
func (s *Store) LatestCheckpoint(ctx context.Context, log string) ([]byte, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT note FROM audit_checkpoints WHERE log = $1 ORDER BY size DESC LIMIT 1`, log).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// CheckpointAt implements audit.CheckpointStore.
func (s *Store) CheckpointAt(ctx context.Context, log string, size int64) ([]byte, error) {
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT note FROM audit_checkpoints WHERE log = $1 AND size = $2`, log, size).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

// FirstSeqSince implements audit.Pruner.
func (s *Store) FirstSeqSince(ctx context.Context, log string, t time.Time) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE((SELECT MIN(seq) FROM audit_records WHERE log = $1 AND time_ns >= $2),
		(SELECT size FROM audit_heads WHERE log = $1), 0)`, log, t.UnixNano()).Scan(&n)
	return n, err
}

// Prune implements audit.Pruner.
func (s *Store) Prune(ctx context.Context, log string, p int64) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO audit_prune (log, before) VALUES ($1, $2)
		ON CONFLICT (log) DO UPDATE SET before = GREATEST(audit_prune.before, excluded.before)`, log, p); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM audit_records WHERE log = $1 AND seq < $2`, log, p-1)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), tx.Commit(ctx)
}

// PrunedBefore implements audit.Pruner.
func (s *Store) PrunedBefore(ctx context.Context, log string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT before FROM audit_prune WHERE log = $1`, log).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return n, err
}
