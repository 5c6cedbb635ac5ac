// Package audittest is the contract every audit store passes: the SQLite
// and PostgreSQL adapters run the same suite against a real database.
package audittest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/audit"
)

// Open returns a fresh, empty store for one test; the test closes it.
type Open func(t *testing.T) audit.Trail

// T0 is the time of the first sample record.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Sample returns a record with every field set, varied by i.
func Sample(i int) audit.Record {
	orgs := []string{"acme", "globex", "initech"}
	outcomes := []audit.Outcome{audit.Issued, audit.Issued, audit.Denied, audit.Failed}
	r := audit.Record{
		Time: T0.Add(time.Duration(i) * time.Second), RequestID: fmt.Sprintf("req-%d", i),
		Outcome: outcomes[i%len(outcomes)], Principal: fmt.Sprintf("worker-%d", i%5), AuthMethod: "jwt",
		Org: orgs[i%len(orgs)], JobID: fmt.Sprintf("job-%d", i%7), TaskID: fmt.Sprintf("task-%d", i),
		Operation: "get", Bucket: []string{"media", "archive"}[i%2], Prefix: "acme/x/", FileCount: i % 3,
		RoleARN: "arn:aws:iam::111122223333:role/r", Backend: "default", SessionName: fmt.Sprintf("s-%d", i),
		SourceIdentity: "worker", Duration: time.Hour, PolicySHA256: "ab", Policy: `{"Version":"2012-10-17"}`,
		PackedPolicySize: -1, ClientAddr: "127.0.0.1", UserAgent: "ua", Latency: time.Millisecond, ReplicaID: "r1",
	}
	if r.Outcome == audit.Issued {
		r.AccessKeyID = fmt.Sprintf("ASIAKEY%06d", i)
		r.Expiration = r.Time.Add(time.Hour)
	} else {
		r.Reason = "denied_reason"
	}
	return r
}

// Run runs the contract against stores from open.
func Run(t *testing.T, open Open) {
	t.Run("AppendChainsAndStoresVerbatim", func(t *testing.T) { testAppend(t, open(t)) })
	t.Run("GroupCommitConcurrent", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("MerkleTree", func(t *testing.T) { testMerkle(t, open(t)) })
	t.Run("Query", func(t *testing.T) { testQuery(t, open(t)) })
	t.Run("Checkpoints", func(t *testing.T) { testCheckpoints(t, open(t)) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open(t)) })
}

func appendN(t *testing.T, s audit.Store, from, n int) []audit.Entry {
	t.Helper()
	var recs []audit.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, Sample(i))
	}
	es, err := s.Append(context.Background(), recs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return es
}

func testAppend(t *testing.T, s audit.Trail) {
	ctx := context.Background()
	es := appendN(t, s, 0, 3)
	es = append(es, appendN(t, s, 3, 2)...)
	logs, err := s.Logs(ctx)
	if err != nil || len(logs) != 1 {
		t.Fatalf("Logs = %v, %v; want one log", logs, err)
	}
	log := logs[0]
	var prev [audit.HashSize]byte
	for i, e := range es {
		if e.Seq != int64(i) || e.Log != log || e.PrevHash != prev || e.Record.ID != audit.EntryID(log, int64(i)) {
			t.Fatalf("entry %d: seq %d log %s id %s prev ok=%v", i, e.Seq, e.Log, e.Record.ID, e.PrevHash == prev)
		}
		body, err := s.Body(ctx, log, e.Seq)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := audit.Encode(e)
		if string(body) != string(want) {
			t.Fatalf("entry %d: stored body differs from its encoding", i)
		}
		got, err := audit.Decode(body)
		if err != nil {
			t.Fatal(err)
		}
		exp := Sample(i)
		exp.ID = e.Record.ID
		if got.Record != exp {
			t.Fatalf("entry %d round trip:\n got %+v\nwant %+v", i, got.Record, exp)
		}
		prev = audit.ChainHash(body)
	}
	h, err := s.Head(ctx, log)
	if err != nil || h.Size != 5 || h.Hash != prev {
		t.Fatalf("Head = %+v, %v; want size 5 and the last chain hash", h, err)
	}
	if _, err := s.Body(ctx, log, 99); err != audit.ErrNotFound {
		t.Fatalf("Body(missing) = %v, want ErrNotFound", err)
	}
	var seqs []int64
	if err := s.Scan(ctx, log, 2, func(r audit.Row) error { seqs = append(seqs, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[2 3 4]" {
		t.Fatalf("Scan from 2 = %v", seqs)
	}
}

func testConcurrent(t *testing.T, s audit.Trail) {
	w := audit.NewWriter(s, audit.WriterOptions{BatchSize: 16})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- w.Record(context.Background(), Sample(i))
		}(i)
	}
	wg.Wait()
	_ = w.Close()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	ctx := context.Background()
	logs, _ := s.Logs(ctx)
	var reqs []string
	next := int64(0)
	if err := s.Scan(ctx, logs[0], 0, func(row audit.Row) error {
		seq, body := row.Seq, row.Body
		if seq != next {
			return fmt.Errorf("seq %d, want %d", seq, next)
		}
		next++
		e, err := audit.Decode(body)
		reqs = append(reqs, e.Record.RequestID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(reqs)
	if len(reqs) != n {
		t.Fatalf("%d records stored, want %d", len(reqs), n)
	}
	for i := 1; i < n; i++ {
		if reqs[i] == reqs[i-1] {
			t.Fatalf("request %s stored twice", reqs[i])
		}
	}
	if err := w.Record(ctx, Sample(0)); err != audit.ErrClosed {
		t.Fatalf("Record after Close = %v, want ErrClosed", err)
	}
}

func testMerkle(t *testing.T, s audit.Trail) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 5, 13} {
		appendN(t, s, 0, n)
	}
	logs, _ := s.Logs(ctx)
	log := logs[0]
	// Recompute the tree from the stored bodies alone, in memory.
	var mem []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	var size int64
	if err := s.Scan(ctx, log, 0, func(row audit.Row) error {
		seq, body := row.Seq, row.Body
		hs, err := tlog.StoredHashes(seq, body, r)
		mem = append(mem, hs...)
		size = seq + 1
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stored := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, log, idx) })
	for _, n := range []int64{1, 3, 8, size} {
		want, _ := tlog.TreeHash(n, r)
		got, err := tlog.TreeHash(n, stored)
		if err != nil || got != want {
			t.Fatalf("tree hash at %d: %v, %v; want %v", n, got, err, want)
		}
	}
	// Every stored node, read as a range, in index order, as recomputed.
	got, err := s.ReadHashRange(ctx, log, 0, 1<<62)
	if err != nil || int64(len(got)) != tlog.StoredHashCount(size) {
		t.Fatalf("ReadHashRange(all) = %d hashes, %v; want %d", len(got), err, tlog.StoredHashCount(size))
	}
	for i, h := range got {
		if h.Index != int64(i) || h.Hash != mem[i] {
			t.Fatalf("ReadHashRange: hash %d is %d/%v, want %d/%v", i, h.Index, h.Hash, i, mem[i])
		}
	}
	if part, err := s.ReadHashRange(ctx, log, 3, 7); err != nil || len(part) != 4 || part[0].Index != 3 || part[3].Hash != mem[6] {
		t.Fatalf("ReadHashRange(3, 7) = %+v, %v", part, err)
	}
	for _, full := range []bool{true, false} {
		if err := s.Strays(ctx, full, func(st audit.Stray) error { return fmt.Errorf("stray in an untouched store: %+v", st) }); err != nil {
			t.Fatal(err)
		}
	}
	th, _ := tlog.TreeHash(size, stored)
	p, err := tlog.ProveRecord(size, 4, stored)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := s.Body(ctx, log, 4)
	if err := tlog.CheckRecord(p, size, th, 4, tlog.RecordHash(body)); err != nil {
		t.Fatalf("inclusion proof from stored hashes: %v", err)
	}
}

// testQuery checks every filter, pagination, the order of records of one
// instant, and the refusal of bad filters.
func testQuery(t *testing.T, s audit.Trail) {
	const n = 40
	all := appendN(t, s, 0, n)
	// match lists, newest first, the ids of the records keep keeps.
	match := func(keep func(audit.Record) bool) []string {
		var ids []string
		for i := len(all) - 1; i >= 0; i-- {
			if keep(all[i].Record) {
				ids = append(ids, all[i].Record.ID)
			}
		}
		return ids
	}
	testQueryFilters(t, s, match)
	testQueryPages(t, s, n, match(func(audit.Record) bool { return true }))
	testQueryTieBreak(t, s)
	ctx := context.Background()
	for _, f := range []audit.Filter{{Limit: 1001}, {Limit: -1}, {Cursor: "!!"}, {Outcome: "maybe"}, {Since: T0, Until: T0}} {
		if _, err := s.Query(ctx, f); err == nil {
			t.Fatalf("Query(%+v) accepted", f)
		}
	}
}

// testQueryFilters checks each filter against match.
func testQueryFilters(t *testing.T, s audit.Trail, match func(keep func(audit.Record) bool) []string) {
	ctx := context.Background()
	cases := []struct {
		name string
		f    audit.Filter
		keep func(audit.Record) bool
	}{
		{"all", audit.Filter{Limit: 1000}, func(audit.Record) bool { return true }},
		{"org", audit.Filter{Org: "globex"}, func(r audit.Record) bool { return r.Org == "globex" }},
		{"principal", audit.Filter{Principal: "worker-3"}, func(r audit.Record) bool { return r.Principal == "worker-3" }},
		{"job", audit.Filter{JobID: "job-2"}, func(r audit.Record) bool { return r.JobID == "job-2" }},
		{"task", audit.Filter{TaskID: "task-17"}, func(r audit.Record) bool { return r.TaskID == "task-17" }},
		{"access key", audit.Filter{AccessKeyID: "ASIAKEY000005"}, func(r audit.Record) bool { return r.AccessKeyID == "ASIAKEY000005" }},
		{"outcome", audit.Filter{Outcome: audit.Denied}, func(r audit.Record) bool { return r.Outcome == audit.Denied }},
		{"bucket", audit.Filter{Bucket: "archive"}, func(r audit.Record) bool { return r.Bucket == "archive" }},
		{"since", audit.Filter{Since: T0.Add(30 * time.Second)}, func(r audit.Record) bool { return !r.Time.Before(T0.Add(30 * time.Second)) }},
		{"until", audit.Filter{Until: T0.Add(5 * time.Second)}, func(r audit.Record) bool { return r.Time.Before(T0.Add(5 * time.Second)) }},
		{"since+until+org", audit.Filter{Org: "acme", Since: T0.Add(10 * time.Second), Until: T0.Add(20 * time.Second)}, func(r audit.Record) bool {
			return r.Org == "acme" && !r.Time.Before(T0.Add(10*time.Second)) && r.Time.Before(T0.Add(20*time.Second))
		}},
		{"no match", audit.Filter{Org: "nobody"}, func(audit.Record) bool { return false }},
		// Times outside int64 nanoseconds (before 1678, after 2262) are
		// valid RFC 3339 bounds and must not wrap around.
		{"since long ago", audit.Filter{Limit: 1000, Since: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}, func(audit.Record) bool { return true }},
		{"until far ahead", audit.Filter{Limit: 1000, Until: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}, func(audit.Record) bool { return true }},
		{"since far ahead", audit.Filter{Since: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, func(audit.Record) bool { return false }},
		{"until long ago", audit.Filter{Until: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}, func(audit.Record) bool { return false }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := s.Query(ctx, c.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range p.Records {
				got = append(got, r.ID)
			}
			if want := match(c.keep); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
			if p.Next != "" {
				t.Fatalf("unexpected next cursor")
			}
		})
	}
}

// testQueryPages pages through the n records (want, newest first) with
// several limits.
func testQueryPages(t *testing.T, s audit.Trail, n int, want []string) {
	ctx := context.Background()
	for _, limit := range []int{1, 3, 7, 10, 39, 40} {
		t.Run(fmt.Sprintf("pages of %d", limit), func(t *testing.T) {
			var got []string
			f := audit.Filter{Limit: limit}
			for pages := 0; ; pages++ {
				if pages > n {
					t.Fatal("pagination does not end")
				}
				p, err := s.Query(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Records) > limit {
					t.Fatalf("page of %d records, limit %d", len(p.Records), limit)
				}
				for _, r := range p.Records {
					got = append(got, r.ID)
				}
				if p.Next == "" {
					break
				}
				f.Cursor = p.Next
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("paged %v\nwant %v", got, want)
			}
		})
	}
}

// testQueryTieBreak pages through records of one instant: newest (highest
// sequence) first, none lost or repeated at page ends.
func testQueryTieBreak(t *testing.T, s audit.Trail) {
	ctx := context.Background()
	t.Run("same time tie break", func(t *testing.T) {
		var recs []audit.Record
		for i := 0; i < 5; i++ {
			r := Sample(100 + i)
			r.Time, r.Org = T0.Add(-time.Hour), "tie"
			recs = append(recs, r)
		}
		if _, err := s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
		var got []string
		f := audit.Filter{Org: "tie", Limit: 2}
		for {
			p, err := s.Query(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				got = append(got, r.TaskID)
			}
			if p.Next == "" {
				break
			}
			f.Cursor = p.Next
		}
		if fmt.Sprint(got) != "[task-104 task-103 task-102 task-101 task-100]" {
			t.Fatalf("tie order %v", got)
		}
	})
}

func testCheckpoints(t *testing.T, s audit.Trail) {
	ctx := context.Background()
	appendN(t, s, 0, 2)
	logs, _ := s.Logs(ctx)
	if b, err := s.LatestCheckpoint(ctx, logs[0]); err != nil || b != nil {
		t.Fatalf("LatestCheckpoint on none = %q, %v", b, err)
	}
	for _, sz := range []int64{1, 2} {
		if err := s.PutCheckpoint(ctx, logs[0], sz, []byte(fmt.Sprintf("cp%d", sz))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutCheckpoint(ctx, logs[0], 2, []byte("cp2")); err != nil {
		t.Fatalf("PutCheckpoint is not idempotent: %v", err)
	}
	if b, err := s.LatestCheckpoint(ctx, logs[0]); err != nil || string(b) != "cp2" {
		t.Fatalf("LatestCheckpoint = %q, %v", b, err)
	}
	if b, err := s.CheckpointAt(ctx, logs[0], 1); err != nil || string(b) != "cp1" {
		t.Fatalf("CheckpointAt(1) = %q, %v", b, err)
	}
	if b, err := s.CheckpointAt(ctx, logs[0], 3); err != nil || b != nil {
		t.Fatalf("CheckpointAt(3) = %q, %v", b, err)
	}
}

func testPrune(t *testing.T, s audit.Trail) {
	ctx := context.Background()
	appendN(t, s, 0, 20)
	logs, _ := s.Logs(ctx)
	log := logs[0]
	for _, c := range []struct {
		t    time.Time
		want int64
	}{{T0.Add(-time.Hour), 0}, {T0.Add(10 * time.Second), 10}, {T0.Add(10*time.Second + 1), 11}, {T0.Add(time.Hour), 20}} {
		if got, err := s.FirstSeqSince(ctx, log, c.t); err != nil || got != c.want {
			t.Fatalf("FirstSeqSince(%s) = %d, %v; want %d", c.t, got, err, c.want)
		}
	}
	if n, err := s.PrunedBefore(ctx, log); err != nil || n != 0 {
		t.Fatalf("PrunedBefore on a fresh log = %d, %v", n, err)
	}
	if n, err := s.Prune(ctx, log, 10); err != nil || n != 9 {
		t.Fatalf("Prune(10) = %d, %v; want 9 deleted (0..8), the boundary 9 kept", n, err)
	}
	if n, err := s.PrunedBefore(ctx, log); err != nil || n != 10 {
		t.Fatalf("PrunedBefore = %d, %v", n, err)
	}
	if _, err := s.Body(ctx, log, 8); err != audit.ErrNotFound {
		t.Fatalf("entry 8 after pruning: %v", err)
	}
	if _, err := s.Body(ctx, log, 9); err != nil {
		t.Fatalf("boundary entry 9: %v", err)
	}
	// A lower floor never lowers it.
	if _, err := s.Prune(ctx, log, 5); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.PrunedBefore(ctx, log); n != 10 {
		t.Fatalf("floor lowered to %d", n)
	}
	p, err := s.Query(ctx, audit.Filter{Limit: 100})
	if err != nil || len(p.Records) != 11 {
		t.Fatalf("query after pruning: %d records, %v", len(p.Records), err)
	}
	// Appends continue after pruning.
	appendN(t, s, 20, 1)
	if h, _ := s.Head(ctx, log); h.Size != 21 {
		t.Fatalf("head after pruning and appending: %d", h.Size)
	}
}
