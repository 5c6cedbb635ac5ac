package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// BenchmarkDurableRecords64 measures durable records per second with 64
// concurrent writers group-committing into one SQLite file (WAL,
// synchronous=FULL). Target: >= 10,000 records/s. records/s counts until
// the last record is durable; indexed-records/s until the query index has
// caught up with it too.
func BenchmarkDurableRecords64(b *testing.B) {
	for _, wait := range []time.Duration{0, 500 * time.Microsecond} {
		b.Run("batch_wait="+wait.String(), func(b *testing.B) { benchDurable(b, wait) })
	}
}

func benchDurable(b *testing.B, wait time.Duration) {
	s, err := Open(context.Background(), Options{Path: filepath.Join(b.TempDir(), "audit.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := audit.NewWriter(s, audit.WriterOptions{MaxWait: wait})
	defer w.Close()
	rec := audittest.Sample(1)
	b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	t0 := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// Announced, as the API announces each request's record.
			if err := w.Expect().Record(context.Background(), rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	durable := time.Since(t0)
	// The query index is built off the commit path; counting the time to
	// catch it up gives the sustained rate.
	if err := s.CatchUp(context.Background()); err != nil {
		b.Fatal(err)
	}
	indexed := time.Since(t0)
	b.ReportMetric(float64(b.N)/durable.Seconds(), "records/s")
	b.ReportMetric(float64(b.N)/indexed.Seconds(), "indexed-records/s")
}

// BenchmarkCheckpointCadence measures what checkpointing costs durable
// records: rounds of 20,000 records from 64 writers alternate between
// three stores, each with its own file and anchor directory, that differ
// only in their checkpointer: none, the previous default (every 1s while
// records arrive) and the default (200ms or 1,024 records). records/s is
// per variant; the ratios compare each cadence with no checkpointer.
func BenchmarkCheckpointCadence(b *testing.B) {
	type variant struct {
		name string
		cp   *audit.Checkpointer
		s    *Store
		w    *audit.Writer
		wall time.Duration
	}
	dir := b.TempDir()
	keyFile := filepath.Join(dir, "key")
	if _, err := audit.GenerateKey(keyFile, "bench"); err != nil {
		b.Fatal(err)
	}
	signer, _, err := audit.LoadSigner(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	vs := []*variant{{name: "none"}, {name: "1s", cp: &audit.Checkpointer{Interval: time.Second, MaxRecords: -1}},
		{name: "200ms-or-1024", cp: &audit.Checkpointer{}}}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() { cancel(); running.Wait() }()
	for _, v := range vs {
		v.s, err = Open(ctx, Options{Path: filepath.Join(dir, v.name+".db")})
		if err != nil {
			b.Fatal(err)
		}
		defer v.s.Close()
		v.w = audit.NewWriter(v.s, audit.WriterOptions{MaxWait: 2 * time.Millisecond})
		defer v.w.Close()
		if v.cp == nil {
			continue
		}
		v.cp.Source, v.cp.Log, v.cp.Origin, v.cp.Signer = v.s, "main", audit.Origin("bench", "main"), signer
		v.cp.Anchors = []audit.Anchor{&audit.DirAnchor{Dir: filepath.Join(dir, v.name+".anchors")}}
		if _, err := v.cp.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		running.Add(1)
		go func(cp *audit.Checkpointer) { defer running.Done(); cp.Run(ctx) }(v.cp)
	}
	rec := audittest.Sample(1)
	const round = 20000
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		for _, v := range vs {
			var next atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			for g := 0; g < 64; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= round {
						if err := v.w.Record(context.Background(), rec); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			v.wall += time.Since(t0)
		}
	}
	b.StopTimer()
	rounds := float64((b.N + round - 1) / round * round)
	for _, v := range vs {
		b.ReportMetric(rounds/v.wall.Seconds(), "records/s-"+v.name)
		if v.cp != nil {
			b.ReportMetric(vs[0].wall.Seconds()/v.wall.Seconds(), "ratio-"+v.name+"/none")
		}
	}
	b.ReportMetric(vs[1].wall.Seconds()/vs[2].wall.Seconds(), "ratio-200ms-or-1024/1s")
}

// BenchmarkVerify1M verifies a 1,000,000-entry log, in full and with
// --incremental, and reports entries verified per second. Building the log
// takes a minute or two; DISPENSER_BENCH_VERIFY_DB names a file to keep it
// in between runs (built when missing).
//
//	go test ./internal/audit/sqlite -run XXX -bench Verify1M -benchtime 3x
func BenchmarkVerify1M(b *testing.B) {
	const size = 1_000_000
	ctx := context.Background()
	path := os.Getenv("DISPENSER_BENCH_VERIFY_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "audit.db")
	}
	keyFile := path + ".checkpoint-key"
	if _, err := os.Stat(keyFile); err != nil {
		if _, err := audit.GenerateKey(keyFile, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	signer, vkey, err := audit.LoadSigner(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	v, _ := note.NewVerifier(vkey)
	anchor := &audit.DirAnchor{Dir: path + ".anchors"}
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	cp := &audit.Checkpointer{Source: s, Log: "main", Origin: audit.Origin("bench", "main"), Signer: signer, Anchors: []audit.Anchor{anchor}}
	if _, err := cp.Resume(ctx); err != nil {
		b.Fatal(err)
	}
	h, err := s.Head(ctx, "main")
	if err != nil {
		b.Fatal(err)
	}
	for n := h.Size; n < size; {
		k := min(int64(2000), size-n)
		recs := make([]audit.Record, k)
		for i := range recs {
			recs[i] = audittest.Sample(int(n) + i)
		}
		if _, err := s.Append(ctx, recs); err != nil {
			b.Fatal(err)
		}
		n += k
	}
	if err := s.CatchUp(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := cp.Checkpoint(ctx, false); err != nil {
		b.Fatal(err)
	}
	// 1,000 entries after the anchored checkpoint: what --incremental
	// re-hashes.
	if h, _ := s.Head(ctx, "main"); h.Size == size {
		recs := make([]audit.Record, 1000)
		for i := range recs {
			recs[i] = audittest.Sample(size + i)
		}
		if _, err := s.Append(ctx, recs); err != nil {
			b.Fatal(err)
		}
		if err := s.CatchUp(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	ro, err := Open(ctx, Options{Path: path, ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer ro.Close()
	for _, incremental := range []bool{false, true} {
		b.Run(fmt.Sprintf("incremental=%v", incremental), func(b *testing.B) {
			var checked int64
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			for i := 0; i < b.N; i++ {
				rep, err := audit.Verify(ctx, ro, audit.VerifyOptions{OriginBase: "bench", Verifier: v, Anchors: []audit.Anchor{anchor}, Incremental: incremental})
				if err != nil {
					b.Fatal(err)
				}
				if rep.Tampered() || len(rep.Logs) != 1 {
					b.Fatalf("report %+v", rep)
				}
				checked = rep.Logs[0].Size
			}
			b.ReportMetric(float64(checked)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/verify")
		})
	}
}
