package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/testenv"
)

// BenchmarkAllowLocalVsRedis measures one Allow (a principal and an org
// bucket, both with room) on the in-process limiter and on the shared Redis
// limiter (one Lua script round trip to the machine's Redis), side by side
// in one run, and reports the per-call cost of sharing as a ratio.
//
//	go test -run '^$' -bench AllowLocalVsRedis ./internal/ratelimit/
func BenchmarkAllowLocalVsRedis(b *testing.B) {
	addr := testenv.Redis(b)
	prefix := testenv.UniqueName("dispenser-bench:") + ":"
	b.Cleanup(func() { cleanupKeys(nil, addr, prefix) })
	// Limits far above what the loop can take: every call is allowed.
	cfg := Config{PerPrincipal: Limit{Rate: 1e9, Burst: 1 << 30}, PerOrg: Limit{Rate: 1e9, Burst: 1 << 30}}
	cfg.ApplyDefaults()
	local, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	rcfg := cfg
	rcfg.Redis = &RedisConfig{Addr: addr, KeyPrefix: prefix, Timeout: duration.Duration(time.Second)}
	rcfg.ApplyDefaults()
	shared, err := New(rcfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer shared.Close()
	ctx := context.Background()
	run := func(l *Limiter) time.Duration {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if err := l.Allow(ctx, "worker-1", "acme"); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	_ = shared.Allow(ctx, "worker-1", "acme") // connect and load the script
	b.ResetTimer()
	tl := run(local)
	tr := run(shared)
	b.StopTimer()
	if !shared.onRedis.Load() {
		b.Fatal("the shared limiter fell back to local: the Redis figures would be the local ones")
	}
	n := float64(b.N)
	b.ReportMetric(float64(tl.Nanoseconds())/n, "local-ns/call")
	b.ReportMetric(float64(tr.Nanoseconds())/n, "redis-ns/call")
	b.ReportMetric(float64(tr)/float64(tl), "redis/local")
}
