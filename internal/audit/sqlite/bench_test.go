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
// synchronous=FULL). Target: >= 10,000 records/s.
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
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := w.Record(context.Background(), rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
