package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	sqlite "modernc.org/sqlite"

	"github.com/vtk/dispenser/internal/audit/auditsql"
)

// The query index (audit_index, its seven indexes and the indexer's cursor)
// lives in a database file of its own beside the trail, IndexPath(path).
// SQLite lets one connection write a file at a time, so in the trail's file
// every index transaction held up the appends behind it; in its own file
// the indexer writes while the writer commits. The index is derived data:
// its commits skip the fsync (synchronous=NORMAL: a crash may roll back the
// last index transactions, never tear one, and the indexer's cursor rolls
// back with its rows), and a missing index file is rebuilt from the trail.

// IndexPath is the file holding the query index of the trail at path.
func IndexPath(path string) string { return path + ".index" }

// indexLayout is the index file's PRAGMA user_version. A change to the
// index tables bumps it; a file of an older layout is dropped and rebuilt.
// The text of indexTables and indexIndexes is the layout: the schema a
// file holds is compared with it (see checkIndexSchema), so any change to
// it, even of a comment inside a CREATE, bumps indexLayout.
var indexLayout = 2 // a variable only so that tests can open a file of another layout

// indexTables are the index file's tables, in schema (empty for the file
// itself, "idx." for a stand-in attached to a read-only store).
func indexTables(schema string) string {
	return `CREATE TABLE IF NOT EXISTS ` + schema + `audit_index (
  id            INTEGER PRIMARY KEY, -- the entry's audit_records id
  log           TEXT    NOT NULL,
  seq           INTEGER NOT NULL,
  time_ns       INTEGER NOT NULL,
  outcome       TEXT    NOT NULL,
  org           TEXT    NOT NULL,
  principal     TEXT    NOT NULL,
  job_id        TEXT    NOT NULL,
  task_id       TEXT    NOT NULL,
  access_key_id TEXT    NOT NULL,
  bucket        TEXT    NOT NULL
);
-- Per log, the seq below which every entry is indexed, and the chain
-- hash of the entry before it (which trail, as of when); advanced in the
-- same transaction as the rows.
CREATE TABLE IF NOT EXISTS ` + schema + `audit_index_cursor (
  log      TEXT PRIMARY KEY,
  next_seq INTEGER NOT NULL,
  hash     BLOB -- of entry next_seq - 1; NULL at 0
);
`
}

// indexIndexes are the query indexes: one led by each filter column, then
// time (outcome and time ranges walk the time index).
const indexIndexes = `
CREATE INDEX IF NOT EXISTS audit_index_time      ON audit_index (time_ns, log, seq);
CREATE INDEX IF NOT EXISTS audit_index_org       ON audit_index (org, time_ns);
CREATE INDEX IF NOT EXISTS audit_index_principal ON audit_index (principal, time_ns);
CREATE INDEX IF NOT EXISTS audit_index_job       ON audit_index (job_id, time_ns);
CREATE INDEX IF NOT EXISTS audit_index_task      ON audit_index (task_id, time_ns);
CREATE INDEX IF NOT EXISTS audit_index_key       ON audit_index (access_key_id, time_ns);
CREATE INDEX IF NOT EXISTS audit_index_bucket    ON audit_index (bucket, time_ns);
`

// dropIndexes drops the query indexes (for a bulk build).
const dropIndexes = `
DROP INDEX IF EXISTS audit_index_time; DROP INDEX IF EXISTS audit_index_org; DROP INDEX IF EXISTS audit_index_principal;
DROP INDEX IF EXISTS audit_index_job; DROP INDEX IF EXISTS audit_index_task; DROP INDEX IF EXISTS audit_index_key;
DROP INDEX IF EXISTS audit_index_bucket;
`

// indexChunk bounds one index transaction. The indexer no longer holds up
// appends, so it works in large steps: the access-key index takes its rows
// in random places, and a step dirties each of its pages once however many
// rows land there (about 17 µs per entry at 4,096 per step against 43 µs at
// 512, on a 100,000-entry index).
const indexChunk = 4096

// attachment is a database a connection attaches as soon as it is made.
type attachment struct {
	name string // the schema name
	uri  string // "file:" URI, or "" for an empty in-memory stand-in
	ddl  string // run after attaching (the stand-in's tables)
}

// attaching makes connections that attach further databases, so every
// connection database/sql opens (also one it replaces) sees them.
type attaching struct {
	driver.Connector
	dbs []attachment
}

func (c attaching) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("audit sqlite: the driver cannot execute statements on a connection")
	}
	for _, db := range c.dbs {
		src := db.uri
		if src == "" {
			src = ":memory:"
		}
		// The file name is bound, never spliced into the SQL.
		if _, err := ex.ExecContext(ctx, `ATTACH DATABASE ? AS `+db.name, []driver.NamedValue{{Ordinal: 1, Value: src}}); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("attach %s: %w", db.name, err)
		}
		if db.ddl != "" {
			if _, err := ex.ExecContext(ctx, db.ddl, nil); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("attach %s: %w", db.name, err)
			}
		}
	}
	return conn, nil
}

// openDB opens dsn through the sqlite driver with dbs attached to every
// connection.
func openDB(dsn string, dbs ...attachment) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(attaching{Connector: c, dbs: dbs}), nil
}

// indexDSN opens the index file for the indexer: WAL, no fsync per commit,
// IMMEDIATE transactions (an indexer in another process, a CLI query's,
// waits instead of failing; the trail is attached read-only, so they take
// no lock the writer needs), a page cache that holds the pages a large
// step touches, and a WAL cut back to 64 MiB once checkpointed (a bulk
// build writes each query index through it in one transaction).
func indexDSN(path string) string {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)", "cache_size(-16384)", "journal_size_limit(67108864)"} {
		q.Add("_pragma", p)
	}
	return uri(path, q, "_txlock", "immediate")
}

// readOnlyURI names path for ATTACH, read-only.
func readOnlyURI(path string) string {
	return uri(path, url.Values{"mode": {"ro"}})
}

// openIndex opens the indexer's connection: the index file (created when
// missing) with the trail attached read-only as "trail", so the indexer can
// read entries and never write them. It then removes the index rows of
// entries a prune deleted (left behind when a prune was interrupted between
// its two transactions).
func (s *Store) openIndex(ctx context.Context) error {
	ix, err := openDB(indexDSN(IndexPath(s.path)), attachment{name: "trail", uri: readOnlyURI(s.path)})
	if err != nil {
		return err
	}
	ix.SetMaxOpenConns(1)
	ix.SetMaxIdleConns(1)
	ix.SetConnMaxLifetime(0)
	s.ix = ix
	var v int
	if err := ix.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("the query index %s is unreadable (remove it: it is rebuilt from the trail): %w", IndexPath(s.path), err)
	}
	if v > indexLayout {
		return fmt.Errorf("the query index %s has layout %d, newer than this dispenser's %d (remove it: it is rebuilt from the trail)", IndexPath(s.path), v, indexLayout)
	}
	if v == indexLayout {
		// Before the DDL, which an object put in the place of one of this
		// code's (a view named audit_index) would fail with less to say.
		if _, err := s.checkIndexSchema(ctx, ix); err != nil {
			return err
		}
	}
	ddl := indexTables("") + indexIndexes + fmt.Sprintf("PRAGMA user_version = %d;", indexLayout)
	if v != 0 && v < indexLayout {
		// An older layout is not migrated: the index is derived, so it is
		// dropped and rebuilt from the trail.
		ddl = `DROP TABLE IF EXISTS audit_index; DROP TABLE IF EXISTS audit_index_cursor;` + ddl
	}
	if _, err := ix.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("the query index %s: %w", IndexPath(s.path), err)
	}
	if _, err := s.checkIndexSchema(ctx, ix); err != nil {
		return err
	}
	if s.ixFile, err = os.Stat(IndexPath(s.path)); err != nil {
		return fmt.Errorf("the query index %s: %w", IndexPath(s.path), err)
	}
	// Every step (and so every query, through CatchUp) runs these two:
	// parsed once, not per step.
	s.ixStmts = map[string]*sql.Stmt{}
	for _, q := range []string{selectCursors, selectSchema("main")} {
		st, err := ix.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("the query index %s: %w", IndexPath(s.path), err)
		}
		s.ixStmts[q] = st
	}
	logs, err := s.prunedLogs(ctx)
	if err != nil {
		return err
	}
	for _, l := range logs {
		if err := s.pruneIndex(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

// indexSchema is the index file's schema as this code creates it: for
// each object ("type name") of sqlite_schema, its table and SQL (stored
// without IF NOT EXISTS and without the schema name).
var indexSchema = sync.OnceValues(func() (map[string]string, error) {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(indexTables("") + indexIndexes); err != nil {
		return nil, err
	}
	return schemaObjects(context.Background(), db, "main")
})

func selectSchema(schema string) string {
	return `SELECT type, name, tbl_name, COALESCE(sql, '') FROM ` + schema + `.sqlite_schema`
}

// schemaObjects reads the sqlite_schema of schema as indexSchema holds it.
func schemaObjects(ctx context.Context, q queryer, schema string) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, selectSchema(schema))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var typ, name, tbl, text string
		if err := rows.Scan(&typ, &name, &tbl, &text); err != nil {
			return nil, err
		}
		out[typ+" "+name] = tbl + "\n" + text
	}
	return out, rows.Err()
}

// indexSchemaProblems names every object of the index file (schema "main"
// for the indexer, "idx" for the readers) that this code does not create
// as it stands: a trigger, a view, a table or index of its own or one
// redefined. Whoever can write the index file could otherwise keep rows
// out of it (a trigger deleting the rows of one access key as the indexer
// writes them, another holding the cursor back so that verify expects
// none), which the rows alone never show. A query index left out (a bulk
// build interrupted; the next start creates it) is no problem.
func indexSchemaProblems(ctx context.Context, q queryer, schema string) ([]string, error) {
	p, _, err := indexSchemaCheck(ctx, q, schema)
	return p, err
}

// indexSchemaCheck is indexSchemaProblems, and whether a query index is
// missing.
func indexSchemaCheck(ctx context.Context, q queryer, schema string) (_ []string, missing bool, _ error) {
	want, err := indexSchema()
	if err != nil {
		return nil, false, err
	}
	got, err := schemaObjects(ctx, q, schema)
	if err != nil {
		return nil, false, err
	}
	var out []string
	for obj, def := range got {
		switch w, ok := want[obj]; {
		case !ok:
			out = append(out, fmt.Sprintf("the query index file holds %s, which no dispenser creates (edited: it can hide or alter index rows)", obj))
		case def != w:
			out = append(out, fmt.Sprintf("the query index file holds %s defined otherwise than a dispenser defines it (edited: it can hide or alter index rows)", obj))
		}
	}
	for obj := range want {
		if _, ok := got[obj]; !ok {
			if strings.HasPrefix(obj, "table ") {
				out = append(out, fmt.Sprintf("the query index file lacks %s", obj))
			}
			missing = true
		}
	}
	slices.Sort(out)
	return out, missing, nil
}

// checkIndexSchema fails when indexSchemaProblems finds any: the index
// cannot be trusted to hold every entry, so queries fail instead of
// answering without some. It reports whether an object of the schema (a
// query index a bulk build dropped) is missing.
func (s *Store) checkIndexSchema(ctx context.Context, q queryer) (missing bool, err error) {
	p, missing, err := indexSchemaCheck(ctx, q, "main")
	if err != nil {
		return false, fmt.Errorf("the query index %s: %w", IndexPath(s.path), err)
	}
	if len(p) > 0 {
		return false, fmt.Errorf("the query index %s cannot be trusted: %s (remove it: it is rebuilt from the trail; run dispenser audit verify first)", IndexPath(s.path), strings.Join(p, "; "))
	}
	return missing, nil
}

// checkIndexFile makes sure the file under the index file's name is the
// one the indexer holds open. The readers attach it by name whenever they
// make a connection: with the file renamed over or removed while the
// store runs, they would read another file (through the WAL the indexer
// writes for its own) or none, while the indexer went on with its own.
func (s *Store) checkIndexFile() error {
	p := IndexPath(s.path)
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("the query index %s was removed while the dispenser ran: restart it (the index is rebuilt from the trail)", p)
	case err != nil:
		return fmt.Errorf("the query index %s: %w", p, err)
	case !os.SameFile(fi, s.ixFile):
		return fmt.Errorf("the query index %s was replaced while the dispenser ran: restart it (an index file not of this trail is rebuilt from the trail)", p)
	}
	return nil
}

// readerAttachment attaches the index file to the readers as "idx":
// read-only, and an empty stand-in when a read-only store finds no index
// file, or one holding nothing yet (a copy of the trail alone still
// verifies; there is then no index to check, and the next start builds it).
func readerAttachment(ctx context.Context, path string, readOnly bool) (attachment, error) {
	p := IndexPath(path)
	standIn := attachment{name: "idx", ddl: indexTables("idx.")}
	if readOnly {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return standIn, nil
		} else if err != nil {
			return attachment{}, err
		}
		if indexFileEmpty(ctx, p) {
			return standIn, nil
		}
	}
	return attachment{name: "idx", uri: readOnlyURI(p)}, nil
}

// indexFileEmpty reports whether the index file at p, read read-only,
// holds no schema object (created, and a crash came before its first
// commit). A file it cannot read is not empty: checkIndexLayout says why.
func indexFileEmpty(ctx context.Context, p string) bool {
	db, err := sql.Open("sqlite", readOnlyURI(p))
	if err != nil {
		return false
	}
	defer db.Close()
	var n int
	return db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&n) == nil && n == 0
}

// checkIndexLayout makes sure the readers' index is one this code reads.
func (s *Store) checkIndexLayout(ctx context.Context) error {
	var v int
	if err := s.r.QueryRowContext(ctx, `PRAGMA idx.user_version`).Scan(&v); err != nil {
		return fmt.Errorf("the query index %s is unreadable: %w", IndexPath(s.path), err)
	}
	if v != indexLayout && v != 0 {
		return fmt.Errorf("the query index %s has layout %d; this dispenser reads %d (a dispenser of this version rebuilds it when it starts, or when dispenser audit query runs)", IndexPath(s.path), v, indexLayout)
	}
	return nil
}

// readTx begins a read transaction whose view of the index is no newer
// than its view of the trail. Each attached file gets its snapshot when a
// transaction first reads it, and a statement reads the trail (the main
// schema) first; reading the index alone first means every index row the
// transaction sees stands for an entry its later trail snapshot holds,
// so an entry committed and indexed in between never looks like a ghost.
func (s *Store) readTx(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM idx.audit_index_cursor`).Scan(&n); err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	return tx, nil
}

var (
	// indexSQL indexes the entries of one log with lo <= seq < hi. A row
	// already at an entry's id (one inserted ahead of the indexer) is
	// replaced, so it cannot block or spoof the entry's own.
	indexSQL = `INSERT OR REPLACE INTO audit_index (id, log, seq, ` + strings.Join(auditsql.Columns, ", ") + `)
		SELECT id, log, seq, ` + strings.Join(auditsql.Columns, ", ") + ` FROM trail.audit_records
		WHERE log = ? AND seq >= ? AND seq < ? ORDER BY seq`
	// selectCursors reads, for every log with a head, how far it is
	// indexed, how far its head reaches, and the chain hash the cursor
	// holds and the trail's of the entry before it.
	selectCursors = `SELECT h.log, h.size, COALESCE(c.next_seq, 0), c.hash,
		(SELECT r.hash FROM trail.audit_records r WHERE r.log = h.log AND r.seq = c.next_seq - 1),
		COALESCE(c.next_seq - 1 < (SELECT p.before - 1 FROM trail.audit_prune p WHERE p.log = h.log), FALSE)
		FROM trail.audit_heads h LEFT JOIN audit_index_cursor c ON c.log = h.log ORDER BY h.log`
	upsertCursor = `INSERT INTO audit_index_cursor (log, next_seq, hash)
		VALUES (?1, ?2, (SELECT hash FROM trail.audit_records WHERE log = ?1 AND seq = ?2 - 1))
		ON CONFLICT (log) DO UPDATE SET next_seq = excluded.next_seq, hash = excluded.hash`
	// pruneIndexSQL deletes the index rows of a log's pruned entries; the
	// kept boundary entry's id bounds them so the delete walks the rowid
	// range.
	pruneIndexSQL = `DELETE FROM audit_index
		WHERE id <= COALESCE((SELECT r.id FROM trail.audit_records r WHERE r.log = ?1
			AND r.seq = (SELECT before - 1 FROM trail.audit_prune WHERE log = ?1)), 9223372036854775807)
		AND log = ?1 AND seq < (SELECT before - 1 FROM trail.audit_prune WHERE log = ?1)`
)

// prunedLogs lists the logs with a prune floor.
func (s *Store) prunedLogs(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, s.ix, `SELECT log FROM trail.audit_prune ORDER BY log`)
}

// pruneIndex deletes the index rows of log's pruned entries.
func (s *Store) pruneIndex(ctx context.Context, log string) error {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	if _, err := s.ix.ExecContext(ctx, pruneIndexSQL, log); err != nil {
		return fmt.Errorf("audit sqlite: index rows of pruned entries: %w", err)
	}
	return nil
}

// indexLoop keeps audit_index close behind the log: it indexes when
// appends pause and when the backlog passes IndexBacklog (so a query never
// has much to catch up). It runs beside the writer, never in its way.
func (s *Store) indexLoop() {
	defer close(s.idx.done)
	tick := s.idx.idle / 2
	if tick > 50*time.Millisecond {
		tick = 50 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	failing := false // since the last report: one report per run of failures
	for {
		select {
		case <-s.idx.stop:
			return
		case <-t.C:
		}
		for {
			behind := s.idx.appended.Load() - s.idx.indexed.Load()
			idle := time.Since(time.Unix(0, s.idx.lastAppend.Load())) >= s.idx.idle
			if behind <= 0 || (!idle && behind < s.idx.backlog) {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			done, err := s.indexStep(ctx)
			cancel()
			if err != nil && !failing {
				// Retried on every tick, and every query fails with it
				// meanwhile; told once, so that it is seen without a query.
				s.report(fmt.Sprintf("the query indexer failed (retrying; queries fail until it succeeds): %v", err))
			}
			if failing = err != nil; failing || done {
				break
			}
			select {
			case <-s.idx.stop:
				return
			default:
			}
		}
	}
}

// CatchUp brings the query index up to date with every committed entry.
// Query calls it; it is exported for tools and tests.
func (s *Store) CatchUp(ctx context.Context) error {
	for {
		done, err := s.indexStep(ctx)
		if err != nil || done {
			return err
		}
	}
}

// indexStep indexes up to indexChunk entries past the indexer's cursors,
// in one transaction that also advances them, and reports whether every
// log was then indexed up to its head. Only entries a head covers are
// indexed: a row inserted past a head stays out of queries (verify
// reports it). An index far behind its trail is built in bulk.
func (s *Store) indexStep(ctx context.Context) (bool, error) {
	if s.ix == nil {
		return true, nil // read-only: the index stays as it is
	}
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	// Every record counted here was committed before the head is read.
	appended := s.idx.appended.Load()
	done, bulk, err := s.step(ctx, indexChunk, true)
	if bulk {
		done, err = true, s.bulkIndex(ctx)
	}
	if err != nil || !done {
		return false, err
	}
	s.idx.indexed.Store(appended)
	return true, nil
}

// bulkMin is the backlog from which an index holding fewer entries than
// its backlog is built in bulk (see bulkIndex); a variable for tests.
var bulkMin int64 = 100_000

// bulkChunk bounds one transaction of a bulk build (rows only).
const bulkChunk = 65536

// bulkIndex builds a mostly empty index in bulk: the query indexes are
// dropped, the rows go in in entry order (sequential writes), and each
// query index is then made by one sort (CREATE INDEX). Entry by entry, the
// access-key index takes each row at a random place, a page read and
// written per entry once the index outgrows the cache: here a rebuild of
// 1,000,000 entries (after an upgrade, a removed index file, an older
// layout) takes 7 s in bulk against 36 s. A crash or an error in between
// leaves rows without their query indexes, which the next Open or index
// step creates.
func (s *Store) bulkIndex(ctx context.Context) error {
	if _, err := s.ix.ExecContext(ctx, dropIndexes); err != nil {
		return fmt.Errorf("audit sqlite: index: %w", err)
	}
	for {
		done, _, err := s.step(ctx, bulkChunk, false)
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	if _, err := s.ix.ExecContext(ctx, indexIndexes); err != nil {
		return fmt.Errorf("audit sqlite: index: %w", err)
	}
	return nil
}

// step indexes up to chunk entries in one transaction (see indexStep). With
// mayBulk it writes nothing and reports bulk when the backlog calls for
// bulkIndex: at least bulkMin entries, and more than the index holds.
func (s *Store) step(ctx context.Context, chunk int64, mayBulk bool) (done, bulk bool, err error) {
	tx, err := s.ix.BeginTx(ctx, nil)
	if err != nil {
		return false, false, fmt.Errorf("audit sqlite: index: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Checked in the transaction, which holds the file's write lock: the
	// schema stays as checked while the rows go in.
	q := txQueryer{tx: tx, prepared: func(q string) (*sql.Stmt, bool) { st, ok := s.ixStmts[q]; return st, ok }}
	missing, err := s.checkIndexSchema(ctx, q)
	if err != nil {
		return false, false, fmt.Errorf("audit sqlite: %w", err)
	}
	if err := s.checkIndexFile(); err != nil {
		return false, false, fmt.Errorf("audit sqlite: %w", err)
	}
	cursors, err := readCursors(ctx, q)
	if err != nil {
		return false, false, fmt.Errorf("audit sqlite: index: %w", err)
	}
	if p := notThisTrail(cursors); p != "" {
		// The rows stand at the ids of other entries (or of none): they
		// all go, and the index is built again from the first entry.
		s.report(p + "; the query index is rebuilt from the trail")
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_index; DELETE FROM audit_index_cursor;`); err != nil {
			return false, false, fmt.Errorf("audit sqlite: index: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return false, false, fmt.Errorf("audit sqlite: index: %w", err)
		}
		return false, false, nil
	}
	if mayBulk {
		var backlog, indexed int64
		for _, c := range cursors {
			backlog, indexed = backlog+c.size-c.next, indexed+c.next
		}
		if backlog >= bulkMin && backlog > indexed {
			return false, true, nil
		}
	}
	budget, changed := chunk, false
	if missing && mayBulk {
		// A bulk build that failed between dropping the query indexes and
		// creating them again (its step deadline, a full disk) left them
		// out: every query would walk the whole table.
		if _, err := tx.ExecContext(ctx, indexIndexes); err != nil {
			return false, false, fmt.Errorf("audit sqlite: index: %w", err)
		}
		changed = true
	}
	for _, c := range cursors {
		from := c.next
		if end := min(c.size, c.next+budget); end > c.next {
			if _, err := tx.ExecContext(ctx, indexSQL, c.log, c.next, end); err != nil {
				return false, false, fmt.Errorf("audit sqlite: index: %w", err)
			}
			budget -= end - c.next
			c.next = end
		}
		if c.next != from {
			if _, err := tx.ExecContext(ctx, upsertCursor, c.log, c.next); err != nil {
				return false, false, fmt.Errorf("audit sqlite: index: %w", err)
			}
			changed = true
		}
	}
	if changed {
		if err := tx.Commit(); err != nil {
			return false, false, fmt.Errorf("audit sqlite: index: %w", err)
		}
	}
	for _, c := range cursors {
		if c.next < c.size {
			return false, false, nil
		}
	}
	return true, false, nil
}

// cursor is how far one log is indexed.
type cursor struct {
	log        string
	size, next int64
	hash       []byte // the cursor's hash of entry next-1
	entry      []byte // the trail's
	pruned     bool   // entry next-1 is below the prune floor
}

// notThisTrail tells why the index is not the trail's up to its cursors,
// or "". A cursor past its log's head, or one whose hash is not that of
// the entry before it, was written for another trail: the index file of
// another, or of this one before it was restored from an older copy (or
// it was edited). Its rows then stand at the ids of other entries, which
// queries would skip, and going on from the cursor would never fix them.
func notThisTrail(cursors []*cursor) string {
	for _, c := range cursors {
		switch {
		case c.next > c.size:
			return fmt.Sprintf("the query index cursor of log %s was at %d, past the log's %d entries (the index file of another trail or of this one before it was restored from an older copy, or edited)", c.log, c.next, c.size)
		case !bytes.Equal(c.hash, c.entry) && !(c.entry == nil && c.pruned):
			// (A cursor at a pruned entry is behind, not another trail's:
			// index commits are not synced, so a power loss right after a
			// prune, which is, can leave it there.)
			return fmt.Sprintf("the query index cursor of log %s was at %d, but entry %d is not the one it indexed (the index file of another trail or of this one before it was restored from an older copy, or edited)", c.log, c.next, c.next-1)
		}
	}
	return ""
}

func readCursors(ctx context.Context, q queryer) ([]*cursor, error) {
	rows, err := q.QueryContext(ctx, selectCursors)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*cursor
	for rows.Next() {
		c := &cursor{}
		if err := rows.Scan(&c.log, &c.size, &c.next, &c.hash, &c.entry, &c.pruned); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
