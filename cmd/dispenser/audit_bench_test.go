package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/api"
)

// BenchmarkIssuance runs the full issuance path (JWT authentication, scope,
// mock vendor, response) with 64 concurrent callers, with the audit trail
// off and on (SQLite, durable before each response), side by side in one
// run. Target: on >= 0.8x off.
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
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"audit=off", off.Handler()}, {"audit=sqlite", a.server.Handler()}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("GET", "/credentials?operation=get&location=s3://media/acme/in/&task_id=bench", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					c.h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d: %s", rec.Code, rec.Body.String())
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
			if c.name != "audit=off" {
				var m dto.Metric
				if err := a.metrics.AuditBatchSize.Write(&m); err == nil && m.Histogram.GetSampleCount() > 0 {
					b.ReportMetric(m.Histogram.GetSampleSum()/float64(m.Histogram.GetSampleCount()), "records/commit")
				}
			}
		})
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }
