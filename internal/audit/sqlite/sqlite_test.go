package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audit.Trail { return openTemp(t) })
}

func TestReopenKeepsChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err = Open(ctx, Options{Path: path}) // migrations are idempotent
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	es, err := s.Append(ctx, []audit.Record{audittest.Sample(1)})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := s.Body(ctx, "main", 0)
	if es[0].Seq != 1 || es[0].PrevHash != audit.ChainHash(body) {
		t.Fatalf("after reopen: seq %d, chained=%v", es[0].Seq, es[0].PrevHash == audit.ChainHash(body))
	}
}

func TestAppendOnlyTriggers(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE audit_records SET org = 'x'`, `DELETE FROM audit_records`, `DELETE FROM audit_hashes`} {
		if _, err := s.w.ExecContext(ctx, q); err == nil {
			t.Errorf("%s succeeded", q)
		}
	}
}

// TestIndexRebuiltFromTheLog: an emptied query index, and a missing index
// file (a trail upgraded from the schema that kept the index in its own
// file, restored without it, or whose index file was removed), is filled
// from the log before a query answers.
func TestIndexRebuiltFromTheLog(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var recs []audit.Record
	for i := 0; i < indexChunk+300; i++ { // more than one index step
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, s *Store) {
		t.Helper()
		want := recs[indexChunk+100]
		p, err := s.Query(ctx, audit.Filter{AccessKeyID: want.AccessKeyID})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Records) == 0 || p.Records[0].AccessKeyID != want.AccessKeyID {
			t.Fatalf("query after the index was lost: %+v", p.Records)
		}
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM audit_index`).Scan(&n); err != nil || n != len(recs) {
			t.Fatalf("index rows = %d, %v; want %d", n, err, len(recs))
		}
	}
	t.Run("emptied", func(t *testing.T) {
		for _, q := range []string{`DELETE FROM audit_index`, `DELETE FROM audit_index_cursor`} {
			if _, err := s.ix.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		check(t, s)
	})
	t.Run("file removed", func(t *testing.T) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Remove(IndexPath(path) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		if s, err = Open(ctx, Options{Path: path}); err != nil {
			t.Fatal(err)
		}
		check(t, s)
	})
}

// TestCloseTwice: the app closes the trail at exit even when a fault path
// (or a test) closed it before; a second Close must be harmless.
func TestCloseTwice(t *testing.T) {
	s, err := Open(context.Background(), Options{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestIndexLayout: an index file of an older layout is dropped and rebuilt
// from the trail (nothing in it is kept, a ghost row included); one of a
// newer layout stops the store with a message that says what to do.
func TestIndexLayout(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for i := 0; i < 30; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ix.ExecContext(ctx, `UPDATE audit_index SET org = 'ghost'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	defer func(v int) { indexLayout = v }(indexLayout)
	indexLayout++ // this code's layout is newer than the file's
	s, err = Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Query(ctx, audit.Filter{Org: recs[4].Org})
	if err != nil || len(p.Records) == 0 {
		t.Fatalf("query after the rebuild: %+v, %v", p.Records, err)
	}
	var ghosts, v int
	if err := s.ix.QueryRowContext(ctx, `SELECT count(*) FROM audit_index WHERE org = 'ghost'`).Scan(&ghosts); err != nil || ghosts != 0 {
		t.Fatalf("%d rows of the old layout kept (%v)", ghosts, err)
	}
	if err := s.ix.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil || v != indexLayout {
		t.Fatalf("layout %d after the rebuild (%v), want %d", v, err, indexLayout)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	indexLayout -= 2 // an older dispenser, the file's layout newer than its own
	if _, err := Open(ctx, Options{Path: path}); err == nil || !strings.Contains(err.Error(), "remove it: it is rebuilt from the trail") {
		t.Fatalf("open with a newer index layout: %v", err)
	}
	if _, err := Open(ctx, Options{Path: path, ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "has layout") {
		t.Fatalf("read-only open with a newer index layout: %v", err)
	}
}

// TestIndexerNeverHoldsUpAppends: an index transaction holds the index
// file's write lock, never the trail's, so appends go on while one is open.
func TestIndexerNeverHoldsUpAppends(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	tx, err := s.ix.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, upsertCursor, "main", 0); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.Append(actx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatalf("append while an index transaction is open: %v", err)
	}
}

// TestBulkIndex: an index far behind its trail (here a removed index file)
// is built in bulk, rows first and then each query index by one sort, and
// ends up as the entry-by-entry build would: every query index in place,
// every entry found, verify clean. A build cut short after the rows (the
// query indexes dropped) gets its indexes back at the next start.
func TestBulkIndex(t *testing.T) {
	defer func(v int64) { bulkMin = v }(bulkMin)
	bulkMin = 1000
	ctx := context.Background()
	f := newFixture(t)
	f.append(t, 20, 2980)
	path := f.s.path
	reopen := func(t *testing.T) {
		t.Helper()
		if err := f.s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		f.s, f.cp.Source = s, s
	}
	indexes := func(t *testing.T) int {
		t.Helper()
		var n int
		if err := f.s.ix.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'audit_index_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	check := func(t *testing.T) {
		t.Helper()
		if n := indexes(t); n != 7 {
			t.Fatalf("%d query indexes, want 7", n)
		}
		for _, i := range []int{0, 1, 1500, 2999} {
			k := audittest.Sample(i).AccessKeyID
			if k == "" {
				continue
			}
			if p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: k}); err != nil || len(p.Records) != 1 {
				t.Fatalf("entry %d: %+v, %v", i, p.Records, err)
			}
		}
		if r := f.verify(t); len(r.Problems) > 0 {
			t.Fatalf("verify: %q", r.Problems)
		}
	}

	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(IndexPath(path) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	f.s, f.cp.Source = s, s
	t.Cleanup(func() { _ = s.Close() })
	if err := f.s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	check(t)

	// Cut short: rows in, query indexes not yet made.
	if _, err := f.s.ix.ExecContext(ctx, dropIndexes); err != nil {
		t.Fatal(err)
	}
	reopen(t)
	check(t)
}
