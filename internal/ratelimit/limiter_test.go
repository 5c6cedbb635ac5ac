package ratelimit

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/testenv"
	"github.com/vtk/dispenser/internal/validate"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) add(d time.Duration)     { c.t = c.t.Add(d) }
func lim(rate float64, burst int) *Limit { return &Limit{Rate: rate, Burst: burst} }

func newLocal(t *testing.T, cfg Config, c *clock) *Limiter {
	t.Helper()
	cfg.ApplyDefaults()
	l, err := New(cfg, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// allowN calls Allow n times and returns how many were allowed and the last error.
func allowN(l *Limiter, n int, principal, org string) (int, error) {
	ok := 0
	var last error
	for i := 0; i < n; i++ {
		if err := l.Allow(context.Background(), principal, org); err != nil {
			last = err
		} else {
			ok++
		}
	}
	return ok, last
}

func TestLocalBuckets(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		principal string
		org       string
		n         int
		wantOK    int
		wantScope string
	}{
		{"unlimited", Config{}, "w1", "acme", 100, 100, ""},
		{"per principal burst", Config{PerPrincipal: Limit{Rate: 1, Burst: 3}}, "w1", "acme", 5, 3, "principal"},
		{"per org burst", Config{PerOrg: Limit{Rate: 1, Burst: 2}}, "w1", "acme", 5, 2, "org"},
		{"tenant override raises", Config{PerPrincipal: Limit{Rate: 1, Burst: 1}, Tenants: map[string]Overrides{"acme": {PerPrincipal: lim(1, 10)}}}, "w1", "acme", 12, 10, "principal"},
		{"tenant override only for its org", Config{PerPrincipal: Limit{Rate: 1, Burst: 1}, Tenants: map[string]Overrides{"other": {PerPrincipal: lim(1, 10)}}}, "w1", "acme", 3, 1, "principal"},
		{"tenant override disables", Config{PerOrg: Limit{Rate: 1, Burst: 1}, Tenants: map[string]Overrides{"acme": {PerOrg: &Limit{}}}}, "w1", "acme", 20, 20, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			l := newLocal(t, tc.cfg, c)
			ok, err := allowN(l, tc.n, tc.principal, tc.org)
			if ok != tc.wantOK {
				t.Fatalf("allowed %d of %d, want %d", ok, tc.n, tc.wantOK)
			}
			if tc.wantScope == "" {
				if err != nil {
					t.Fatalf("unexpected refusal %v", err)
				}
				return
			}
			fe := fault.From(err)
			if fe.Code != fault.Throttled || fe.Reason != "rate_limited_"+tc.wantScope || fe.RetryAfter < time.Second {
				t.Fatalf("refusal = %+v, want Throttled rate_limited_%s with RetryAfter", fe, tc.wantScope)
			}
		})
	}
}

func TestLocalRefillAndIsolation(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLocal(t, Config{PerPrincipal: Limit{Rate: 0.5, Burst: 2}, PerOrg: Limit{Rate: 100, Burst: 3}}, c)
	if ok, _ := allowN(l, 3, "w1", "acme"); ok != 2 {
		t.Fatalf("w1 allowed %d, want 2", ok)
	}
	err := l.Allow(context.Background(), "w1", "acme")
	if fe := fault.From(err); fe == nil || fe.RetryAfter != 2*time.Second {
		t.Fatalf("retry after = %v, want 2s (one token at 0.5/s)", err)
	}
	// Another principal of the same org has its own bucket but shares the
	// org's: the org had 3, w1 took 2.
	if ok, err := allowN(l, 2, "w2", "acme"); ok != 1 || fault.From(err).Reason != "rate_limited_org" {
		t.Fatalf("w2 allowed %d (%v), want 1 then an org refusal", ok, err)
	}
	// Refused calls took no tokens: after 2s w1 has exactly one again.
	c.add(2 * time.Second)
	if ok, _ := allowN(l, 2, "w1", "acme"); ok != 1 {
		t.Fatalf("after refill w1 allowed %d, want 1", ok)
	}
	// Same principal name in another org is another bucket.
	if ok, _ := allowN(l, 2, "w1", "other"); ok != 2 {
		t.Fatalf("w1@other allowed %d, want 2", ok)
	}
}

func TestSetConfig(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLocal(t, Config{PerPrincipal: Limit{Rate: 1, Burst: 1}}, c)
	if ok, _ := allowN(l, 3, "w1", "acme"); ok != 1 {
		t.Fatalf("allowed %d, want 1", ok)
	}
	l.SetConfig(Config{})
	if ok, _ := allowN(l, 3, "w1", "acme"); ok != 3 {
		t.Fatalf("after reload to unlimited allowed %d, want 3", ok)
	}
}

func TestValidate(t *testing.T) {
	c := Config{PerPrincipal: Limit{Rate: -1}, PerOrg: Limit{Rate: 1, Burst: -2},
		Tenants: map[string]Overrides{"acme": {PerOrg: &Limit{Rate: 2, Burst: -1}}}, Redis: &RedisConfig{},
		DenialRecords: &Limit{Rate: -3}, DenialSummaryInterval: duration.Duration(time.Hour)}
	c.ApplyDefaults()
	var p validate.Problems
	c.Validate(&p, "rate_limits")
	want := map[string]bool{"rate_limits.per_principal.rate": true, "rate_limits.per_org.burst": true,
		"rate_limits.tenants.acme.per_org.burst": true, "rate_limits.redis.addr": true,
		"rate_limits.denial_records.rate": true, "rate_limits.denial_summary_interval": true}
	for _, pr := range p.List() {
		delete(want, pr.Path)
	}
	if len(want) != 0 {
		t.Fatalf("missing problems %v in %v", want, p.List())
	}
	ok := Config{PerPrincipal: Limit{Rate: 2.5}}
	ok.ApplyDefaults()
	if ok.PerPrincipal.Burst != 3 {
		t.Fatalf("default burst = %d, want 3", ok.PerPrincipal.Burst)
	}
	if *ok.DenialRecords != DefaultDenialRecords() || ok.DenialSummaryInterval.D() != 10*time.Second {
		t.Fatalf("denial record defaults %+v every %s", ok.DenialRecords, ok.DenialSummaryInterval)
	}
	var p2 validate.Problems
	ok.Validate(&p2, "rate_limits")
	if p2.Err() != nil {
		t.Fatal(p2.Err())
	}
	// Cluster mode has one database, and the hash tags are the limiter's.
	cl := Config{Redis: &RedisConfig{Addr: "redis:6379", Cluster: true, DB: 2, KeyPrefix: "app:{x}:"}}
	cl.ApplyDefaults()
	var p3 validate.Problems
	cl.Validate(&p3, "rate_limits")
	want = map[string]bool{"rate_limits.redis.db": true, "rate_limits.redis.key_prefix": true}
	for _, pr := range p3.List() {
		delete(want, pr.Path)
	}
	if len(want) != 0 || len(p3.List()) != 2 {
		t.Fatalf("cluster problems %v, missing %v", p3.List(), want)
	}
}

func redisLimiter(t *testing.T, addr, prefix string, cfg Config, m *metrics.Metrics) *Limiter {
	t.Helper()
	cfg.Redis = &RedisConfig{Addr: addr, KeyPrefix: prefix, Timeout: duration.Duration(500 * time.Millisecond)}
	cfg.ApplyDefaults()
	l, err := New(cfg, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestRedisSharedAcrossReplicas(t *testing.T) {
	addr := testenv.Redis(t)
	prefix := testenv.UniqueName("dispenser-test:") + ":"
	t.Cleanup(func() { cleanupKeys(t, addr, prefix) })
	// A rate so low that nothing refills during the test.
	cfg := Config{PerPrincipal: Limit{Rate: 0.001, Burst: 3}, PerOrg: Limit{Rate: 0.001, Burst: 5}}
	m := metrics.New("test")
	a := redisLimiter(t, addr, prefix, cfg, m)
	b := redisLimiter(t, addr, prefix, cfg, nil)
	okA, _ := allowN(a, 2, "w1", "acme")
	okB, err := allowN(b, 2, "w1", "acme")
	if okA != 2 || okB != 1 {
		t.Fatalf("replica a allowed %d, b %d: want 2 and 1 (one shared bucket of 3)", okA, okB)
	}
	fe := fault.From(err)
	if fe.Reason != "rate_limited_principal" || fe.RetryAfter < 900*time.Second {
		t.Fatalf("refusal %+v: want principal with a long RetryAfter at 0.001/s", fe)
	}
	// The org bucket (5) saw 3 takes; w2 gets 2 more before the org refuses.
	ok, err := allowN(b, 3, "w2", "acme")
	if ok != 2 || fault.From(err).Reason != "rate_limited_org" {
		t.Fatalf("w2 allowed %d (%v), want 2 then rate_limited_org", ok, err)
	}
	if v := gaugeValue(t, m.RateLimitBackend.WithLabelValues("redis")); v != 1 {
		t.Fatalf("rate_limiter_backend{redis} = %v, want 1", v)
	}
}

func TestRedisDownFallsBackToLocal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // a closed port: connection refused
	m := metrics.New("test")
	l := redisLimiter(t, addr, "x:", Config{PerPrincipal: Limit{Rate: 0.001, Burst: 2}}, m)
	ok, err := allowN(l, 3, "w1", "acme")
	if ok != 2 || fault.From(err).Reason != "rate_limited_principal" {
		t.Fatalf("allowed %d (%v): want the local limiter's 2 then a refusal, never a failure to vend", ok, err)
	}
	if v := gaugeValue(t, m.RateLimitBackend.WithLabelValues("local")); v != 1 {
		t.Fatalf("rate_limiter_backend{local} = %v, want 1", v)
	}
	if v := gaugeValue(t, m.RateLimitBackend.WithLabelValues("redis")); v != 0 {
		t.Fatalf("rate_limiter_backend{redis} = %v, want 0", v)
	}
}

func cleanupKeys(t *testing.T, addr, prefix string) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err == nil && len(keys) > 0 {
		c.Del(ctx, keys...)
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestCancelledCallerKeepsRedis: a caller that hung up (cancelled context)
// must not be mistaken for Redis being down.
func TestCancelledCallerKeepsRedis(t *testing.T) {
	addr := testenv.Redis(t)
	prefix := testenv.UniqueName("dispenser-test:") + ":"
	t.Cleanup(func() { cleanupKeys(t, addr, prefix) })
	m := metrics.New("test")
	l := redisLimiter(t, addr, prefix, Config{PerPrincipal: Limit{Rate: 100, Burst: 100}}, m)
	if err := l.Allow(context.Background(), "w1", "acme"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = l.Allow(ctx, "w1", "acme")
	if v := gaugeValue(t, m.RateLimitBackend.WithLabelValues("redis")); v != 1 {
		t.Fatalf("rate_limiter_backend{redis} = %v after a cancelled caller, want 1 (Redis is up)", v)
	}
	if l.downUntil.Load() != 0 {
		t.Fatal("a cancelled caller marked Redis as down")
	}
}
