package postgres

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// TestVerifyShards verifies every replica's log of a shared trail against
// its anchored checkpoint, and finds a row edited in one of them.
func TestVerifyShards(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
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
	anchor := &audit.DirAnchor{Dir: filepath.Join(dir, "anchors")}
	var reader *Store
	for i, log := range []string{"replica-a", "replica-b"} {
		s := openTemp(t, dsn, log)
		reader = s
		cp := &audit.Checkpointer{Source: s, Log: log, Origin: audit.Origin("test", log), Signer: signer, Anchors: []audit.Anchor{anchor}}
		if _, err := cp.Resume(ctx); err != nil { // the genesis checkpoint of each replica's log
			t.Fatal(err)
		}
		var recs []audit.Record
		for j := 0; j < 5+i; j++ {
			recs = append(recs, audittest.Sample(j))
		}
		if _, err := s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Checkpoint(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	opts := audit.VerifyOptions{OriginBase: "test", Verifier: v, Anchors: []audit.Anchor{anchor}}
	rep, err := audit.Verify(ctx, reader, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Logs) != 2 || rep.Tampered() || rep.UnanchoredTail() || rep.Logs[0].Size != 5 || rep.Logs[1].Size != 6 {
		t.Fatalf("clean shards: %+v", rep)
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// The table owner can switch the guard rails off: they are deterrents.
	if _, err := c.Exec(ctx, `ALTER TABLE audit_records DISABLE TRIGGER ALL;
		UPDATE audit_records SET body = set_byte(body, length(body) - 2, get_byte(body, length(body) - 2) # 1) WHERE log = 'replica-b' AND seq = 3`); err != nil {
		t.Fatal(err)
	}
	rep, err = audit.Verify(ctx, reader, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Logs[0].Problems != nil || !strings.Contains(strings.Join(rep.Logs[1].Problems, "\n"), "entry 3") {
		t.Fatalf("edited replica-b entry 3: %+v", rep)
	}
	// An edited query column leaves the entry intact but hides it from an
	// access key query: verify compares the copy with the entry's bytes.
	if _, err := c.Exec(ctx, `UPDATE audit_records SET access_key_id = 'ASIAOTHER' WHERE log = 'replica-a' AND seq = 1`); err != nil {
		t.Fatal(err)
	}
	rep, err = audit.Verify(ctx, reader, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(rep.Logs[0].Problems, "\n"), "entry 1: access_key_id of audit_records differ") {
		t.Fatalf("edited replica-a access_key_id column: %+v", rep)
	}
}

// TestVerifyFindsRowsOutsideTheChain: a forged shard (entries without a
// head row) and a row past a shard's head are shown by queries, so verify
// reports them.
func TestVerifyFindsRowsOutsideTheChain(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	s := openTemp(t, dsn, "replica-a")
	var recs []audit.Record
	for j := 0; j < 5; j++ {
		recs = append(recs, audittest.Sample(j))
	}
	entries, err := s.Append(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	last, _ := audit.Encode(entries[4])
	for _, e := range []audit.Entry{
		{Log: "replica-a", Seq: 5, PrevHash: audit.ChainHash(last), Record: audittest.Sample(5)},
		{Log: "ghost", Seq: 0, Record: audittest.Sample(6)},
	} {
		e.Record.Org = "forged"
		b, _ := audit.Encode(e)
		h := audit.ChainHash(b)
		r := e.Record
		if _, err := c.Exec(ctx, `INSERT INTO audit_records (log, seq, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket, body, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, e.Log, e.Seq, audit.TimeKey(r.Time), string(r.Outcome), r.Org,
			r.Principal, r.JobID, r.TaskID, r.AccessKeyID, r.Bucket, b, h[:]); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := s.Query(ctx, audit.Filter{Org: "forged"}); err != nil || len(p.Records) != 2 {
		t.Fatalf("forged rows by query: %+v, %v", p, err)
	}
	rep, err := audit.Verify(ctx, s, audit.VerifyOptions{OriginBase: "test"})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, l := range rep.Logs {
		all = append(all, l.Log+": "+strings.Join(l.Problems, "; "))
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{"ghost: entry 0 is stored past the head", "replica-a: entry 5 is stored past the head"} {
		if !strings.Contains(got, want) {
			t.Errorf("verify report\n%s\ndoes not mention %q", got, want)
		}
	}
}
