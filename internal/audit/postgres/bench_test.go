package postgres

import (
	"context"
	"runtime"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// BenchmarkDurableRecords64 measures durable records per second with 64
// concurrent writers group-committing into one PostgreSQL log.
func BenchmarkDurableRecords64(b *testing.B) {
	s, err := Open(context.Background(), Options{DSN: schemaDSNB(b), Log: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := audit.NewWriter(s, audit.WriterOptions{})
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
