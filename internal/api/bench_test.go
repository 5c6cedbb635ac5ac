package api

import (
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

// BenchmarkCredentials measures the whole handler path a worker's request
// takes: middleware, EdDSA JWT verification, scope decision and policy,
// mock vend, nop recorder, JSON response. Keys and rules are parsed once in
// newHarness, never per request.
func BenchmarkCredentials(b *testing.B) {
	h := newHarness(b, func(o *Options) {
		o.Logger = zap.NewNop()
		o.Recorder = nil // nop
		o.Vendor = vend.Router{"default": &mock.Vendor{}}
	})
	tok := "Bearer " + h.token("worker-1", "acme", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest("GET", okQuery, nil)
		r.Header.Set("Authorization", tok)
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkCredentialsProductionLog is BenchmarkCredentials with the
// production logger (JSON at info, zap's default sampling: 100 lines a
// second per message, then one in 100) writing to io.Discard, so the cost
// of the per-request log lines is counted.
func BenchmarkCredentialsProductionLog(b *testing.B) {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel)
	log := zap.New(zapcore.NewSamplerWithOptions(core, time.Second, 100, 100))
	h := newHarness(b, func(o *Options) {
		o.Logger = log
		o.Recorder = nil // nop
		o.Vendor = vend.Router{"default": &mock.Vendor{}}
	})
	tok := "Bearer " + h.token("worker-1", "acme", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest("GET", okQuery, nil)
		r.Header.Set("Authorization", tok)
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkCredentialsDryRun is the same path without vending, so the ratio
// to BenchmarkCredentials shows the mock backend's share.
func BenchmarkCredentialsDryRun(b *testing.B) {
	h := newHarness(b, func(o *Options) { o.Logger = zap.NewNop(); o.Recorder = nil })
	tok := "Bearer " + h.token("worker-1", "acme", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest("GET", okQuery+"&dry_run=true", nil)
		r.Header.Set("Authorization", tok)
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkHealthz is the router and middleware alone, the floor under both.
func BenchmarkHealthz(b *testing.B) {
	h := newHarness(b, func(o *Options) { o.Logger = zap.NewNop() })
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	}
}
