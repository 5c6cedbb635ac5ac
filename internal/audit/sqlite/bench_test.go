package sqlite

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

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
