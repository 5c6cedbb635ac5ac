package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// pgFixture is one replica's log in a fresh schema with n records anchored
// in a directory, and a connection an attacker would use (guard rails off).
type pgFixture struct {
	dsn    string
	s      *Store
	log    string
	anchor *audit.DirAnchor
	cp     *audit.Checkpointer
	opts   audit.VerifyOptions
	raw    *pgx.Conn
}

func newPGFixture(t *testing.T, n int) *pgFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	vkey, err := audit.GenerateKey(key, "dispenser-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	f := &pgFixture{dsn: schemaDSN(t), log: "replica-a", anchor: &audit.DirAnchor{Dir: filepath.Join(dir, "anchors")}}
	f.s = openTemp(t, f.dsn, f.log)
	f.cp = &audit.Checkpointer{Source: f.s, Log: f.log, Origin: audit.Origin("test", f.log), Signer: signer, Anchors: []audit.Anchor{f.anchor}}
	f.opts = audit.VerifyOptions{OriginBase: "test", Verifier: v, Anchors: []audit.Anchor{f.anchor}}
	if _, err := f.cp.Checkpoint(ctx, false); err != nil { // the genesis checkpoint
		t.Fatal(err)
	}
	f.append(t, 0, n)
	if _, err := f.cp.Checkpoint(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.raw, err = pgx.Connect(ctx, f.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.raw.Close(context.Background()) })
	// The table owner can switch the guard rails off: they are deterrents.
	f.exec(t, `ALTER TABLE audit_records DISABLE TRIGGER ALL; ALTER TABLE audit_hashes DISABLE TRIGGER ALL;
		ALTER TABLE audit_checkpoints DISABLE TRIGGER ALL`)
	return f
}

func (f *pgFixture) append(t *testing.T, from, n int) {
	t.Helper()
	var recs []audit.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := f.s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

func (f *pgFixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := f.raw.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (f *pgFixture) verify(t *testing.T) audit.LogReport {
	t.Helper()
	rep, err := audit.Verify(context.Background(), f.s, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range rep.Logs {
		if l.Log == f.log {
			return l
		}
	}
	t.Fatalf("log %s not verified: %+v", f.log, rep)
	return audit.LogReport{}
}

func problems(r audit.LogReport) string { return strings.Join(r.Problems, "\n") }

// TestVerifyChecksEveryMerkleNode: one interior node per level of a
// 1,000-entry tree is zeroed in turn (triggers disabled); verify recomputes
// every stored node from the leaves and names it.
func TestVerifyChecksEveryMerkleNode(t *testing.T) {
	ctx := context.Background()
	f := newPGFixture(t, 1000)
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("clean 1,000-entry log: %q", r.Problems)
	}
	for level := 0; level <= 9; level++ {
		n := int64(1000>>level) / 3
		idx := tlog.StoredHashIndex(level, n)
		var orig []byte
		if err := f.raw.QueryRow(ctx, `SELECT hash FROM audit_hashes WHERE log = $1 AND idx = $2`, f.log, idx).Scan(&orig); err != nil {
			t.Fatal(err)
		}
		f.exec(t, `UPDATE audit_hashes SET hash = '\x0000000000000000000000000000000000000000000000000000000000000000' WHERE log = $1 AND idx = $2`, f.log, idx)
		r := f.verify(t)
		want := fmt.Sprintf("Merkle node level %d #%d (entries %d..%d)", level, n, n<<level, (n+1)<<level-1)
		if !strings.Contains(problems(r), want) {
			t.Errorf("level %d: node %d zeroed; problems %q do not name %q", level, idx, r.Problems, want)
		}
		f.exec(t, `UPDATE audit_hashes SET hash = $3 WHERE log = $1 AND idx = $2`, f.log, idx, orig)
	}
}

// TestGhostRow: PostgreSQL keeps the query columns on audit_records, so a
// ghost is a row there outside every chain, with bytes that are no entry.
// Verify names it; queries it matches still answer (the row is skipped and
// reported); records appended after a restart are found.
func TestGhostRow(t *testing.T) {
	ctx := context.Background()
	f := newPGFixture(t, 20)
	r := audittest.Sample(3)
	f.exec(t, `INSERT INTO audit_records (log, seq, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket, body, hash)
		VALUES ($1, 1000000, $2, 'issued', $3, $4, $5, $6, 'ASIAGHOST', $7, '\xdeadbeef', '\x00')`, f.log, audit.TimeKey(r.Time), r.Org, r.Principal, r.JobID, r.TaskID, r.Bucket)
	if got := f.verify(t); !strings.Contains(problems(got), "entry 1000000") {
		t.Errorf("ghost row: problems %q do not name entry 1000000", got.Problems)
	}
	for _, q := range []audit.Filter{{AccessKeyID: "ASIAGHOST"}, {Org: r.Org}} {
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
	_ = f.s.Close()
	f.s = openTemp(t, f.dsn, f.log)
	f.append(t, 20, 20)
	for i := 20; i < 40; i++ {
		k := audittest.Sample(i).AccessKeyID
		if k == "" {
			continue
		}
		p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: k})
		if err != nil || len(p.Records) != 1 {
			t.Fatalf("credential %s issued after the restart: %+v, %v", k, p.Records, err)
		}
	}
}

// TestAnchorsDeletedAndLogResealed: the anchors deleted and the replica's
// log re-sealed with forged records; the restarted replica refuses to sign
// or anchor it and verify says the anchor is missing.
func TestAnchorsDeletedAndLogResealed(t *testing.T) {
	ctx := context.Background()
	f := newPGFixture(t, 20)
	f.append(t, 20, 5)
	if err := os.RemoveAll(f.anchor.Dir); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"audit_records", "audit_hashes", "audit_checkpoints", "audit_heads"} {
		f.exec(t, `DELETE FROM `+table+` WHERE log = $1`, f.log)
	}
	var recs []audit.Record
	for i := 0; i < 25; i++ {
		r := audittest.Sample(i)
		r.Principal = "forged"
		recs = append(recs, r)
	}
	if _, err := f.s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	cp := &audit.Checkpointer{Source: f.s, Log: f.log, Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	if _, err := cp.Checkpoint(ctx, true); !errors.Is(err, audit.ErrAnchorMissing) {
		t.Fatalf("Checkpoint of a non-empty log with no anchor = %v, want ErrAnchorMissing", err)
	}
	if b, _ := f.anchor.Latest(ctx, f.cp.Origin); b != nil {
		t.Fatalf("the forged log was anchored:\n%s", b)
	}
	r := f.verify(t)
	if !r.AnchorMissing || r.Unanchored != 25 {
		t.Fatalf("verify after the anchors were deleted: %+v; want anchor missing for 25 entries", r)
	}
}

// TestCrashTailRewritten: a rewritten unanchored tail is the documented
// window; a rewrite reaching an anchored entry is refused and found.
func TestCrashTailRewritten(t *testing.T) {
	ctx := context.Background()
	for _, from := range []int64{20, 19} {
		f := newPGFixture(t, 20)
		f.append(t, 20, 5)
		body, err := f.s.Body(ctx, f.log, from-1)
		if err != nil {
			t.Fatal(err)
		}
		h := audit.ChainHash(body)
		f.exec(t, `DELETE FROM audit_records WHERE log = $1 AND seq >= $2`, f.log, from)
		f.exec(t, `DELETE FROM audit_hashes WHERE log = $1 AND idx >= $2`, f.log, tlog.StoredHashIndex(0, from))
		f.exec(t, `DELETE FROM audit_checkpoints WHERE log = $1 AND size > 20`, f.log)
		f.exec(t, `UPDATE audit_heads SET size = $2, hash = $3 WHERE log = $1`, f.log, from, h[:])
		var recs []audit.Record
		for i := from; i < 25; i++ {
			r := audittest.Sample(int(i))
			r.Principal = "someone-else"
			recs = append(recs, r)
		}
		if _, err := f.s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
		cp := &audit.Checkpointer{Source: f.s, Log: f.log, Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
		_, err = cp.Checkpoint(ctx, true)
		r := f.verify(t)
		if from == 20 {
			if err != nil || len(r.Problems) > 0 || r.Anchored != 25 {
				t.Fatalf("a rewritten unanchored tail is within the documented window: %v, %+v", err, r)
			}
			continue
		}
		if !errors.Is(err, audit.ErrAnchorFork) || !strings.Contains(problems(r), "first 20 entries do not match the anchored checkpoint") {
			t.Fatalf("rewrite of anchored entry 19: %v, %+v", err, r)
		}
	}
}

// TestReadOnlyOpenCreatesNothing: the verifier's open of a schema without
// the audit tables fails and creates no table; a read-only store refuses
// to write even where the database would allow it.
func TestReadOnlyOpenCreatesNothing(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	if s, err := Open(ctx, Options{DSN: dsn, ReadOnly: true}); err == nil {
		_ = s.Close()
		t.Fatal("read-only open of a schema without the audit tables succeeded")
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("read-only open left %d tables (%v)", n, err)
	}
	w := openTemp(t, dsn, "r")
	if _, err := w.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(ctx, Options{DSN: dsn, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.PutCheckpoint(ctx, "r", 1, []byte("x")); err == nil {
		t.Fatal("a read-only store wrote a checkpoint")
	}
}

// TestAdoptWhileTheReplicaRuns: the replica holds its log (advisory lock)
// and refuses to anchor it; an adoption borrows the log (appends fenced by
// the head compare-and-swap), anchors it, and the replica's checkpointer
// resumes from the adopted checkpoint without a restart.
func TestAdoptWhileTheReplicaRuns(t *testing.T) {
	ctx := context.Background()
	f := newPGFixture(t, 10)
	if err := os.RemoveAll(f.anchor.Dir); err != nil {
		t.Fatal(err)
	}
	replica := &audit.Checkpointer{Source: f.s, Log: f.log, Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	if _, err := replica.Resume(ctx); !errors.Is(err, audit.ErrAnchorMissing) || !replica.AnchorMissing() {
		t.Fatalf("replica with its anchor lost: %v", err)
	}
	if _, err := Open(ctx, Options{DSN: f.dsn, Log: f.log}); !errors.Is(err, ErrLogInUse) {
		t.Fatalf("the replica's log is not held: %v", err)
	}
	b, err := Open(ctx, Options{DSN: f.dsn, Log: f.log, Borrow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cp := &audit.Checkpointer{Source: b, Log: f.log, Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	e, _, err := audit.Adopt(ctx, b, cp, audit.AdoptRequest{Reason: "anchor bucket recreated", Operator: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 10 {
		t.Fatalf("adoption record at %d, want 10", e.Seq)
	}
	f.append(t, 10, 2) // the replica appends after the adoption, on its own connection
	if _, err := replica.Checkpoint(ctx, false); err != nil || replica.AnchorMissing() {
		t.Fatalf("the replica's next checkpoint after the adoption: %v", err)
	}
	r := f.verify(t)
	if len(r.Problems) > 0 || r.AnchorMissing || r.Anchored != 13 || len(r.Adoptions) != 1 || r.Adoptions[0].Operator != "bob" {
		t.Fatalf("verify after the adoption: %+v", r)
	}
}
