// Package sqlite is the embedded audit store: one SQLite file in WAL mode
// with synchronous=FULL (a commit is on disk before Append returns), created
// and migrated on first start. It needs no cgo (modernc.org/sqlite).
//
// An append commits only what durability and tamper evidence need: the
// entry bytes, their chain hash, the Merkle nodes and the head. The query
// index (audit_index and its seven indexes) lives in a second file beside
// the trail (IndexPath), built from the committed entries by an indexer
// with a connection of its own, so it never holds up an append; every
// query first brings it up to date, so queries see every durable record.
// The indexer continues from its own cursor (audit_index_cursor: per log,
// the seq below which every entry is indexed), never from the index's
// content, which anyone holding the file can write.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/auditsql"
	"github.com/vtk/dispenser/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// schema is the audit tables' versioned migrations.
var schema = migrate.Set{Files: migrations, Dir: "migrations", Table: "audit_schema"}

// Store is a SQLite audit trail holding one log.
type Store struct {
	path     string
	w        *sql.DB              // the one writer connection (BEGIN IMMEDIATE); nil when read-only
	ix       *sql.DB              // the indexer's connection: the index file, the trail attached read-only; nil when read-only
	ixFile   os.FileInfo          // the index file ix opened (see checkIndexFile)
	ixStmts  map[string]*sql.Stmt // prepared once on ix (see txQueryer)
	r        *sql.DB              // readers: the trail, the index file attached as "idx"
	log      string
	now      func() time.Time
	problems func(string)

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared once on w, reused by every transaction

	idx indexer

	closeOnce sync.Once
	closeErr  error
}

// indexer tracks how far audit_index lags behind audit_records.
type indexer struct {
	mu         sync.Mutex   // one catch-up at a time
	appended   atomic.Int64 // records appended through this Store
	indexed    atomic.Int64 // appended as of the last complete catch-up
	lastAppend atomic.Int64 // unix nanoseconds
	idle       time.Duration
	backlog    int64
	stop       chan struct{}
	done       chan struct{}
}

var _ audit.Trail = (*Store)(nil)

// Options configure Open.
type Options struct {
	// Path is the database file; it is created when missing.
	Path string
	// Log names the log this store appends to (default "main").
	Log string
	// IndexIdle is how long appends must pause before the indexer brings
	// the query index up to date in the background (default 100ms).
	IndexIdle time.Duration
	// IndexBacklog is how many unindexed records make the indexer run even
	// while appends continue (default 20,000; it bounds how much a query
	// may have to index before it answers). With 1 the indexer follows
	// the log on every tick (at most 50ms behind) whatever the load.
	IndexBacklog int64
	// ReadOnly opens an existing database read-only (SQLite mode=ro) for
	// verification: no migration, no indexer, every write fails, and a
	// missing file is an error (nothing is created). A missing index file
	// reads as an empty index.
	ReadOnly bool
	// Problems, when set, is told of every derived row the store meets
	// that no entry accounts for (a query skipping a ghost index row, the
	// indexer finding its cursor edited or another trail's), and when the
	// indexer starts failing, for logs and metrics.
	Problems func(string)
}

// ErrReadOnly is returned by writes to a store opened read-only.
var ErrReadOnly = errors.New("audit sqlite: opened read-only")

func dsn(path string, extra ...string) string {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	return uri(path, q, extra...)
}

// roDSN opens path read-only: SQLite's own mode=ro (the driver passes a
// "file:" name to sqlite3_open_v2 whole), which fails on a missing file
// instead of creating it and refuses every write. No pragma that writes
// (journal_mode) is set; the database is in WAL mode already.
func roDSN(path string) string {
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	return uri(path, q, "_txlock", "deferred")
}

func uri(path string, q url.Values, extra ...string) string {
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating and migrating as needed) the store at o.Path, or
// only opens an existing one with o.ReadOnly.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Log == "" {
		o.Log = "main"
	}
	if !audit.ValidLogName(o.Log) {
		return nil, fmt.Errorf("audit sqlite: invalid log name %q", o.Log)
	}
	if o.ReadOnly {
		return openReadOnly(ctx, o)
	}
	w, err := sql.Open("sqlite", dsn(o.Path, "_txlock", "immediate"))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if o.IndexIdle <= 0 {
		o.IndexIdle = 100 * time.Millisecond
	}
	if o.IndexBacklog <= 0 {
		o.IndexBacklog = 20000
	}
	s := &Store{path: o.Path, w: w, log: o.Log, now: time.Now, stmts: map[string]*sql.Stmt{}, problems: o.Problems}
	s.idx.idle, s.idx.backlog = o.IndexIdle, o.IndexBacklog
	s.idx.indexed.Store(-1) // unknown: catch up once at the first idle moment
	if err := s.migrate(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	if err := s.prepare(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	if err := s.openIndex(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	idx, err := readerAttachment(ctx, o.Path, false)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	r, err := openDB(dsn(o.Path, "_txlock", "deferred"), idx)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	s.r = r
	s.idx.stop, s.idx.done = make(chan struct{}), make(chan struct{})
	go s.indexLoop()
	return s, nil
}

// openReadOnly opens an existing, migrated database for reading only.
func openReadOnly(ctx context.Context, o Options) (*Store, error) {
	// mode=ro fails on a missing file too; checking first gives the
	// operator a plain message instead of SQLITE_CANTOPEN.
	if _, err := os.Stat(o.Path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("audit sqlite %s: the database does not exist", o.Path)
		}
		return nil, fmt.Errorf("audit sqlite: %w", err)
	}
	idx, err := readerAttachment(ctx, o.Path, true)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: %w", err)
	}
	r, err := openDB(roDSN(o.Path), idx)
	if err != nil {
		return nil, err
	}
	r.SetMaxOpenConns(4)
	s := &Store{path: o.Path, r: r, log: o.Log, now: time.Now, stmts: map[string]*sql.Stmt{}, problems: o.Problems}
	if err := s.checkSchema(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	if err := s.checkIndexLayout(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("audit sqlite %s: %w", o.Path, err)
	}
	return s, nil
}

// checkSchema makes sure a database opened read-only is an audit database
// migrated to this version (a read-only open cannot migrate it).
func (s *Store) checkSchema(ctx context.Context) error {
	latest, err := schema.Latest()
	if err != nil {
		return err
	}
	var v sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MAX(version) FROM audit_schema`).Scan(&v); err != nil {
		return fmt.Errorf("not a dispenser audit database: %w", err)
	}
	if !v.Valid || v.Int64 < int64(latest) {
		return fmt.Errorf("the database schema is version %d, this dispenser's is %d: start the dispenser (or run dispenser audit query) once to migrate it, then verify", v.Int64, latest)
	}
	return nil
}

// report tells the Problems hook of a derived row no entry accounts for.
func (s *Store) report(problem string) {
	if s.problems != nil {
		s.problems(problem)
	}
}

// Close stops the indexer and closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	if s.idx.stop != nil {
		close(s.idx.stop)
		<-s.idx.done
	}
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		_ = st.Close()
	}
	s.stmtMu.Unlock()
	for _, st := range s.ixStmts {
		_ = st.Close()
	}
	// The writer closes last: the last connection to close a WAL database
	// checkpoints it and removes its -wal file, and the others hold the
	// trail read-only (the indexer) or may hold no connection at all.
	var errs []error
	for _, db := range []*sql.DB{s.r, s.ix, s.w} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// stmt returns q, prepared once on the writer connection, bound to tx:
// preparing once instead of per batch keeps the SQL parser off the commit
// path. Every statement the writer uses is prepared by Open (the one
// connection is busy inside a transaction); one that is not is prepared
// on the transaction.
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	st, ok := s.prepared(q)
	if !ok {
		return tx.PrepareContext(ctx, q)
	}
	return tx.StmtContext(ctx, st), nil
}

// prepared returns q as Open prepared it on the writer connection.
func (s *Store) prepared(q string) (*sql.Stmt, bool) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	st, ok := s.stmts[q]
	return st, ok
}

// prepare prepares the writer's statements while its connection is free.
func (s *Store) prepare(ctx context.Context) error {
	qs := []string{selectHash, selectHead, upsertHead}
	for _, n := range rowChunks {
		qs = append(qs, insertRecords+valuesList(n, recordCols), insertHashes+valuesList(n, 3))
	}
	for _, q := range qs {
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		s.stmts[q] = st
	}
	return nil
}

// migrate applies the embedded migrations the database has not recorded.
func (s *Store) migrate(ctx context.Context) error {
	return schema.Apply(ctx, migrate.SQL("sqlite", s.w))
}

type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

const (
	selectHash = `SELECT hash FROM audit_hashes WHERE log = ? AND idx = ?`
	selectHead = `SELECT size, hash FROM audit_heads WHERE log = ?`
	upsertHead = `INSERT INTO audit_heads (log, size, hash) VALUES (?, ?, ?)
		ON CONFLICT (log) DO UPDATE SET size = excluded.size, hash = excluded.hash`
)

// txQueryer runs a transaction's queries through the statements prepared
// once on its connection (prepared reports them), and any other query as
// it is: the writer's and the indexer's fixed queries are parsed once, not
// per transaction.
type txQueryer struct {
	tx       *sql.Tx
	prepared func(query string) (*sql.Stmt, bool)
}

func (q txQueryer) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st, ok := q.prepared(query); ok {
		return q.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q txQueryer) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st, ok := q.prepared(query); ok {
		return q.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

func readHashes(ctx context.Context, q queryer, log string, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		var b []byte
		if err := q.QueryRowContext(ctx, selectHash, log, x).Scan(&b); err != nil {
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
	err := q.QueryRowContext(ctx, selectHead, log).Scan(&h.Size, &b)
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
// Rows go in as multi-row INSERTs through statements prepared once.
func (s *Store) Append(ctx context.Context, recs []audit.Record) ([]audit.Entry, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	if s.w == nil {
		return nil, ErrReadOnly
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	q := txQueryer{tx: tx, prepared: s.prepared}
	head, err := readHead(ctx, q, s.log)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: read head: %w", err)
	}
	sealed, err := audit.Seal(s.log, head, recs, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, q, s.log, idx)
	}))
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, recordCols*len(sealed.Entries))
	for i, e := range sealed.Entries {
		r := e.Record
		args = append(args, s.log, e.Seq, audit.TimeKey(r.Time), string(r.Outcome), r.Org, r.Principal, r.JobID, r.TaskID,
			r.AccessKeyID, r.Bucket, sealed.Bodies[i], sealed.Hashes[i][:])
	}
	if err := s.insertRows(ctx, tx, insertRecords, recordCols, args); err != nil {
		return nil, fmt.Errorf("audit sqlite: insert record: %w", err)
	}
	args = args[:0]
	for _, h := range sealed.Tree {
		args = append(args, s.log, h.Index, h.Hash[:])
	}
	if err := s.insertRows(ctx, tx, insertHashes, 3, args); err != nil {
		return nil, fmt.Errorf("audit sqlite: insert hash: %w", err)
	}
	up, err := s.stmt(ctx, tx, upsertHead)
	if err != nil {
		return nil, fmt.Errorf("audit sqlite: prepare: %w", err)
	}
	if _, err := up.ExecContext(ctx, s.log, sealed.Head.Size, sealed.Head.Hash[:]); err != nil {
		return nil, fmt.Errorf("audit sqlite: update head: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("audit sqlite: commit: %w", err)
	}
	s.idx.appended.Add(int64(len(sealed.Entries)))
	s.idx.lastAppend.Store(time.Now().UnixNano())
	return sealed.Entries, nil
}

var (
	insertRecords = `INSERT INTO audit_records (log, seq, ` + strings.Join(auditsql.Columns, ", ") + `, body, hash) VALUES `
	insertHashes  = `INSERT INTO audit_hashes (log, idx, hash) VALUES `
)

// recordCols is the number of values per audit_records row: log, seq, the
// indexed columns, body, hash.
const recordCols = 12

// rowChunks are the multi-row statement sizes insertRows uses: few
// distinct statements to prepare, few executions per batch.
var rowChunks = []int{64, 16, 4, 1}

// insertRows executes prefix + "(?, ...), (?, ...)" over args, cols values
// per row, in as few statements as rowChunks allow.
func (s *Store) insertRows(ctx context.Context, tx *sql.Tx, prefix string, cols int, args []any) error {
	rows := len(args) / cols
	for _, n := range rowChunks {
		for rows >= n {
			st, err := s.stmt(ctx, tx, prefix+valuesLists[valuesKey{n, cols}])
			if err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, args[:n*cols]...); err != nil {
				return err
			}
			args, rows = args[n*cols:], rows-n
		}
	}
	return nil
}

type valuesKey struct{ rows, cols int }

// valuesLists holds the VALUES lists of every multi-row statement.
var valuesLists = func() map[valuesKey]string {
	m := map[valuesKey]string{}
	for _, n := range rowChunks {
		for _, c := range []int{recordCols, 3} {
			m[valuesKey{n, c}] = valuesList(n, c)
		}
	}
	return m
}()

func valuesList(rows, cols int) string {
	row := "(" + strings.Repeat("?, ", cols-1) + "?)"
	return strings.Repeat(row+", ", rows-1) + row
}

// Query implements audit.Querier.
func (s *Store) Query(ctx context.Context, f audit.Filter) (audit.Page, error) {
	if err := f.Normalize(); err != nil {
		return audit.Page{}, err
	}
	if err := s.CatchUp(ctx); err != nil {
		return audit.Page{}, err
	}
	tx, err := s.readTx(ctx)
	if err != nil {
		return audit.Page{}, fmt.Errorf("audit sqlite: query: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, querySQL(f), queryArgs(f)...)
	if err != nil {
		return audit.Page{}, fmt.Errorf("audit sqlite: query: %w", err)
	}
	defer rows.Close()
	return auditsql.ReadPage(rows, f.Limit, "audit_index", s.report)
}

// querySQL selects from audit_index (through one of its indexes) and reads
// each result's body from audit_records by id, with the index row's own
// columns for ReadPage to compare with the entry. Rows of entries a prune
// deleted (removed from the index right after the prune) are left out.
func querySQL(f audit.Filter) string {
	where, _ := auditsql.Where(f, func(int) string { return "?" })
	return `SELECT (SELECT body FROM audit_records r WHERE r.id = audit_index.id), ` + auditsql.PageColumns + ` FROM audit_index WHERE ` + where +
		` AND ` + notPruned("audit_index") + ` ` + auditsql.OrderBy + ` LIMIT ` + strconv.Itoa(f.Limit+1)
}

// notPruned is the condition that the index row t is not one of an entry
// below its log's prune floor: such a row is one the prune deletes right
// after the entries (or, after a crash in between, the next start), never
// evidence of anything.
func notPruned(t string) string {
	return t + `.seq >= COALESCE((SELECT p.before - 1 FROM audit_prune p WHERE p.log = ` + t + `.log), 0)`
}

func queryArgs(f audit.Filter) []any {
	_, args := auditsql.Where(f, func(int) string { return "?" })
	return args
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
	return queryStrings(ctx, s.r, logsSQL)
}

// queryStrings runs a query of one text column and returns its values.
func queryStrings(ctx context.Context, q queryer, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Head implements audit.LogReader.
func (s *Store) Head(ctx context.Context, log string) (audit.Head, error) {
	return readHead(ctx, s.r, log)
}

// Scan implements audit.LogReader. Each row carries both copies of its
// query columns: audit_records' own and its audit_index row (reported
// missing when the indexer's cursor has passed the entry but its row is
// gone).
func (s *Store) Scan(ctx context.Context, log string, from int64, fn func(audit.Row) error) error {
	tx, err := s.readTx(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT r.seq, r.body, r.hash,
		r.time_ns, r.outcome, r.org, r.principal, r.job_id, r.task_id, r.access_key_id, r.bucket,
		i.id IS NOT NULL, r.seq < COALESCE((SELECT next_seq FROM audit_index_cursor WHERE log = ?1), 0),
		COALESCE(i.log, ''), COALESCE(i.seq, -1), COALESCE(i.time_ns, 0), COALESCE(i.outcome, ''), COALESCE(i.org, ''),
		COALESCE(i.principal, ''), COALESCE(i.job_id, ''), COALESCE(i.task_id, ''), COALESCE(i.access_key_id, ''), COALESCE(i.bucket, '')
		FROM audit_records r LEFT JOIN audit_index i ON i.id = r.id WHERE r.log = ?1 AND r.seq >= ?2 ORDER BY r.seq`, log, from)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r audit.Row
		rec := audit.IndexCopy{Where: "audit_records"}
		idx := audit.IndexCopy{Where: "audit_index"}
		var indexed, due bool
		rf, xf := &rec.Fields, &idx.Fields
		if err := rows.Scan(&r.Seq, &r.Body, &r.Hash,
			&rf.TimeNs, &rf.Outcome, &rf.Org, &rf.Principal, &rf.JobID, &rf.TaskID, &rf.AccessKeyID, &rf.Bucket,
			&indexed, &due,
			&xf.Log, &xf.Seq, &xf.TimeNs, &xf.Outcome, &xf.Org, &xf.Principal, &xf.JobID, &xf.TaskID, &xf.AccessKeyID, &xf.Bucket); err != nil {
			return err
		}
		rf.Log, rf.Seq = log, r.Seq // the row's own key columns
		r.Copies = []audit.IndexCopy{rec}
		switch {
		case indexed:
			r.Copies = append(r.Copies, idx)
		case due:
			idx.Missing = true
			r.Copies = append(r.Copies, idx)
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

// ReadHashRange implements audit.LogReader.
func (s *Store) ReadHashRange(ctx context.Context, log string, lo, hi int64) ([]audit.StoredHash, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT idx, hash FROM audit_hashes WHERE log = ? AND idx >= ? AND idx < ? ORDER BY idx`, log, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return auditsql.ReadStoredHashes(rows)
}

// maxStrays bounds the ghost rows Strays names one by one.
const maxStrays = 10

// Strays implements audit.LogReader: audit_index rows whose id is no
// entry's (a query would return them, or skip them as it now does),
// indexer cursors past their log's head, and schema objects of the index
// file no dispenser creates (indexSchemaProblems; either run). Without full, only index rows
// above the newest entry's id are looked at (a range read of what it
// finds): entry ids are dense above the prune floor, so a ghost row among
// them sits at an entry's id, and Scan compares it with that entry.
func (s *Store) Strays(ctx context.Context, full bool, fn func(audit.Stray) error) error {
	// The index file's schema first: with an object of its own in it, the
	// passes below read what that object makes them read.
	sp, err := indexSchemaProblems(ctx, s.r, "idx")
	if err != nil || len(sp) > 0 {
		for _, p := range sp {
			if err := fn(audit.Stray{Problem: p}); err != nil {
				return err
			}
		}
		return err
	}
	q := `SELECT i.id, i.log, i.seq FROM audit_index i
		WHERE NOT EXISTS (SELECT 1 FROM audit_records r WHERE r.id = i.id) AND ` + notPruned("i") + ` ORDER BY i.id`
	if !full {
		q = `SELECT i.id, i.log, i.seq FROM audit_index i
		WHERE i.id > (SELECT COALESCE(MAX(id), 0) FROM audit_records) ORDER BY i.id`
	}
	tx, err := s.readTx(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	var first audit.Stray
	for rows.Next() {
		var id, seq int64
		var log string
		if err := rows.Scan(&id, &log, &seq); err != nil {
			return err
		}
		if n++; n <= maxStrays {
			if err := fn(audit.Stray{Log: log, Problem: fmt.Sprintf("audit_index row %d names %s, but no entry has that id (a ghost row inserted outside the indexer; queries skip it)",
				id, audit.EntryID(log, seq))}); err != nil {
				return err
			}
		} else if n == maxStrays+1 {
			first = audit.Stray{Log: log}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n > maxStrays {
		first.Problem = fmt.Sprintf("%d more ghost rows in audit_index", n-maxStrays)
		if err := fn(first); err != nil {
			return err
		}
	}
	rows.Close()
	return cursorStrays(ctx, tx, fn)
}

// cursorStrays reports indexer cursors past their log's head or not at
// the entry they indexed (their hash is not the chain hash of the entry
// before them, unless a prune deleted that entry).
func cursorStrays(ctx context.Context, tx *sql.Tx, fn func(audit.Stray) error) error {
	rows, err := tx.QueryContext(ctx, `SELECT c.log, c.next_seq, COALESCE(h.size, 0), c.next_seq > COALESCE(h.size, 0) FROM audit_index_cursor c
		LEFT JOIN audit_heads h ON h.log = c.log
		LEFT JOIN audit_records r ON r.log = c.log AND r.seq = c.next_seq - 1
		WHERE c.next_seq > COALESCE(h.size, 0) OR (r.hash IS NOT c.hash
			AND NOT (r.hash IS NULL AND c.next_seq - 1 < COALESCE((SELECT p.before - 1 FROM audit_prune p WHERE p.log = c.log), 0)))`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var out []audit.Stray
	for rows.Next() {
		var log string
		var next, size int64
		var past bool
		if err := rows.Scan(&log, &next, &size, &past); err != nil {
			return err
		}
		p := fmt.Sprintf("the query index cursor of log %s is at %d, past the log's %d entries", log, next, size)
		if !past {
			p = fmt.Sprintf("the query index cursor of log %s is at %d, but entry %d is not the one it indexed", log, next, next-1)
		}
		out = append(out, audit.Stray{Log: log, Problem: p + " (the index file of another trail or of this one before it was restored from an older copy, or edited; the indexer rebuilds it when it notices)"})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, st := range out {
		if err := fn(st); err != nil {
			return err
		}
	}
	return nil
}

// PutCheckpoint implements audit.CheckpointStore.
func (s *Store) PutCheckpoint(ctx context.Context, log string, size int64, signed []byte) error {
	if s.w == nil {
		return ErrReadOnly
	}
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
	// The time index lives in audit_index.
	if err := s.CatchUp(ctx); err != nil {
		return 0, err
	}
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE((SELECT MIN(seq) FROM audit_index WHERE log = ? AND time_ns >= ?),
		(SELECT size FROM audit_heads WHERE log = ?), 0)`, log, t.UnixNano(), log).Scan(&n)
	return n, err
}

// Prune implements audit.Pruner.
func (s *Store) Prune(ctx context.Context, log string, p int64) (int64, error) {
	if s.w == nil {
		return 0, ErrReadOnly
	}
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
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	// The index rows of the pruned entries go next, in the index file
	// (one transaction cannot span both files atomically in WAL mode):
	// until then queries and verify leave them out.
	return n, s.pruneIndex(ctx, log)
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
