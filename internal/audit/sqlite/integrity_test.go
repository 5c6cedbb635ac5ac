package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/metrics"
)

// problems joins a log report's findings for matching.
func problems(r audit.LogReport) string { return strings.Join(r.Problems, "\n") }

// TestVerifyChecksEveryMerkleNode: an edited interior node breaks the
// receipts of the records under it while every entry and the tree hash
// (which reads only the outermost nodes) stay intact, so verify recomputes
// every stored node from the leaves and names the first bad one. One node
// per level of a 1,000-entry tree is edited in turn.
func TestVerifyChecksEveryMerkleNode(t *testing.T) {
	f := newFixture(t)
	f.append(t, 20, 980)
	if _, err := f.cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("clean 1,000-entry log: %q", r.Problems)
	}
	for level := 0; level <= 9; level++ {
		n := int64(1000>>level) / 3 // an interior node of this level (level 9 has one: the left half)
		idx := tlog.StoredHashIndex(level, n)
		var orig []byte
		if err := f.s.r.QueryRow(`SELECT hash FROM audit_hashes WHERE log = 'main' AND idx = ?`, idx).Scan(&orig); err != nil {
			t.Fatal(err)
		}
		f.exec(t, `UPDATE audit_hashes SET hash = zeroblob(32) WHERE log = 'main' AND idx = ?`, idx)
		r := f.verify(t)
		want := fmt.Sprintf("Merkle node level %d #%d (entries %d..%d)", level, n, n<<level, (n+1)<<level-1)
		if !strings.Contains(problems(r), want) {
			t.Errorf("level %d: node %d zeroed; problems %q do not name %q", level, idx, r.Problems, want)
		}
		f.exec(t, `UPDATE audit_hashes SET hash = ? WHERE log = 'main' AND idx = ?`, orig, idx)
	}
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("restored log: %q", r.Problems)
	}
}

// TestVerifyFindsTheReportedInteriorNode is the reported case: a 1,006-entry
// log, stored hash 1001 (level 3, node 62: entries 496..503) zeroed. The
// receipt of entry 504 no longer verifies; verify must say why.
func TestVerifyFindsTheReportedInteriorNode(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.append(t, 20, 986)
	if _, err := f.cp.Checkpoint(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.exec(t, `UPDATE audit_hashes SET hash = zeroblob(32) WHERE idx = 1001`)
	svc := &audit.Service{Trail: f.s, Checkpointer: f.cp, OriginBase: origin}
	rc, err := svc.Receipt(ctx, "main:504")
	if err != nil {
		t.Fatal(err)
	}
	if audit.VerifyReceipt(rc, f.opts.Verifier) == nil {
		t.Fatal("the receipt of entry 504 still verifies: the edit is not the reported one")
	}
	if r := f.verify(t); !strings.Contains(problems(r), "Merkle node level 3 #62 (entries 496..503)") {
		t.Fatalf("node 1001 zeroed: problems %q", r.Problems)
	}
}

// insertGhost adds an audit_index row with no entry behind it.
func (f *fixture) insertGhost(t *testing.T, id int64, accessKey string) {
	t.Helper()
	r := audittest.Sample(3)
	f.exec(t, `INSERT INTO audit_index (id, log, seq, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket)
		VALUES (?, 'main', ?, ?, 'issued', ?, ?, ?, ?, ?, ?)`, id, id, audit.TimeKey(r.Time), r.Org, r.Principal, r.JobID, r.TaskID, accessKey, r.Bucket)
}

// TestGhostIndexRow: a row inserted into the query index with an id above
// every entry. Verify names it, queries that match it still answer (the
// row is skipped and reported, not a "malformed entry" for every query), and
// the indexer, which continues from its own cursor rather than MAX(id),
// keeps indexing every record appended after a restart.
func TestGhostIndexRow(t *testing.T) {
	for _, c := range []struct {
		name string
		id   int64
	}{{"far above", 1_000_000}, {"at the next entry's id", 21}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.insertGhost(t, c.id, "ASIAGHOST")
			r := f.verify(t)
			if want := fmt.Sprintf("audit_index row %d", c.id); !strings.Contains(problems(r), want) {
				t.Errorf("ghost index row: problems %q do not name %q", r.Problems, want)
			}
			for _, q := range []audit.Filter{{AccessKeyID: "ASIAGHOST"}, {Org: audittest.Sample(3).Org}} {
				p, err := f.s.Query(ctx, q)
				if err != nil {
					t.Errorf("query %+v matching the ghost row: %v", q, err)
					continue
				}
				for _, rec := range p.Records {
					if rec.AccessKeyID == "ASIAGHOST" {
						t.Fatalf("query returned the ghost row as a record: %+v", rec)
					}
				}
			}
			// Restart, then issue more credentials: each is found by its key.
			path := f.s.path
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(ctx, Options{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			f.s = s
			f.cp.Source = s
			var recs []audit.Record
			for i := 20; i < 40; i++ {
				recs = append(recs, audittest.Sample(i))
			}
			if _, err := s.Append(ctx, recs); err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				if rec.AccessKeyID == "" {
					continue
				}
				p, err := s.Query(ctx, audit.Filter{AccessKeyID: rec.AccessKeyID})
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Records) != 1 || p.Records[0].AccessKeyID != rec.AccessKeyID {
					t.Fatalf("credential %s issued after the restart: query found %+v", rec.AccessKeyID, p.Records)
				}
			}
		})
	}
}

// reseal is the anchor-laundering attack: every row of the log is deleted
// and a forged log of n entries appended through the real code path (so
// every chain hash, Merkle node and the head are consistent), with the
// stored checkpoints gone.
func (f *fixture) reseal(t *testing.T, n int) {
	t.Helper()
	for _, q := range []string{`DELETE FROM audit_records`, `DELETE FROM audit_index`, `DELETE FROM audit_hashes`,
		`DELETE FROM audit_checkpoints`, `DELETE FROM audit_heads`} {
		f.exec(t, q)
	}
	f.exec(t, `DELETE FROM audit_index_cursor`)
	var recs []audit.Record
	for i := 0; i < n; i++ {
		r := audittest.Sample(i)
		if r.AccessKeyID != "" {
			r.AccessKeyID = fmt.Sprintf("ASIAFORGED%06d", i)
		}
		recs = append(recs, r)
	}
	if _, err := f.s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// TestAnchorsDeletedAndLogResealed: with the anchor directory deleted and
// the log re-sealed, a restarted dispenser must not sign and anchor the
// forged log (no anchor to extend), and verify must say the anchor is
// missing rather than report an ordinary unanchored tail.
func TestAnchorsDeletedAndLogResealed(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.append(t, 20, 5)
	if err := os.RemoveAll(f.anchor.Dir); err != nil {
		t.Fatal(err)
	}
	f.reseal(t, 25)
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	_, err := cp.Checkpoint(ctx, true)
	if !errors.Is(err, audit.ErrAnchorMissing) {
		t.Fatalf("Checkpoint of a non-empty log with no anchor = %v, want ErrAnchorMissing", err)
	}
	if b, _ := f.anchor.Latest(ctx, f.cp.Origin); b != nil {
		t.Fatalf("the forged log was anchored:\n%s", b)
	}
	if b, _ := f.s.LatestCheckpoint(ctx, "main"); b != nil {
		t.Fatalf("the forged log was signed:\n%s", b)
	}
	r := f.verify(t)
	if !r.AnchorMissing || r.Anchored != 0 || r.Unanchored != 25 {
		t.Fatalf("verify after the anchors were deleted: %+v; want anchor missing for 25 entries", r)
	}
}

// TestCrashTailRewritten: entries after the newest anchored checkpoint (the
// tail a crash leaves) can be rewritten before the restart; that is the
// documented window, which the checkpoint cadence keeps short. A rewrite
// that reaches one anchored entry is refused and found.
func TestCrashTailRewritten(t *testing.T) {
	ctx := context.Background()
	rewrite := func(t *testing.T, f *fixture, from int64) {
		last := f.entry(t, from-1)
		_, h := encode(t, last)
		f.exec(t, `DELETE FROM audit_records WHERE seq >= ?`, from)
		f.exec(t, `DELETE FROM audit_index WHERE seq >= ?`, from)
		f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, from))
		f.exec(t, `DELETE FROM audit_checkpoints WHERE size > 20`)
		f.exec(t, `UPDATE audit_heads SET size = ?, hash = ?`, from, h)
		f.exec(t, `UPDATE audit_index_cursor SET next_seq = ?, hash = ? WHERE next_seq > ?`, from, h, from)
		var recs []audit.Record
		for i := from; i < 25; i++ {
			r := audittest.Sample(int(i))
			r.Principal = "someone-else"
			recs = append(recs, r)
		}
		if _, err := f.s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("unanchored tail only: the documented window", func(t *testing.T) {
		f := newFixture(t) // anchored at 20
		f.append(t, 20, 5) // the crash tail
		rewrite(t, f, 20)
		cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
		if _, err := cp.Checkpoint(ctx, true); err != nil {
			t.Fatalf("restart after a tail rewrite: %v", err)
		}
		if r := f.verify(t); len(r.Problems) > 0 || r.Anchored != 25 {
			t.Fatalf("a rewritten unanchored tail is within the window and cannot be seen: %+v", r)
		}
	})
	t.Run("reaching an anchored entry: refused and found", func(t *testing.T) {
		f := newFixture(t)
		f.append(t, 20, 5)
		rewrite(t, f, 19)
		cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
		if _, err := cp.Checkpoint(ctx, true); !errors.Is(err, audit.ErrAnchorFork) {
			t.Fatalf("restart after rewriting anchored entry 19: %v, want ErrAnchorFork", err)
		}
		if r := f.verify(t); !strings.Contains(problems(r), "first 20 entries do not match the anchored checkpoint") {
			t.Fatalf("rewritten anchored entry: %+v", r)
		}
	})
}

// TestOpenReadOnlyCreatesNothing: the verifier's read-only open of a missing
// database fails and leaves no file (no database, -wal or -shm) behind.
func TestOpenReadOnlyCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing.db")
	if s, err := Open(context.Background(), Options{Path: path, ReadOnly: true}); err == nil {
		_ = s.Close()
		t.Fatal("read-only open of a missing database succeeded")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("read-only open created %s", e.Name())
	}
}

// anchoredSize is the size of the checkpoint the fixture's anchor holds.
func (f *fixture) anchoredSize(t *testing.T) int64 {
	t.Helper()
	b, err := f.anchor.Latest(context.Background(), f.cp.Origin)
	if err != nil || b == nil {
		return -1
	}
	n, _, err := audit.OpenCheckpoint(b, f.cp.Origin, f.opts.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitAnchored waits until the anchor holds a checkpoint of size.
func (f *fixture) waitAnchored(t *testing.T, size int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for f.anchoredSize(t) != size {
		if time.Now().After(deadline) {
			t.Fatalf("anchored size %d, want %d", f.anchoredSize(t), size)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCheckpointCadence: a checkpoint follows as soon as MaxRecords entries
// are unanchored (whatever the interval), and once the oldest unanchored
// entry has waited Interval (whatever the count).
func TestCheckpointCadence(t *testing.T) {
	run := func(t *testing.T, cp *audit.Checkpointer) func() {
		if _, err := cp.Resume(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); cp.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	f := newFixture(t) // anchored at 20
	byCount := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors,
		Interval: time.Hour, MaxRecords: 100, Idle: time.Hour}
	stop := run(t, byCount)
	f.append(t, 20, 99)
	time.Sleep(300 * time.Millisecond) // several polls: 99 entries are below the count
	if n := f.anchoredSize(t); n != 20 {
		t.Fatalf("anchored %d after 99 entries with max_records 100 and a 1h interval", n)
	}
	f.append(t, 119, 1)
	f.waitAnchored(t, 120)
	stop()

	byTime := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors,
		Interval: 100 * time.Millisecond, MaxRecords: -1, Idle: time.Hour}
	stop = run(t, byTime)
	defer stop()
	f.append(t, 120, 3)
	f.waitAnchored(t, 123)
}

// TestResumeReportsTheUnanchoredTail: a restarted checkpointer reports the
// tail the previous run left unanchored (log and metric) and anchors it at
// once.
func TestResumeReportsTheUnanchoredTail(t *testing.T) {
	f := newFixture(t) // anchored at 20
	f.append(t, 20, 7)
	m := metrics.New("test")
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors, Metrics: m}
	r, err := cp.Resume(context.Background())
	if err != nil || r != (audit.Resumption{Size: 27, Anchored: 20, Unanchored: 7}) {
		t.Fatalf("Resume = %+v, %v", r, err)
	}
	if v := testutil.ToFloat64(m.AuditStartUnanchored); v != 7 {
		t.Fatalf("start tail metric = %v, want 7", v)
	}
	if n := f.anchoredSize(t); n != 27 {
		t.Fatalf("anchored %d after Resume, want 27", n)
	}
}

// TestAdopt: after the anchors are lost, an operator's adoption appends an
// adoption record and anchors a checkpoint covering it; verify then passes
// and lists the adoption, the checkpointer extends the adopted tree, and a
// second adoption is refused.
func TestAdopt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if err := os.RemoveAll(f.anchor.Dir); err != nil {
		t.Fatal(err)
	}
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	if _, err := cp.Checkpoint(ctx, true); !errors.Is(err, audit.ErrAnchorMissing) || !cp.AnchorMissing() {
		t.Fatalf("Checkpoint with the anchor lost = %v (missing %v)", err, cp.AnchorMissing())
	}
	req := audit.AdoptRequest{Reason: "anchor volume restored empty after INC-7", Operator: "alice", ReplicaID: "r1"}
	if _, _, err := audit.Adopt(ctx, f.s, cp, audit.AdoptRequest{Operator: "alice"}); err == nil {
		t.Fatal("an adoption without a reason was accepted")
	}
	e, signed, err := audit.Adopt(ctx, f.s, cp, req)
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 20 || e.Record.Outcome != audit.Adopted || e.Record.Principal != "alice" || signed == nil {
		t.Fatalf("adoption entry %+v", e)
	}
	var a audit.Adoption
	if err := e.Record.Detail.Decode(&a); err != nil || a.Size != 20 || a.Reason != req.Reason || len(a.Anchors) != 1 {
		t.Fatalf("adoption detail %+v, %v", a, err)
	}
	if n := f.anchoredSize(t); n != 21 {
		t.Fatalf("anchored %d after the adoption, want 21", n)
	}
	r := f.verify(t)
	if len(r.Problems) > 0 || r.AnchorMissing || len(r.Adoptions) != 1 || r.Adoptions[0].Operator != "alice" || r.Adoptions[0].Size != 20 {
		t.Fatalf("verify after the adoption: %+v", r)
	}
	// The checkpointer of a restarted dispenser extends the adopted tree.
	f.append(t, 20, 3)
	next := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	if _, err := next.Checkpoint(ctx, false); err != nil || next.AnchorMissing() {
		t.Fatalf("Checkpoint after the adoption: %v", err)
	}
	if _, _, err := audit.Adopt(ctx, f.s, cp, req); !errors.Is(err, audit.ErrNothingToAdopt) {
		t.Fatalf("a second adoption = %v, want ErrNothingToAdopt", err)
	}
}

// TestReadOnlyOpenWritesNothing: verify's read-only open of an existing
// database, closed or in use by a running dispenser, reads every entry,
// refuses writes and leaves the database file as it was.
func TestReadOnlyOpenWritesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.db")
	w, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for i := 0; i < 30; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := w.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		ro, err := Open(ctx, Options{Path: path, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		n := 0
		if err := ro.Scan(ctx, "main", 0, func(audit.Row) error { n++; return nil }); err != nil || n != 30 {
			t.Fatalf("read-only scan: %d entries, %v", n, err)
		}
		if _, err := ro.Append(ctx, recs[:1]); err == nil {
			t.Fatal("a read-only store appended")
		}
		if err := ro.PutCheckpoint(ctx, "main", 1, []byte("x")); err == nil {
			t.Fatal("a read-only store stored a checkpoint")
		}
		if _, err := ro.r.ExecContext(ctx, `INSERT INTO audit_prune (log, before) VALUES ('x', 1)`); err == nil {
			t.Fatal("the read-only connection accepted a write")
		}
		if _, err := ro.r.ExecContext(ctx, `DELETE FROM audit_index`); err == nil {
			t.Fatal("the read-only connection accepted a write to the index")
		}
	}
	t.Run("while a dispenser has it open", check)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var before [2][]byte
	for i, p := range []string{path, IndexPath(path)} {
		if before[i], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("closed", check)
	for i, p := range []string{path, IndexPath(path)} {
		if after, _ := os.ReadFile(p); string(before[i]) != string(after) {
			t.Fatalf("a read-only open changed %s", p)
		}
	}
	// SQLite coordinates with writers through the -wal and -shm files
	// even on a read-only connection, so it creates them (empty) beside a
	// cleanly closed WAL database; nothing else appears and the WAL holds
	// nothing.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		switch e.Name() {
		case "audit.db", "audit.db-shm", "audit.db.index", "audit.db.index-shm":
		case "audit.db-wal", "audit.db.index-wal":
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err != nil || st.Size() != 0 {
				t.Errorf("after a read-only open of a closed database the WAL holds %d bytes (%v)", st.Size(), err)
			}
		default:
			t.Errorf("after a read-only open of a closed database: %s left behind", e.Name())
		}
	}
}

// TestEditedIndexCursor: the indexer's own cursor is a row anyone holding
// the file can edit too. Moved past the head, it is reported by verify and
// by the indexer (which re-indexes the log rather than skip entries), and
// every record stays findable.
func TestEditedIndexCursor(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	reported := f.reopen(t)
	f.exec(t, `UPDATE audit_index_cursor SET next_seq = 1000000 WHERE log = 'main'`)
	if r := f.verify(t); !strings.Contains(problems(r), "query index cursor of log main is at 1000000, past the log's 20 entries") {
		t.Fatalf("edited cursor: problems %q", r.Problems)
	}
	f.append(t, 20, 10)
	for i := 20; i < 30; i++ {
		k := audittest.Sample(i).AccessKeyID
		if k == "" {
			continue
		}
		p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: k})
		if err != nil || len(p.Records) != 1 {
			t.Fatalf("record %d after the cursor was edited: %+v, %v", i, p.Records, err)
		}
	}
	if r := reported(); len(r) != 1 || !strings.Contains(r[0], "rebuilt from the trail") {
		t.Fatalf("indexer reports %q, want one rebuild report", r)
	}
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("after re-indexing: %q", r.Problems)
	}
}

// TestQueryReportsSkippedRows: a query that meets a ghost row tells the
// store's Problems hook (the dispenser logs and counts it) and still pages
// through every real record.
func TestQueryReportsSkippedRows(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	reported := f.reopen(t)
	for i := int64(0); i < 5; i++ {
		f.insertGhost(t, 1_000_000+i, fmt.Sprintf("ASIAGHOST%d", i))
	}
	var got int
	q := audit.Filter{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("paging does not end")
		}
		p, err := f.s.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got += len(p.Records)
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if got != 20 {
		t.Fatalf("paged %d records past the ghost rows, want all 20", got)
	}
	if r := reported(); len(r) != 5 || !strings.Contains(r[0], "audit_index row for main:") {
		t.Fatalf("reports %q, want one per ghost row", r)
	}
}

// reopen restarts the fixture's store with a Problems hook, brings its
// index up to date, and returns what the hook was told so far.
func (f *fixture) reopen(t *testing.T) func() []string {
	t.Helper()
	var mu sync.Mutex
	var got []string
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Options{Path: f.s.path, Problems: func(p string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.s, f.cp.Source = s, s
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestOneOfTwoAnchorsLost: with two anchors, one holding nothing is an
// anchor missing for verify (named), while the checkpointer, vouched for
// by the other, seeds it again.
func TestOneOfTwoAnchorsLost(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	b := &audit.DirAnchor{Dir: filepath.Join(t.TempDir(), "anchor-b")}
	f.opts.Anchors = []audit.Anchor{f.anchor, b}
	r := f.verify(t)
	if !r.AnchorMissing || len(r.AnchorsWithout) != 1 || r.AnchorsWithout[0] != b.Dir || len(r.Problems) > 0 || r.Anchored != 20 {
		t.Fatalf("second anchor empty: %+v", r)
	}
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: []audit.Anchor{f.anchor, b}}
	if _, err := cp.Checkpoint(ctx, true); err != nil || cp.AnchorMissing() {
		t.Fatalf("Checkpoint with one anchor vouching: %v", err)
	}
	if r := f.verify(t); r.AnchorMissing || len(r.Problems) > 0 {
		t.Fatalf("after the empty anchor was seeded: %+v", r)
	}
}

// TestMigrationMovesTheIndexToItsFile opens a trail built by the previous
// schema (version 4: the query index and its cursor in the trail's own
// file), made by the dispenser at 1fa0e93 and kept in testdata/schema4:
// 40 entries (entry 7 a summary with a detail, encoding version 2), the
// first 30 indexed, a ghost index row, a signed checkpoint of all 40 in
// its anchor directory. The migration drops the old index from the trail;
// the indexer rebuilds it, from the entries, in the index file: every entry
// is found, the ghost row is gone, and verify passes with the old anchor.
func TestMigrationMovesTheIndexToItsFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/schema4")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.sqlite")
	if _, err := Open(ctx, Options{Path: path, ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "schema is version 4") {
		t.Fatalf("read-only open of the old schema = %v, want a request to migrate it", err)
	}
	var reports []string
	s, err := Open(ctx, Options{Path: path, Problems: func(p string) { reports = append(reports, p) }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var left int
	if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name LIKE 'audit_index%'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d index tables and indexes left in the trail (%v)", left, err)
	}
	for i := 0; i < 40; i++ {
		k := audittest.Sample(i).AccessKeyID
		if k == "" || i == 7 {
			continue
		}
		if p, err := s.Query(ctx, audit.Filter{AccessKeyID: k}); err != nil || len(p.Records) != 1 || p.Records[0].ID != audit.EntryID("main", int64(i)) {
			t.Fatalf("entry %d after the migration: %+v, %v", i, p.Records, err)
		}
	}
	p, err := s.Query(ctx, audit.Filter{Outcome: audit.Summarized})
	if err != nil || len(p.Records) != 1 || p.Records[0].Detail == "" {
		t.Fatalf("the version 2 entry after the migration: %+v, %v", p.Records, err)
	}
	if p, err := s.Query(ctx, audit.Filter{AccessKeyID: "ASIAGHOST"}); err != nil || len(p.Records) != 0 || len(reports) != 0 {
		t.Fatalf("the old ghost row: %+v, %v; reports %q", p.Records, err, reports)
	}
	signer, vkey, err := audit.LoadSigner(filepath.Join(dir, "checkpoint.key"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	anchor := &audit.DirAnchor{Dir: filepath.Join(dir, "anchors")}
	cp := &audit.Checkpointer{Source: s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: signer, Anchors: []audit.Anchor{anchor}}
	if r, err := cp.Resume(ctx); err != nil || r.Anchored != 40 {
		t.Fatalf("resume on the migrated trail: %+v, %v", r, err)
	}
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(40)}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Checkpoint(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	opts := audit.VerifyOptions{OriginBase: origin, Verifier: v, Anchors: []audit.Anchor{anchor}}
	for _, readOnly := range []bool{false, true} {
		src := s
		if readOnly {
			if src, err = Open(ctx, Options{Path: path, ReadOnly: true}); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = src.Close() }()
		}
		rep, err := audit.Verify(ctx, src, opts)
		if err != nil || len(rep.Logs) != 1 || len(rep.Logs[0].Problems) > 0 || rep.Logs[0].Size != 41 || rep.Logs[0].Anchored != 41 {
			t.Fatalf("verify (read-only %v) after the migration: %+v, %v", readOnly, rep, err)
		}
	}
}

// TestReadOnlyWithoutTheIndexFile: a copy of the trail alone (the index
// file is derived, and left out of a backup) verifies read-only, with no
// index to check, and the read-only open creates no index file.
func TestReadOnlyWithoutTheIndexFile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	path := f.s.path
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(IndexPath(path) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	ro, err := Open(ctx, Options{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ro.Close() }()
	rep, err := audit.Verify(ctx, ro, f.opts)
	if err != nil || len(rep.Logs) != 1 || len(rep.Logs[0].Problems) > 0 || rep.Logs[0].Size != 20 {
		t.Fatalf("verify of the trail alone: %+v, %v", rep, err)
	}
	if _, err := os.Stat(IndexPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a read-only open created the index file (%v)", err)
	}
}

// TestPruneInterruptedBetweenItsTransactions: a prune deletes the entries
// in the trail, then their index rows in the index file; a crash in
// between leaves those rows behind. They are not ghost rows (verify and
// queries leave out rows below the prune floor), and the next start
// removes them.
func TestPruneInterruptedBetweenItsTransactions(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	reported := f.reopen(t)
	f.exec(t, `CREATE TEMP TABLE saved_index AS SELECT * FROM audit_index WHERE seq < 9`) // on the indexer's one connection
	keep := time.Hour
	now := func() time.Time { return audittest.T0.Add(keep + 10*time.Second) } // cutoff: entry 10
	rt := &audit.Retention{Source: f.s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: f.cp.Signer, Keep: keep, Now: now}
	if n, err := rt.Prune(ctx); err != nil || n != 9 {
		t.Fatalf("Prune = %d, %v; want 9", n, err)
	}
	f.opts.Retention, f.opts.Now = keep, now
	f.exec(t, `INSERT INTO audit_index SELECT * FROM saved_index`) // as if the second transaction never ran
	r := f.verify(t)
	if len(r.Problems) > 0 {
		t.Fatalf("verify after an interrupted prune: %q", r.Problems)
	}
	k := audittest.Sample(4).AccessKeyID
	if p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: k}); err != nil || len(p.Records) != 0 {
		t.Fatalf("query for a pruned entry: %+v, %v", p.Records, err)
	}
	if got := reported(); len(got) != 0 {
		t.Fatalf("reports %q", got)
	}
	f.reopen(t)
	var n int
	if err := f.s.ix.QueryRowContext(ctx, `SELECT count(*) FROM audit_index WHERE seq < 9`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d index rows of pruned entries after a restart (%v)", n, err)
	}
}

// TestNoGhostsWhileIndexing: the trail and the index are two files, each
// read at its own snapshot. While entries are appended and indexed, verify's
// ghost-row pass and queries must never see an index row whose entry their
// view of the trail lacks.
func TestNoGhostsWhileIndexing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	reported := f.reopen(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 20; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.s.Append(ctx, []audit.Record{audittest.Sample(i)}); err != nil {
				t.Error(err)
				return
			}
			if err := f.s.CatchUp(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if err := f.s.Strays(ctx, true, func(s audit.Stray) error { return fmt.Errorf("stray: %s", s.Problem) }); err != nil {
			t.Error(err)
			break
		}
		if _, err := f.s.Query(ctx, audit.Filter{Limit: 5}); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	if got := reported(); len(got) != 0 {
		t.Fatalf("queries reported %q", got)
	}
}

// failingAnchor refuses every checkpoint (a witness that is down, or an
// anchor directory on a read-only volume).
type failingAnchor struct{ audit.Anchor }

func (f failingAnchor) Put(context.Context, string, int64, []byte) error {
	return errors.New("anchor unavailable")
}

// TestAnchorAgeGrowsWhenNothingIsAnchored: a checkpointer that never gets
// a checkpoint anchored since it started (a restored database behind its
// anchors, an unreachable witness) reports an anchor age that grows, so the
// anchor-age alert fires; it read 0 until the first anchoring succeeded.
func TestAnchorAgeGrowsWhenNothingIsAnchored(t *testing.T) {
	f := newFixture(t) // anchored at 20
	f.append(t, 20, 3)
	m := metrics.New("test")
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer,
		Anchors: []audit.Anchor{failingAnchor{f.anchor}}, Metrics: m, Interval: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cp.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.AuditAnchorAge) < 0.2 {
		if time.Now().After(deadline) {
			t.Fatalf("anchor age %v after seconds of failed anchoring, want it growing", testutil.ToFloat64(m.AuditAnchorAge))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
