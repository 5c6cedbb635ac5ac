package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

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
	off := api.New(api.Options{Authenticator: chain, Rules: a.server.Rules(), Vendor: a.vendor,
		MinRemaining: cfg.Server.MinRemaining.D(), ReplicaID: cfg.Server.ReplicaID}) // nil Recorder: no audit
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
		})
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }
