package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/api"
)

// BenchmarkIssuance runs the full issuance path (JWT authentication, rate
// limiter, scope, revocation check, mock vendor, response) with 64
// concurrent callers, with the audit trail off and on (SQLite, durable
// before each response). "side-by-side" alternates rounds of both in one
// run and reports on/off throughput (target >= 0.8) and CPU efficiency.
func BenchmarkIssuance(b *testing.B) {
	dir := b.TempDir()
	path := localConfig(&testing.T{}, dir)
	// The example's per-principal rate limit would throttle the benchmark;
	// a limit that never bites keeps the limiter on the path.
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	raw = []byte(strings.Replace(string(raw), "per_principal: {rate: 10, burst: 50}", "per_principal: {rate: 1000000000, burst: 1000000000}", 1))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	a, err := newApp(cfg, zapNop())
	if err != nil {
		b.Fatal(err)
	}
	defer a.close()
	if err := a.start(context.Background()); err != nil {
		b.Fatal(err)
	}
	chain, err := cfg.Auth.Build()
	if err != nil {
		b.Fatal(err)
	}
	// The same path as the app's handler (metrics, rate limiter, revocation
	// check) except for the nil Recorder: no audit.
	off := api.New(api.Options{Authenticator: chain, Rules: a.server.Rules(), Vendor: a.vendor,
		MinRemaining: cfg.Server.MinRemaining.D(), ReplicaID: cfg.Server.ReplicaID,
		Metrics: a.metrics, Limiter: a.limiter, Revocations: a.revocations})
	off.SetReady(true)
	var out, errb strings.Builder
	if run([]string{"token", "--config", path, "--subject", "worker-1", "--org", "acme", "--ttl", "10h"}, &out, &errb) != 0 {
		b.Fatal(errb.String())
	}
	tok := strings.TrimSpace(out.String())
	// issue serves n requests from 64 concurrent callers and returns the
	// wall time and the process CPU time they took.
	issue := func(b *testing.B, h http.Handler, n int) (wall, cpu time.Duration) {
		var next atomic.Int64
		var wg sync.WaitGroup
		c0, t0 := processCPU(), time.Now()
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					req := httptest.NewRequest("GET", "/credentials?operation=get&location=s3://media/acme/in/&task_id=bench", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d: %s", rec.Code, rec.Body.String())
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(t0), processCPU() - c0
	}
	commits := func() (n, recs float64) {
		var m dto.Metric
		if err := a.metrics.AuditBatchSize.Write(&m); err != nil {
			b.Fatal(err)
		}
		return float64(m.Histogram.GetSampleCount()), m.Histogram.GetSampleSum()
	}
	hs := map[string]http.Handler{"off": off.Handler(), "sqlite": a.server.Handler()}
	for _, name := range []string{"off", "sqlite"} {
		b.Run("audit="+name, func(b *testing.B) {
			n0, r0 := commits()
			b.ResetTimer()
			wall, cpu := issue(b, hs[name], b.N)
			b.ReportMetric(float64(b.N)/wall.Seconds(), "issuances/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/issuance")
			if n1, r1 := commits(); n1 > n0 {
				b.ReportMetric((r1-r0)/(n1-n0), "records/commit")
				b.ReportMetric(wall.Seconds()/(n1-n0)*1e6, "µs/commit-cycle")
				var m dto.Metric
				_ = a.metrics.AuditWriteLatency.Write(&m)
				b.ReportMetric(m.Histogram.GetSampleSum()/float64(m.Histogram.GetSampleCount())*1e6, "µs/append")
			}
		})
	}
	// Side by side: rounds of 1,000 requests alternate between the two
	// handlers, so a change in the machine's load hits both alike.
	// Each audit round ends with the query index caught up, so the
	// indexer's work is counted where it belongs (and not in the next
	// audit-off round, when the idle writer would let it run).
	catchUp := func() {}
	if cu, ok := a.trail.(interface{ CatchUp(context.Context) error }); ok {
		catchUp = func() {
			if err := cu.CatchUp(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("side-by-side", func(b *testing.B) {
		var wall, cpu [2]time.Duration
		for done := 0; done < b.N; done += 1000 {
			for i, name := range []string{"off", "sqlite"} {
				c0, t0 := processCPU(), time.Now()
				issue(b, hs[name], 1000)
				if name == "sqlite" {
					catchUp()
				}
				wall[i] += time.Since(t0)
				cpu[i] += processCPU() - c0
			}
		}
		b.ReportMetric(wall[0].Seconds()/wall[1].Seconds(), "on/off-throughput")
		b.ReportMetric(cpu[0].Seconds()/cpu[1].Seconds(), "on/off-cpu-efficiency")
	})
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func zapNop() *zap.Logger { return zap.NewNop() }
