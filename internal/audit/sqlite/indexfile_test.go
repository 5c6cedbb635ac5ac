package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// TestIndexFileObjectsOfItsOwn: whoever can write the index file (not the
// trail) adds schema objects the dispenser never creates, to hide a record
// from queries for good: a trigger deleting the record's index row as the
// indexer writes it, with one holding the cursor at 0 so that verify never
// expects the row. Verify must report the index file edited, and a query
// must not answer without the record.
func TestIndexFileObjectsOfItsOwn(t *testing.T) {
	hidden := audittest.Sample(24).AccessKeyID
	for _, c := range []struct {
		name string
		ddl  []string
	}{
		{"trigger", []string{
			`CREATE TRIGGER hide AFTER INSERT ON audit_index WHEN NEW.access_key_id = '` + hidden + `' BEGIN DELETE FROM audit_index WHERE id = NEW.id; END`,
			`CREATE TRIGGER hold AFTER UPDATE ON audit_index_cursor BEGIN UPDATE audit_index_cursor SET next_seq = 0 WHERE log = NEW.log; END`,
			`UPDATE audit_index_cursor SET next_seq = 0`,
		}},
		{"view", []string{
			`ALTER TABLE audit_index RENAME TO audit_index_all`,
			`CREATE VIEW audit_index AS SELECT * FROM audit_index_all WHERE access_key_id != '` + hidden + `'`,
			`CREATE TRIGGER ins INSTEAD OF INSERT ON audit_index BEGIN INSERT OR REPLACE INTO audit_index_all VALUES
				(NEW.id, NEW.log, NEW.seq, NEW.time_ns, NEW.outcome, NEW.org, NEW.principal, NEW.job_id, NEW.task_id, NEW.access_key_id, NEW.bucket); END`,
			`ALTER TABLE audit_index_cursor RENAME TO audit_index_cursor_real`,
			`CREATE VIEW audit_index_cursor AS SELECT log, 0 AS next_seq FROM audit_index_cursor_real`,
			`CREATE TRIGGER cur INSTEAD OF INSERT ON audit_index_cursor BEGIN SELECT 1; END`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			for _, q := range c.ddl {
				if _, err := f.s.ix.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var recs []audit.Record
			for i := 20; i < 30; i++ {
				recs = append(recs, audittest.Sample(i))
			}
			if _, err := f.s.Append(ctx, recs); err != nil {
				t.Fatal(err)
			}
			p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: hidden})
			t.Logf("%d records, %v", len(p.Records), err)
			if err == nil && len(p.Records) != 1 {
				t.Errorf("query for %s answered %d records and no error", hidden, len(p.Records))
			}
			for _, incremental := range []bool{false, true} {
				o := f.opts
				o.Incremental = incremental
				rep, err := audit.Verify(ctx, f.s, o)
				if err != nil || !rep.Tampered() || !strings.Contains(strings.Join(rep.Problems, "\n"), "the query index file holds") {
					t.Errorf("verify (incremental %v) with the index file edited: %+v, %v", incremental, rep, err)
				}
			}
			// The next start refuses the file, saying what to do.
			path := f.s.path
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(ctx, Options{Path: path}); err == nil || !strings.Contains(err.Error(), "remove it: it is rebuilt from the trail") {
				if err == nil {
					_ = s.Close()
				}
				t.Errorf("open with the index file edited: %v", err)
			}
		})
	}
}

// copyFile copies a closed database file (no -wal beside it).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// appendSamples appends Sample(i) for i in [from, from+n) without waiting
// for the indexer.
func appendSamples(t *testing.T, s *Store, from, n int) {
	t.Helper()
	var recs []audit.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// writeTrail appends samples from..from+n-1 to the trail at path, brings
// its index up to date and closes it.
func writeTrail(t *testing.T, path string, from, n int) {
	t.Helper()
	s, err := Open(context.Background(), Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	appendSamples(t, s, from, n)
	if err := s.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// besideAnotherTrails leaves at path a trail of 30 samples with, beside it,
// the index file of another trail of otherLen entries.
func besideAnotherTrails(t *testing.T, path string, otherLen int) []int {
	other := filepath.Join(t.TempDir(), "other.db")
	writeTrail(t, other, 100, otherLen)
	writeTrail(t, path, 0, 30)
	copyFile(t, IndexPath(other), IndexPath(path))
	return seq(0, 30)
}

// TestIndexFileOfAnotherTrail: the index file is derived, and nothing but
// its cursor says which trail it indexes. Put beside a trail it does not
// belong to (the index file of another trail, or the trail restored from
// an older copy while its index file was not), its rows stand at the ids
// of other entries: queries skipped those entries for good (each skip
// reported, none answered), and the cursor, not past the head, made the
// indexer go on from there. The indexer must notice and rebuild, so that
// queries answer every record and verify passes.
func TestIndexFileOfAnotherTrail(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		// setup leaves at path a closed trail of the samples want and,
		// beside it, an index file of something else.
		setup func(t *testing.T, path string) (want []int)
	}{
		{"another trail's, shorter", func(t *testing.T, path string) []int {
			return besideAnotherTrails(t, path, 10)
		}},
		{"another trail's, longer", func(t *testing.T, path string) []int {
			return besideAnotherTrails(t, path, 40)
		}},
		{"trail restored from an older copy, then grown past the index", func(t *testing.T, path string) []int {
			s, err := Open(ctx, Options{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			appendSamples(t, s, 0, 10)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			backup := filepath.Join(t.TempDir(), "backup.db")
			copyFile(t, path, backup)
			if s, err = Open(ctx, Options{Path: path}); err != nil {
				t.Fatal(err)
			}
			appendSamples(t, s, 10, 20) // lost with the restore
			if err := s.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			copyFile(t, backup, path)
			// Entries are appended after the restore before the indexer
			// runs: the trail is past the index's cursor again.
			if s, err = Open(ctx, Options{Path: path, IndexIdle: time.Hour, IndexBacklog: 1 << 40}); err != nil {
				t.Fatal(err)
			}
			appendSamples(t, s, 200, 25)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return append(seq(0, 10), seq(200, 25)...)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			want := c.setup(t, path)
			// Verify, incremental too, names the cursor (full runs name
			// every row standing at another entry's id as well).
			ro, err := Open(ctx, Options{Path: path, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			var found []string
			if err := ro.Strays(ctx, false, func(st audit.Stray) error { found = append(found, st.Problem); return nil }); err != nil ||
				len(found) == 0 || !strings.Contains(found[len(found)-1], "index file of another trail") {
				t.Fatalf("incremental strays: %q, %v", found, err)
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			var reported []string
			var mu sync.Mutex
			s, err := Open(ctx, Options{Path: path, Problems: func(p string) { mu.Lock(); reported = append(reported, p); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			for _, i := range want {
				r := audittest.Sample(i)
				p, err := s.Query(ctx, audit.Filter{TaskID: r.TaskID, Org: r.Org})
				if err != nil || len(p.Records) != 1 || p.Records[0].RequestID != r.RequestID {
					t.Fatalf("query for sample %d: %+v, %v", i, p.Records, err)
				}
			}
			p, err := s.Query(ctx, audit.Filter{Limit: 1000})
			if err != nil || len(p.Records) != len(want) {
				t.Fatalf("query for every record: %d records, %v; want %d", len(p.Records), err, len(want))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reported) != 1 || !strings.Contains(reported[0], "rebuilt from the trail") {
				t.Fatalf("reports %q, want one saying the index is rebuilt", reported)
			}
			var ghosts []string
			if err := s.Strays(ctx, true, func(st audit.Stray) error { ghosts = append(ghosts, st.Problem); return nil }); err != nil || len(ghosts) > 0 {
				t.Fatalf("after the rebuild: %q, %v", ghosts, err)
			}
		})
	}
}

func seq(from, n int) []int {
	var out []int
	for i := from; i < from+n; i++ {
		out = append(out, i)
	}
	return out
}

// TestIndexerFailureIsReported: an indexer that cannot index (here: an
// object slipped into the index file while the dispenser runs) must say
// so through the Problems hook when it first fails, not only to the next
// query, and queries fail rather than answer from an index that may lack
// records.
func TestIndexerFailureIsReported(t *testing.T) {
	ctx := context.Background()
	reports := make(chan string, 100)
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "audit.db"), IndexIdle: time.Millisecond, IndexBacklog: 1,
		Problems: func(p string) {
			select {
			case reports <- p:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	appendSamples(t, s, 0, 10)
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ix.ExecContext(ctx, `CREATE TRIGGER hide AFTER INSERT ON audit_index BEGIN DELETE FROM audit_index WHERE id = NEW.id; END`); err != nil {
		t.Fatal(err)
	}
	appendSamples(t, s, 10, 10)
	select {
	case p := <-reports:
		if !strings.Contains(p, "the query indexer failed") || !strings.Contains(p, "trigger hide") {
			t.Fatalf("report %q", p)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		t.Fatal("the indexer failed without a report")
	}
	if _, err := s.Query(ctx, audit.Filter{}); err == nil || !strings.Contains(err.Error(), "cannot be trusted") {
		t.Fatalf("query with the index file edited: %v", err)
	}
}

// TestQueryIndexesComeBack: a bulk build drops the query indexes and
// creates them once the rows are in; one that fails in between (its 30 s
// step deadline, a full disk) left them dropped until the next start, and
// every query walked the whole table. The next index step creates them.
func TestQueryIndexesComeBack(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	appendSamples(t, s, 0, 10)
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ix.ExecContext(ctx, dropIndexes); err != nil { // as an interrupted bulk build leaves them
		t.Fatal(err)
	}
	appendSamples(t, s, 10, 1)
	if _, err := s.Query(ctx, audit.Filter{AccessKeyID: audittest.Sample(4).AccessKeyID}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.ix.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE 'audit_index_%'`).Scan(&n); err != nil || n != 7 {
		t.Fatalf("%d query indexes after the next step (%v), want 7", n, err)
	}
}

// TestIncrementalVerifyChecksTheTailsIndexRows: --incremental re-checks
// the index rows of the entries after the anchored checkpoint as a full
// run does (and, as documented, leaves those of anchored entries to it).
func TestIncrementalVerifyChecksTheTailsIndexRows(t *testing.T) {
	for _, c := range []struct {
		name, tamper, want string
		anchored           bool // the tampered entry is anchored: full runs only
	}{
		{"tail row deleted", `DELETE FROM audit_index WHERE seq = 22`, "entry 22 is missing from audit_index", false},
		{"tail row edited", `UPDATE audit_index SET access_key_id = 'ASIAOTHER' WHERE seq = 24`, "entry 24: access_key_id of audit_index differ", false},
		{"anchored row deleted", `DELETE FROM audit_index WHERE seq = 4`, "entry 4 is missing from audit_index", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t) // anchored at 20
			f.append(t, 20, 5)
			f.exec(t, c.tamper)
			f.opts.Incremental = true
			if r := f.verify(t); strings.Contains(problems(r), c.want) == c.anchored {
				t.Errorf("incremental: problems %q (want %q: %v)", r.Problems, c.want, !c.anchored)
			}
			f.opts.Incremental = false
			if r := f.verify(t); !strings.Contains(problems(r), c.want) {
				t.Errorf("full: problems %q, want %q", r.Problems, c.want)
			}
		})
	}
}

// TestOlderCopyOfItsOwnIndexFile: the trail's own index file put back
// from an older copy (or rolled back by a crash, its commits not synced)
// is behind but true: the indexer goes on from its cursor, with nothing to
// report and nothing rebuilt.
func TestOlderCopyOfItsOwnIndexFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	writeTrail(t, path, 0, 10)
	old := filepath.Join(t.TempDir(), "index")
	copyFile(t, IndexPath(path), old)
	writeTrail(t, path, 10, 20)
	copyFile(t, old, IndexPath(path))
	var reported []string
	var mu sync.Mutex
	s, err := Open(ctx, Options{Path: path, Problems: func(p string) { mu.Lock(); reported = append(reported, p); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Strays(ctx, true, func(st audit.Stray) error { t.Errorf("before catching up: %s", st.Problem); return nil }); err != nil {
		t.Fatal(err)
	}
	p, err := s.Query(ctx, audit.Filter{Limit: 100})
	if err != nil || len(p.Records) != 30 {
		t.Fatalf("query: %d records, %v; want 30", len(p.Records), err)
	}
	var n int
	if err := s.ix.QueryRowContext(ctx, `SELECT count(*) FROM audit_index`).Scan(&n); err != nil || n != 30 {
		t.Fatalf("%d index rows (%v), want 30", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) > 0 {
		t.Fatalf("reports %q", reported)
	}
}

// TestReadOnlyWithAnEmptyIndexFile: an index file holding no table yet (a
// crash between its creation and its first commit; the next start builds
// it) verifies as a missing one does, with no index to check, instead of
// failing verify with "no such table"; and it is left as it was.
func TestReadOnlyWithAnEmptyIndexFile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	path := f.s.path
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(IndexPath(path) + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(IndexPath(path), 0); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, Options{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ro.Close() }()
	rep, err := audit.Verify(ctx, ro, f.opts)
	if err != nil || rep.Tampered() || len(rep.Logs) != 1 || rep.Logs[0].Size != 20 {
		t.Fatalf("verify with an empty index file: %+v, %v", rep, err)
	}
	if fi, err := os.Stat(IndexPath(path)); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty index file after verify: %v, %v", fi, err)
	}
}

// TestIndexFileReplacedWhileRunning: the indexer holds the index file
// open, while the readers attach it by name whenever they make a
// connection. An index file renamed over (or removed) while the dispenser
// runs split them: the indexer went on indexing the file it held, queries
// read the other (an older copy here, through the WAL the indexer writes
// for the file it holds: right or wrong by chance) or failed with "unable
// to open database file". Queries must fail, saying why, until a restart.
func TestIndexFileReplacedWhileRunning(t *testing.T) {
	for _, c := range []struct {
		name  string
		swap  func(t *testing.T, path, older string)
		wants string
	}{
		{"replaced by an older copy", func(t *testing.T, path, older string) {
			if err := os.Rename(older, IndexPath(path)); err != nil {
				t.Fatal(err)
			}
		}, "replaced"},
		{"removed", func(t *testing.T, path, _ string) {
			if err := os.Remove(IndexPath(path)); err != nil {
				t.Fatal(err)
			}
		}, "removed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "audit.db")
			s, err := Open(ctx, Options{Path: path, IndexIdle: time.Hour, IndexBacklog: 1 << 40})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			appendSamples(t, s, 0, 10)
			if err := s.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			older := filepath.Join(filepath.Dir(path), "older")
			raw, err := sql.Open("sqlite", "file:"+IndexPath(path))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := raw.Exec(`VACUUM INTO ?`, older); err != nil {
				t.Fatal(err)
			}
			_ = raw.Close()
			appendSamples(t, s, 10, 10)
			c.swap(t, path, older)
			s.r.SetMaxIdleConns(0) // every query attaches the index file anew
			r := audittest.Sample(15)
			p, err := s.Query(ctx, audit.Filter{TaskID: r.TaskID})
			// Whatever the readers make of the file now under the name (the
			// older copy read through the WAL the indexer writes for the
			// other), the answer cannot be trusted.
			if err == nil || !strings.Contains(err.Error(), c.wants) || !strings.Contains(err.Error(), "restart") {
				t.Fatalf("query after the swap: %d records, %v; want an error saying the file was %s", len(p.Records), err, c.wants)
			}
		})
	}
}

// TestIndexCursorMovedBack: a cursor moved back with the hash of the entry
// before it is a true cursor that is behind: the indexer indexes those
// entries again in place (no second row, nothing reported). Moved back
// without it, it is not the one the indexer wrote: reported and rebuilt.
// Either way queries answer each record once.
func TestIndexCursorMovedBack(t *testing.T) {
	for _, c := range []struct {
		name    string
		edit    string
		reports int
	}{
		{"with the entry's hash", `UPDATE audit_index_cursor SET next_seq = 5, hash = (SELECT hash FROM trail.audit_records WHERE log = 'main' AND seq = 4)`, 0},
		{"hash left as it was", `UPDATE audit_index_cursor SET next_seq = 5`, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			reported := f.reopen(t)
			f.exec(t, c.edit)
			f.append(t, 20, 5)
			p, err := f.s.Query(ctx, audit.Filter{Limit: 100})
			if err != nil || len(p.Records) != 25 {
				t.Fatalf("query: %d records, %v; want 25", len(p.Records), err)
			}
			var n int
			if err := f.s.ix.QueryRowContext(ctx, `SELECT count(*) FROM audit_index`).Scan(&n); err != nil || n != 25 {
				t.Fatalf("%d index rows (%v), want 25", n, err)
			}
			if r := reported(); len(r) != c.reports {
				t.Fatalf("reports %q, want %d", r, c.reports)
			}
			if r := f.verify(t); len(r.Problems) > 0 {
				t.Fatalf("verify: %q", r.Problems)
			}
		})
	}
}

// TestIndexRolledBackBelowThePruneFloor: index commits are not synced, so
// a power loss right after a prune can leave the index's cursor at an
// entry the prune (synced) deleted. That cursor is behind, not another
// trail's: nothing to report, and the indexer goes on from it.
func TestIndexRolledBackBelowThePruneFloor(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var h2 []byte
	if err := f.s.r.QueryRowContext(ctx, `SELECT hash FROM audit_records WHERE log = 'main' AND seq = 2`).Scan(&h2); err != nil {
		t.Fatal(err)
	}
	keep := time.Hour
	now := func() time.Time { return audittest.T0.Add(keep + 10*time.Second) } // cutoff: entry 10
	rt := &audit.Retention{Source: f.s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: f.cp.Signer, Keep: keep, Now: now}
	if n, err := rt.Prune(ctx); err != nil || n != 9 {
		t.Fatalf("Prune = %d, %v; want 9", n, err)
	}
	f.opts.Retention, f.opts.Now = keep, now
	f.exec(t, `DELETE FROM audit_index WHERE seq >= 3`)
	f.exec(t, `UPDATE audit_index_cursor SET next_seq = 3, hash = ?`, h2)
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("verify of the rolled-back index: %q", r.Problems)
	}
	reported := f.reopen(t)
	p, err := f.s.Query(ctx, audit.Filter{Limit: 100})
	if err != nil || len(p.Records) != 11 {
		t.Fatalf("query: %d records, %v; want the 11 kept", len(p.Records), err)
	}
	if r := reported(); len(r) > 0 {
		t.Fatalf("reports %q", r)
	}
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("verify after catching up: %q", r.Problems)
	}
}
