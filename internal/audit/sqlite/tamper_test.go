package sqlite

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

const origin = "dispenser.test/audit"

type fixture struct {
	s      *Store
	anchor *audit.DirAnchor
	cp     *audit.Checkpointer
	opts   audit.VerifyOptions
}

// newFixture returns a store with 20 records and a checkpoint of them in
// the anchor directory.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "checkpoint.key")
	if _, err := audit.GenerateKey(keyFile, "dispenser-test"); err != nil {
		t.Fatal(err)
	}
	signer, vkey, err := audit.LoadSigner(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	f := &fixture{s: s, anchor: &audit.DirAnchor{Dir: filepath.Join(dir, "anchors")}}
	f.cp = &audit.Checkpointer{Source: s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: signer, Anchors: []audit.Anchor{f.anchor}}
	f.opts = audit.VerifyOptions{OriginBase: origin, Verifier: v, Anchors: []audit.Anchor{f.anchor}}
	// A dispenser anchors the empty log when it starts (the genesis
	// checkpoint), so every later tree has an anchored one to extend.
	if _, err := f.cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.append(t, 0, 20)
	if _, err := f.cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) append(t *testing.T, from, n int) {
	t.Helper()
	var recs []audit.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := f.s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if err := f.s.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) verify(t *testing.T) audit.LogReport {
	t.Helper()
	rep, err := audit.Verify(context.Background(), f.s, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Logs) != 1 {
		t.Fatalf("verified %d logs, want 1", len(rep.Logs))
	}
	return rep.Logs[0]
}

// exec runs tampering SQL as an attacker owning the files would: with the
// append-only triggers dropped, on the file that holds the table q names
// (the query index and its cursor live in the index file).
func (f *fixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	for _, tr := range []string{"audit_records_no_update", "audit_records_no_delete", "audit_hashes_no_update", "audit_hashes_no_delete"} {
		if _, err := f.s.w.Exec(`DROP TRIGGER IF EXISTS ` + tr); err != nil {
			t.Fatal(err)
		}
	}
	db := f.s.w
	if strings.Contains(q, "audit_index") {
		db = f.s.ix
	}
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (f *fixture) entry(t *testing.T, seq int64) audit.Entry {
	t.Helper()
	b, err := f.s.Body(context.Background(), "main", seq)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func encode(t *testing.T, e audit.Entry) ([]byte, []byte) {
	b, err := audit.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	h := audit.ChainHash(b)
	return b, h[:]
}

func TestVerifyClean(t *testing.T) {
	f := newFixture(t)
	r := f.verify(t)
	if len(r.Problems) > 0 || r.Size != 20 || r.Anchored != 20 || r.Unanchored != 0 {
		t.Fatalf("clean log: %+v", r)
	}
	f.append(t, 20, 3)
	r = f.verify(t)
	if len(r.Problems) > 0 || r.Unanchored != 3 {
		t.Fatalf("3 records after the anchor: %+v; want no problems and an unanchored tail of 3", r)
	}
	f.opts.Incremental = true
	r = f.verify(t)
	if len(r.Problems) > 0 || r.Checked != 3 || r.Size != 23 {
		t.Fatalf("incremental: %+v; want 3 entries checked", r)
	}
	if _, err := f.cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r = f.verify(t); r.Unanchored != 0 || len(r.Problems) > 0 {
		t.Fatalf("after a new checkpoint: %+v", r)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture)
		want   string
	}{
		{"edit a field", func(t *testing.T, f *fixture) {
			e := f.entry(t, 5)
			e.Record.Org = "evil"
			b, _ := encode(t, e)
			f.exec(t, `UPDATE audit_records SET body = ?, org = 'evil' WHERE seq = 5`, b)
		}, "entry 5: stored hash"},
		{"edit with recomputed hash", func(t *testing.T, f *fixture) {
			e := f.entry(t, 5)
			e.Record.AccessKeyID = "ASIAFORGED"
			b, h := encode(t, e)
			f.exec(t, `UPDATE audit_records SET body = ?, hash = ? WHERE seq = 5`, b, h)
		}, "entry 6: prev_hash"},
		{"delete a row", func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_records WHERE seq = 7`)
		}, "entries 7..7 are missing"},
		{"reorder rows", func(t *testing.T, f *fixture) {
			a, _ := f.s.Body(context.Background(), "main", 3)
			b, _ := f.s.Body(context.Background(), "main", 4)
			ha, hb := audit.ChainHash(a), audit.ChainHash(b)
			f.exec(t, `UPDATE audit_records SET body = CASE seq WHEN 3 THEN ? ELSE ? END, hash = CASE seq WHEN 3 THEN ? ELSE ? END WHERE seq IN (3, 4)`,
				b, a, hb[:], ha[:])
		}, "entry 3: its encoding names main:4"},
		{"truncate the newest rows", func(t *testing.T, f *fixture) {
			// A shorter chain is internally valid: only the anchor sees it.
			last := f.entry(t, 14)
			_, h := encode(t, last)
			f.exec(t, `DELETE FROM audit_records WHERE seq >= 15`)
			f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, 15))
			f.exec(t, `DELETE FROM audit_checkpoints`)
			f.exec(t, `UPDATE audit_heads SET size = 15, hash = ?`, h)
		}, "covers 20 entries but the log holds 15"},
		{"rewrite a suffix with recomputed hashes", func(t *testing.T, f *fixture) {
			// The attacker appends forged records through the real code
			// path: every chain hash and Merkle node is consistent.
			forkAt10(t, f)
		}, "first 20 entries do not match the anchored checkpoint"},
		{"forged anchored checkpoint", func(t *testing.T, f *fixture) {
			skey, _, _ := note.GenerateKey(rand.Reader, "dispenser-test")
			forger, _ := note.NewSigner(skey)
			signed, err := audit.SignCheckpoint(audit.Origin(origin, "main"), 20, tlog.Hash{1}, forger)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.anchor.Put(context.Background(), audit.Origin(origin, "main"), 20, signed); err != nil {
				t.Fatal(err)
			}
		}, "is not valid for this log's key and origin"},
		{"edit an indexed column (hides the entry from an org query)", func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_index SET org = 'other' WHERE seq = 5`)
			// A query never returns an entry under a column its bytes do
			// not hold: the misfiled row is skipped (and reported).
			if p, err := f.s.Query(context.Background(), audit.Filter{Org: "other"}); err != nil || len(p.Records) != 0 {
				t.Fatalf("query by the edited column: %+v, %v", p, err)
			}
		}, "entry 5: org of audit_index differ from the entry's bytes"},
		{"edit the copied access key id", func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_records SET access_key_id = 'ASIAOTHER' WHERE seq = 6`)
		}, "entry 6: access_key_id of audit_records differ"},
		{"point an index row elsewhere", func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_index SET seq = 9 WHERE seq = 8`)
		}, "entry 8: seq of audit_index differ"},
		{"delete an index row", func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_index WHERE seq = 7`)
		}, "entry 7 is missing from audit_index"},
		{"delete everything", func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_records`)
			f.exec(t, `DELETE FROM audit_hashes`)
			f.exec(t, `DELETE FROM audit_checkpoints`)
			f.exec(t, `DELETE FROM audit_heads`)
		}, "covers 20 entries but the log holds 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.tamper(t, f)
			r := f.verify(t)
			if len(r.Problems) == 0 {
				t.Fatalf("tampering not found: %+v", r)
			}
			if !strings.Contains(strings.Join(r.Problems, "\n"), c.want) {
				t.Fatalf("problems %q\ndo not mention %q", r.Problems, c.want)
			}
		})
	}
}

// TestVerifyChecksEveryAnchor: a log rolled back below what only the second
// anchor saw is found when verify is given every anchor, and a forged
// checkpoint in any anchor is reported.
func TestVerifyChecksEveryAnchor(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t) // anchor A holds a checkpoint at 20
	b := &audit.DirAnchor{Dir: filepath.Join(t.TempDir(), "anchor-b")}
	f.cp.Anchors = []audit.Anchor{f.anchor, b}
	f.append(t, 20, 5)
	if _, err := f.cp.Checkpoint(ctx, false); err != nil {
		t.Fatal(err)
	}
	if r := f.verify(t); len(r.Problems) > 0 || r.Anchored != 25 {
		t.Fatalf("two anchors, clean: %+v", r)
	}
	f.opts.Anchors = []audit.Anchor{f.anchor, b}
	if r := f.verify(t); len(r.Problems) > 0 || r.Anchored != 25 || r.Unanchored != 0 {
		t.Fatalf("two anchors, clean: %+v", r)
	}
	// Put A back at 20 (its writer was cut off), then roll the log back to
	// 20 entries: A alone agrees with the log, B does not.
	a20, err := audit.SignCheckpoint(audit.Origin(origin, "main"), 20, mustTreeHash(t, f, 20), f.cp.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(f.anchor.Dir); err != nil {
		t.Fatal(err)
	}
	if err := f.anchor.Put(ctx, audit.Origin(origin, "main"), 20, a20); err != nil {
		t.Fatal(err)
	}
	last := f.entry(t, 19)
	_, h := encode(t, last)
	f.exec(t, `DELETE FROM audit_records WHERE seq >= 20`)
	f.exec(t, `DELETE FROM audit_index WHERE seq >= 20`)
	f.exec(t, `UPDATE audit_index_cursor SET next_seq = 20, hash = ?`, h)
	f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, 20))
	f.exec(t, `DELETE FROM audit_checkpoints WHERE size > 20`)
	f.exec(t, `UPDATE audit_heads SET size = 20, hash = ?`, h)
	f.opts.Anchors = []audit.Anchor{f.anchor}
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("anchor A alone should not see the rollback: %+v", r)
	}
	f.opts.Anchors = []audit.Anchor{f.anchor, b}
	r := f.verify(t)
	if want := "anchored checkpoint in " + b.Dir + " covers 25 entries but the log holds 20"; !strings.Contains(strings.Join(r.Problems, "\n"), want) {
		t.Fatalf("rollback below anchor B: %q, want %q", r.Problems, want)
	}
	// A forged checkpoint in the second anchor is refused.
	skey, _, _ := note.GenerateKey(rand.Reader, "dispenser-test")
	forger, _ := note.NewSigner(skey)
	forged, _ := audit.SignCheckpoint(audit.Origin(origin, "main"), 30, tlog.Hash{1}, forger)
	if err := b.Put(ctx, audit.Origin(origin, "main"), 30, forged); err != nil {
		t.Fatal(err)
	}
	r = f.verify(t)
	if want := "anchored checkpoint in " + b.Dir + " is not valid"; !strings.Contains(strings.Join(r.Problems, "\n"), want) {
		t.Fatalf("forged checkpoint in anchor B: %q, want %q", r.Problems, want)
	}
}

func mustTreeHash(t *testing.T, f *fixture, n int64) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(n, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return f.s.ReadHashes(context.Background(), "main", idx)
	}))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestCheckpointerRefusesToAnchorAFork: after the anchored entries are
// rewritten and the log grown past the anchored size, the next checkpoint
// is not an extension of the anchored one; the checkpointer (with its
// memory of what it anchored, or reading the anchor afresh after a
// restart) refuses to replace the evidence, and verify still finds it.
func TestCheckpointerRefusesToAnchorAFork(t *testing.T) {
	for _, restarted := range []bool{false, true} {
		f := newFixture(t)
		ctx := context.Background()
		forkAt10(t, f)
		cp := f.cp
		if restarted {
			cp = &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
		}
		if _, err := cp.Checkpoint(ctx, true); !errors.Is(err, audit.ErrAnchorFork) {
			t.Fatalf("restarted=%v: Checkpoint of a rewritten log = %v, want ErrAnchorFork", restarted, err)
		}
		if r := f.verify(t); r.Anchored != 20 || !strings.Contains(strings.Join(r.Problems, "\n"), "first 20 entries do not match the anchored checkpoint") {
			t.Fatalf("restarted=%v: after the refused anchor: %+v", restarted, r)
		}
	}
	// An honest log keeps being anchored (the check passes).
	f := newFixture(t)
	f.append(t, 20, 3)
	if _, err := f.cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	f.append(t, 23, 2)
	if _, err := cp.Checkpoint(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r := f.verify(t); len(r.Problems) > 0 || r.Anchored != 25 {
		t.Fatalf("honest log: %+v", r)
	}
}

func TestAnchorRefusesRollback(t *testing.T) {
	f := newFixture(t)
	s, _ := f.anchor.Latest(context.Background(), audit.Origin(origin, "main"))
	if err := f.anchor.Put(context.Background(), audit.Origin(origin, "main"), 19, s); err == nil {
		t.Fatal("anchor accepted a smaller checkpoint")
	}
}

func TestReceipts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	svc := &audit.Service{Trail: f.s, Checkpointer: f.cp, OriginBase: origin}
	f.append(t, 20, 2) // newer than the checkpoint: the receipt signs one
	for _, id := range []string{"main:0", "main:7", "main:19", "main:21"} {
		r, err := svc.Receipt(ctx, id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if err := audit.VerifyReceipt(r, f.opts.Verifier); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if _, err := svc.Receipt(ctx, "main:99"); err != audit.ErrNotFound {
		t.Fatalf("missing record: %v", err)
	}
	if _, err := svc.Receipt(ctx, "bogus"); err != audit.ErrNotFound {
		t.Fatalf("malformed id: %v", err)
	}
	good, _ := svc.Receipt(ctx, "main:7")
	skey, _, _ := note.GenerateKey(rand.Reader, "dispenser-test")
	forger, _ := note.NewSigner(skey)
	alter := map[string]func(r *audit.Receipt){
		"record field": func(r *audit.Receipt) { r.Record.Principal = "someone-else" },
		"entry bytes": func(r *audit.Receipt) {
			e, _ := audit.Decode(r.Entry)
			e.Record.Principal = "someone-else"
			r.Entry, _ = audit.Encode(e)
			r.Record = e.Record
		},
		"proof":     func(r *audit.Receipt) { r.Proof[0][0] ^= 1 },
		"id":        func(r *audit.Receipt) { r.ID = "main:8" },
		"tree size": func(r *audit.Receipt) { r.TreeSize++ },
		"forged checkpoint": func(r *audit.Receipt) {
			size, _, _ := audit.OpenCheckpoint([]byte(r.Checkpoint), r.Origin, f.opts.Verifier)
			e, _ := audit.Decode(r.Entry)
			e.Record.Principal = "someone-else"
			r.Entry, _ = audit.Encode(e)
			r.Record = e.Record
			signed, _ := audit.SignCheckpoint(r.Origin, size, tlog.RecordHash(r.Entry), forger)
			r.Checkpoint = string(signed)
		},
	}
	for name, fn := range alter {
		r := *good
		r.Proof = append([]tlog.Hash(nil), good.Proof...)
		fn(&r)
		if err := audit.VerifyReceipt(&r, f.opts.Verifier); err == nil {
			t.Errorf("altered %s: receipt still verifies", name)
		}
	}
}

func TestRetentionKeepsTheTrailVerifiable(t *testing.T) {
	ctx := context.Background()
	keep := time.Hour
	now := func() time.Time { return audittest.T0.Add(keep + 10*time.Second) } // cutoff: entry 10
	prune := func(f *fixture) {
		t.Helper()
		rt := &audit.Retention{Source: f.s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: f.cp.Signer, Keep: keep, Now: now}
		if n, err := rt.Prune(ctx); err != nil || n != 9 {
			t.Fatalf("Prune = %d, %v; want 9", n, err)
		}
		if n, err := rt.Prune(ctx); err != nil || n != 0 {
			t.Fatalf("second Prune = %d, %v; want 0", n, err)
		}
		f.opts.Retention, f.opts.Now = keep, now
	}

	f := newFixture(t)
	prune(f)
	if r := f.verify(t); len(r.Problems) > 0 || r.Size != 20 || r.Checked != 10 || r.Unanchored != 0 {
		t.Fatalf("after pruning: %+v", r)
	}
	f.opts.Incremental = true
	if r := f.verify(t); len(r.Problems) > 0 {
		t.Fatalf("incremental after pruning: %+v", r)
	}
	f.opts.Incremental = false

	// Tampering after the floor is still found.
	e := f.entry(t, 12)
	e.Record.Org = "evil"
	b, h := encode(t, e)
	f.exec(t, `DROP TRIGGER IF EXISTS audit_records_no_update`)
	f.exec(t, `UPDATE audit_records SET body = ?, hash = ? WHERE seq = 12`, b, h)
	if r := f.verify(t); len(r.Problems) == 0 {
		t.Fatal("edit after pruning not found")
	}

	// Deleting recent entries dressed up as retention is found: the
	// boundary is within retention.
	f = newFixture(t)
	f.opts.Retention, f.opts.Now = keep, now
	f.exec(t, `INSERT INTO audit_prune (log, before) VALUES ('main', 20)`) // a checkpoint at 20 exists
	f.exec(t, `DELETE FROM audit_records WHERE seq < 19`)
	if r := f.verify(t); !strings.Contains(strings.Join(r.Problems, "\n"), "deleted early") {
		t.Fatalf("early deletion: %+v", r)
	}
	// ... and a floor without its checkpoint is found too.
	f = newFixture(t)
	f.exec(t, `INSERT INTO audit_prune (log, before) VALUES ('main', 7)`)
	f.exec(t, `DELETE FROM audit_records WHERE seq < 6`)
	if r := f.verify(t); !strings.Contains(strings.Join(r.Problems, "\n"), "checkpoint kept at the prune floor is missing") {
		t.Fatalf("floor without checkpoint: %+v", r)
	}
}

// overwritingAnchor is a naive sink (a plain object store, a careless
// witness) that accepts any checkpoint, smaller ones included.
type overwritingAnchor struct{ latest map[string][]byte }

var _ audit.Anchor = (*overwritingAnchor)(nil)

func (a *overwritingAnchor) Put(_ context.Context, origin string, _ int64, signed []byte) error {
	a.latest[origin] = append([]byte(nil), signed...)
	return nil
}

func (a *overwritingAnchor) Latest(_ context.Context, origin string) ([]byte, error) {
	return a.latest[origin], nil
}

// TestCheckpointerRefusesRollbackOnAnySink: after the newest rows are
// deleted (truncation), the checkpointer must not anchor the shorter tree,
// even on a sink that would accept it; the anchor keeps the evidence.
func TestCheckpointerRefusesRollbackOnAnySink(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	naive := &overwritingAnchor{latest: map[string][]byte{}}
	orig := audit.Origin(origin, "main")
	held, err := f.anchor.Latest(ctx, orig)
	if err != nil || held == nil {
		t.Fatalf("fixture anchor: %v", err)
	}
	naive.latest[orig] = held // the naive sink holds the 20-entry checkpoint
	last := f.entry(t, 9)
	_, h := encode(t, last)
	f.exec(t, `DELETE FROM audit_records WHERE seq >= 10`)
	f.exec(t, `DELETE FROM audit_index WHERE seq >= 10`)
	f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, 10))
	f.exec(t, `DELETE FROM audit_checkpoints`)
	f.exec(t, `UPDATE audit_heads SET size = 10, hash = ?`, h)
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: orig, Signer: f.cp.Signer, Anchors: []audit.Anchor{naive}}
	if _, err := cp.Checkpoint(ctx, true); !errors.Is(err, audit.ErrAnchorRollback) {
		t.Fatalf("Checkpoint of a truncated log = %v, want ErrAnchorRollback", err)
	}
	if string(naive.latest[orig]) != string(held) {
		t.Fatal("the naive sink's evidence was replaced by a smaller tree")
	}
}

// TestVerifyFindsRowsOutsideTheChain: rows no head covers (past a log's
// head, or of a log with no head row at all) are not indexed, but they sit
// in the trail, so verify must report them instead of stopping at the head.
func TestVerifyFindsRowsOutsideTheChain(t *testing.T) {
	forge := func(t *testing.T, f *fixture, log string, seq int64, prev [audit.HashSize]byte) {
		r := audittest.Sample(int(seq))
		r.Org = "forged"
		b, h := encode(t, audit.Entry{Log: log, Seq: seq, PrevHash: prev, Record: r})
		f.exec(t, `INSERT INTO audit_records (log, seq, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket, body, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, log, seq, audit.TimeKey(r.Time), string(r.Outcome), r.Org, r.Principal,
			r.JobID, r.TaskID, r.AccessKeyID, r.Bucket, b, h)
		// The indexer indexes only what a head covers: queries never show
		// the forged row (verify still must report it).
		if p, err := f.s.Query(context.Background(), audit.Filter{Org: "forged"}); err != nil || len(p.Records) != 0 {
			t.Fatalf("the forged row is found by a query: %+v, %v", p, err)
		}
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture)
		want   string
	}{
		{"a row past the head", func(t *testing.T, f *fixture) {
			last, _ := f.s.Body(context.Background(), "main", 19)
			forge(t, f, "main", 20, audit.ChainHash(last))
		}, "entry 20 is stored past the head"},
		{"a log without a head", func(t *testing.T, f *fixture) {
			forge(t, f, "ghost", 0, [audit.HashSize]byte{})
		}, "entry 0 is stored past the head"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.tamper(t, f)
			rep, err := audit.Verify(context.Background(), f.s, f.opts)
			if err != nil {
				t.Fatal(err)
			}
			var problems []string
			for _, l := range rep.Logs {
				problems = append(problems, l.Problems...)
			}
			if !rep.Tampered() || !strings.Contains(strings.Join(problems, "\n"), c.want) {
				t.Fatalf("problems %q\ndo not mention %q (report %+v)", problems, c.want, rep)
			}
		})
	}
}

// TestVerifyChecksAnchorsBelowThePruneFloor: a log rewritten from its first
// entry, then pruned past the anchored size (the dispenser's retention signs
// whatever tree the database holds), must still fail against the anchored
// checkpoint: the stored tree is checked to extend it.
func TestVerifyChecksAnchorsBelowThePruneFloor(t *testing.T) {
	ctx := context.Background()
	for _, incremental := range []bool{false, true} {
		f := newFixture(t) // anchored at 20
		f.exec(t, `DELETE FROM audit_records`)
		f.exec(t, `DELETE FROM audit_index`)
		f.exec(t, `DELETE FROM audit_hashes`)
		f.exec(t, `DELETE FROM audit_checkpoints`)
		f.exec(t, `DELETE FROM audit_heads`)
		var recs []audit.Record
		for i := 0; i < 30; i++ {
			r := audittest.Sample(i)
			r.Principal = "someone-else"
			recs = append(recs, r)
		}
		if _, err := f.s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
		keep := time.Hour
		now := func() time.Time { return audittest.T0.Add(keep + 25*time.Second) } // cutoff: entry 25
		rt := &audit.Retention{Source: f.s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: f.cp.Signer, Keep: keep, Now: now}
		if n, err := rt.Prune(ctx); err != nil || n != 24 {
			t.Fatalf("Prune = %d, %v; want 24", n, err)
		}
		f.opts.Incremental = incremental
		r := f.verify(t)
		if !strings.Contains(strings.Join(r.Problems, "\n"), "first 20 entries do not match the anchored checkpoint") {
			t.Fatalf("incremental=%v: rewritten log pruned past the anchor: %+v", incremental, r)
		}
	}
}

// TestNoSignedCheckpointOfAFork: the checkpointer must not sign (and store)
// a checkpoint of a log that forks from an anchored one, or a receipt for a
// forged record would verify offline with the real key.
func TestNoSignedCheckpointOfAFork(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	forkAt10(t, f)
	cp := &audit.Checkpointer{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors}
	svc := &audit.Service{Trail: f.s, Checkpointer: cp, OriginBase: origin}
	if rc, err := svc.Receipt(ctx, "main:12"); err == nil {
		if audit.VerifyReceipt(rc, f.opts.Verifier) == nil {
			t.Fatal("a receipt for a forged record verifies with the real key")
		}
	}
	if b, err := f.s.LatestCheckpoint(ctx, "main"); err != nil || b != nil {
		t.Fatalf("a checkpoint of the forked log was stored: %q, %v", b, err)
	}
}

// TestRetentionDoesNotTrustTheIndex: retention finds the prune floor with
// the query index, which is derived data anyone with the file can edit; an
// edited index must not make the dispenser delete entries within retention.
func TestRetentionDoesNotTrustTheIndex(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.exec(t, `UPDATE audit_index SET time_ns = 0`) // every entry looks ancient
	keep := time.Hour
	now := func() time.Time { return audittest.T0.Add(keep + 5*time.Second) } // cutoff: entry 5
	rt := &audit.Retention{Source: f.s, Log: "main", Origin: audit.Origin(origin, "main"), Signer: f.cp.Signer, Keep: keep, Now: now}
	n, err := rt.Prune(ctx)
	if n != 0 || err == nil {
		t.Fatalf("Prune with an edited index = %d, %v; want nothing deleted and an error", n, err)
	}
	if b, err := f.s.Body(ctx, "main", 5); err != nil || b == nil {
		t.Fatalf("entry 5 (within retention) is gone: %v", err)
	}
}

// forgeRootNode appends entries 20..31 and replaces the one stored Merkle
// node the size-32 root is read from, leaving every node the anchored
// size-20 tree hash reads intact: the kind of edit that comparing the
// tree hash at the anchored size cannot see.
func forgeRootNode(t *testing.T, f *fixture) {
	t.Helper()
	f.append(t, 20, 12)
	forged := make([]byte, 32)
	if _, err := rand.Read(forged); err != nil {
		t.Fatal(err)
	}
	f.exec(t, `UPDATE audit_hashes SET hash = ? WHERE log = 'main' AND idx = ?`, forged, tlog.StoredHashIndex(5, 0))
}

// TestNoSignedCheckpointOfAForgedLargerTree: the checkpointer proves that
// the tree it signs extends the anchored one (a consistency proof against
// the anchored root), so it refuses a root that does not.
func TestNoSignedCheckpointOfAForgedLargerTree(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	forgeRootNode(t, f)
	_, err := f.cp.Checkpoint(ctx, true)
	if !errors.Is(err, audit.ErrAnchorFork) {
		t.Fatalf("Checkpoint over a forged root = %v, want ErrAnchorFork", err)
	}
	if b, err := f.s.CheckpointAt(ctx, "main", 32); err != nil || b != nil {
		t.Fatalf("a checkpoint of the forged tree was stored: %q, %v", b, err)
	}
}

// TestRetentionChecksTheAnchors: retention signs a checkpoint at the new
// prune floor; it first proves that tree and the anchored one are one
// history, so it never signs (or prunes under) a rewritten log.
func TestRetentionChecksTheAnchors(t *testing.T) {
	ctx := context.Background()
	keep := time.Hour
	now := func() time.Time { return audittest.T0.Add(keep + 25*time.Second) } // cutoff past entry 24
	t.Run("consistent", func(t *testing.T) {
		f := newFixture(t)
		f.append(t, 20, 12)
		rt := &audit.Retention{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors, Keep: keep, Now: now}
		if n, err := rt.Prune(ctx); err != nil || n == 0 {
			t.Fatalf("Prune = %d, %v; want entries pruned", n, err)
		}
	})
	t.Run("forged", func(t *testing.T) {
		f := newFixture(t)
		f.append(t, 20, 12)
		// The floor's tree (size 24 or 25) reads the level-3 node over
		// 16..23; forge it and the nodes below stay as they were.
		forged := make([]byte, 32)
		if _, err := rand.Read(forged); err != nil {
			t.Fatal(err)
		}
		f.exec(t, `UPDATE audit_hashes SET hash = ? WHERE log = 'main' AND idx = ?`, forged, tlog.StoredHashIndex(3, 2))
		rt := &audit.Retention{Source: f.s, Log: "main", Origin: f.cp.Origin, Signer: f.cp.Signer, Anchors: f.cp.Anchors, Keep: keep, Now: now}
		n, err := rt.Prune(ctx)
		if n != 0 || !errors.Is(err, audit.ErrAnchorFork) {
			t.Fatalf("Prune over a forged tree = %d, %v; want nothing pruned and ErrAnchorFork", n, err)
		}
		if b, err := f.s.LatestCheckpoint(ctx, "main"); err != nil || b == nil {
			t.Fatal(err)
		} else if size, _, err := audit.OpenCheckpoint(b, f.cp.Origin, f.opts.Verifier); err != nil || size != 20 {
			t.Fatalf("newest stored checkpoint has size %d (%v); want the anchored 20, nothing signed over the forgery", size, err)
		}
	})
}

// forkAt10 rewrites the fixture's log from entry 10 on (the anchored
// checkpoint covers 20): entries 10..19 are dropped with their Merkle
// nodes and checkpoints, the head is set back, and 15 different entries
// are appended through the store, so the log forks from the anchor.
func forkAt10(t *testing.T, f *fixture) {
	t.Helper()
	last := f.entry(t, 9)
	_, h := encode(t, last)
	f.exec(t, `DELETE FROM audit_records WHERE seq >= 10`)
	f.exec(t, `DELETE FROM audit_index WHERE seq >= 10`)
	f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, 10))
	f.exec(t, `DELETE FROM audit_checkpoints`)
	f.exec(t, `UPDATE audit_heads SET size = 10, hash = ?`, h)
	var recs []audit.Record
	for i := 10; i < 25; i++ {
		r := audittest.Sample(i)
		r.Principal = "someone-else"
		recs = append(recs, r)
	}
	if _, err := f.s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}
