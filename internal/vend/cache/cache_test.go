package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/cache"
)

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeVendor is the upstream: VendFunc decides, calls counts.
type fakeVendor struct {
	VendFunc func(ctx context.Context, g scope.Grant, n int) (vend.Credentials, error)
	calls    atomic.Int32
}

var _ vend.Vendor = (*fakeVendor)(nil)

func (f *fakeVendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	n := int(f.calls.Add(1))
	return f.VendFunc(ctx, g, n)
}

// minting returns a VendFunc that mints credentials numbered by call,
// valid for the grant's duration from clk's now.
func minting(clk *clock) func(context.Context, scope.Grant, int) (vend.Credentials, error) {
	return func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		return creds(clk, n, g.Duration), nil
	}
}

func creds(clk *clock, n int, life time.Duration) vend.Credentials {
	return vend.Credentials{
		AccessKeyID:     fmt.Sprintf("ASIA%016d", n),
		SecretAccessKey: secret.Secret(fmt.Sprintf("secret-%d", n)),
		SessionToken:    secret.Secret(fmt.Sprintf("token-%d", n)),
		Expiration:      clk.Now().Add(life),
		Source:          "sts",
	}
}

func grant() scope.Grant {
	return scope.Grant{
		Org: "acme", Principal: "worker-1", Backend: "sts",
		RoleARN: "arn:aws:iam::222222222222:role/vtk-target", ExternalID: "acme-ext",
		Policy: `{"Version":"2012-10-17","Statement":[]}`, Duration: time.Hour,
		SessionName: "job.task-abc", Tags: []scope.Tag{{Key: "org", Value: "acme"}},
		TransitiveTagKeys: []string{"org"}, SourceIdentity: "worker-1",
	}
}

func newCache(t *testing.T, up vend.Vendor, clk *clock, mod func(*vend.CacheOptions), m *metrics.Metrics) *cache.Cache {
	t.Helper()
	var o vend.CacheOptions
	if mod != nil {
		mod(&o)
	}
	c := cache.New(up, o, 0, cache.Deps{Now: clk.Now, Metrics: m, Jitter: func() float64 { return 0 }})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustVend(t *testing.T, c *cache.Cache, g scope.Grant) vend.Credentials {
	t.Helper()
	cr, err := c.Vend(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

func TestHitAndMiss(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	if c.Cached(g) {
		t.Fatal("empty cache claims a hit")
	}
	first := mustVend(t, c, g)
	if first.Source != "sts" {
		t.Errorf("miss served from %q", first.Source)
	}
	if !c.Cached(g) {
		t.Fatal("not cached after a miss")
	}
	second := mustVend(t, c, g)
	if second.Source != "cache" || second.AccessKeyID != first.AccessKeyID || second.SessionToken != first.SessionToken {
		t.Errorf("hit returned different credentials: %+v vs %+v", second, first)
	}
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("upstream calls = %d, want 1", n)
	}
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 1 || st.Size != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestKeyCoversTheWholeGrant(t *testing.T) {
	base := cache.Key(grant())
	for name, mod := range map[string]func(*scope.Grant){
		"role":            func(g *scope.Grant) { g.RoleARN += "2" },
		"external id":     func(g *scope.Grant) { g.ExternalID += "2" },
		"policy":          func(g *scope.Grant) { g.Policy += " " },
		"duration":        func(g *scope.Grant) { g.Duration += time.Minute },
		"session name":    func(g *scope.Grant) { g.SessionName += "2" },
		"tag value":       func(g *scope.Grant) { g.Tags = []scope.Tag{{Key: "org", Value: "acme2"}} },
		"tag added":       func(g *scope.Grant) { g.Tags = append(g.Tags, scope.Tag{Key: "x", Value: ""}) },
		"transitive keys": func(g *scope.Grant) { g.TransitiveTagKeys = nil },
		"source identity": func(g *scope.Grant) { g.SourceIdentity = "worker-2" },
		"backend":         func(g *scope.Grant) { g.Backend = "other" },
		"org":             func(g *scope.Grant) { g.Org = "globex" },
		"field boundary":  func(g *scope.Grant) { g.RoleARN, g.ExternalID = g.RoleARN+"a", g.ExternalID[1:] },
	} {
		g := grant()
		mod(&g)
		if cache.Key(g) == base {
			t.Errorf("%s: same key", name)
		}
	}
	g := grant()
	g.JobID, g.Bucket = "other", "b" // not STS inputs (they reach STS via the session name)
	if cache.Key(g) != base {
		t.Error("key depends on fields that do not reach STS")
	}
}

func TestExpiryWindow(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := newCache(t, up, clk, nil, nil) // floor 20m, credentials live 1h
	g := grant()
	mustVend(t, c, g)
	clk.Advance(40 * time.Minute) // exactly 20m left: still served
	if !c.Cached(g) {
		t.Fatal("credential with exactly the floor left not served")
	}
	if st := c.Stats(); st.SoonestFloor != 0 {
		t.Errorf("soonest floor = %s, want 0", st.SoonestFloor)
	}
	clk.Advance(time.Second)
	if c.Cached(g) {
		t.Fatal("credential under the floor still cached")
	}
	if cr := mustVend(t, c, g); cr.Source != "sts" || up.calls.Load() != 2 {
		t.Fatalf("under the floor: source %s, calls %d", cr.Source, up.calls.Load())
	}
}

func TestServerFloorRaisesTheCacheFloor(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := cache.New(up, vend.CacheOptions{}, 45*time.Minute, cache.Deps{Now: clk.Now})
	defer c.Close()
	if c.Floor() != 45*time.Minute {
		t.Fatalf("floor %s", c.Floor())
	}
	mustVend(t, c, grant())
	clk.Advance(16 * time.Minute)
	if c.Cached(grant()) {
		t.Fatal("served with less than the server's floor left")
	}
}

func TestShortLivedCredentialsAreNotCached(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	g.Duration = 15 * time.Minute // under the 20m floor: never servable again
	mustVend(t, c, g)
	if c.Cached(g) || c.Stats().Size != 0 {
		t.Fatal("cached a credential that is already under the floor")
	}
}

func TestRefreshAheadPastHalfLife(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	first := mustVend(t, c, g)
	clk.Advance(29 * time.Minute)
	mustVend(t, c, g)
	c.Wait()
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("refreshed before half-life: %d calls", n)
	}
	clk.Advance(2 * time.Minute) // 31m: past half-life
	served := mustVend(t, c, g)
	if served.AccessKeyID != first.AccessKeyID {
		t.Fatal("refresh blocked the caller instead of serving the cached credential")
	}
	c.Wait()
	if n := up.calls.Load(); n != 2 {
		t.Fatalf("no background refresh: %d calls", n)
	}
	after := mustVend(t, c, g)
	if after.AccessKeyID == first.AccessKeyID || after.Expiration.Sub(clk.Now()) != time.Hour {
		t.Fatalf("refreshed credential not served: %+v", after)
	}
	if st := c.Stats(); st.Refreshes != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestJitterSpreadsRefreshes(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	c := cache.New(up, vend.CacheOptions{}, 0, cache.Deps{Now: clk.Now, Jitter: func() float64 { return 0.99 }})
	defer c.Close()
	g := grant()
	mustVend(t, c, g)
	clk.Advance(35 * time.Minute) // before 30m × 1.198
	mustVend(t, c, g)
	c.Wait()
	if up.calls.Load() != 1 {
		t.Fatal("jitter not applied to the refresh point")
	}
	clk.Advance(1 * time.Minute)
	mustVend(t, c, g)
	c.Wait()
	if up.calls.Load() != 2 {
		t.Fatal("no refresh after the jittered point")
	}
}

func TestSingleflightUnder100ConcurrentCallers(t *testing.T) {
	clk := newClock()
	var c *cache.Cache
	up := &fakeVendor{}
	up.VendFunc = func(ctx context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		// Hold the flight open until every caller has missed.
		for i := 0; i < 5000 && c.Stats().Misses < 100; i++ {
			time.Sleep(time.Millisecond)
		}
		return creds(clk, n, time.Hour), nil
	}
	c = newCache(t, up, clk, nil, nil)
	var wg sync.WaitGroup
	keys := make([]string, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cr, err := c.Vend(context.Background(), grant())
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = cr.AccessKeyID
		}()
	}
	wg.Wait()
	if n := up.calls.Load(); n != 1 {
		t.Fatalf("upstream calls = %d, want exactly 1", n)
	}
	for i, k := range keys {
		if k != keys[0] {
			t.Fatalf("caller %d got %s, caller 0 got %s", i, k, keys[0])
		}
	}
}

func TestCallerGivingUpDoesNotCancelTheFetch(t *testing.T) {
	clk := newClock()
	var upstreamErr atomic.Value
	up := &fakeVendor{VendFunc: func(ctx context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		select {
		case <-time.After(1500 * time.Millisecond): // STS answers at 1.5 s
		case <-ctx.Done():
			upstreamErr.Store(ctx.Err())
			return vend.Credentials{}, ctx.Err()
		}
		return creds(clk, n, time.Hour), nil
	}}
	c := newCache(t, up, clk, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // the caller gives up at 200 ms
	defer cancel()
	_, err := c.Vend(ctx, grant())
	fe := fault.From(err)
	if fe.Code != fault.BackendUnavailable || fe.RetryAfter == 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want 503 with Retry-After for the caller that gave up, got %v", err)
	}
	c.Wait()
	if e := upstreamErr.Load(); e != nil {
		t.Fatalf("the upstream call was cancelled: %v", e)
	}
	cr := mustVend(t, c, grant())
	if cr.Source != "cache" || up.calls.Load() != 1 {
		t.Fatalf("retry was not a hit: source %s, calls %d", cr.Source, up.calls.Load())
	}
}

func TestLRUEviction(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: minting(clk)}
	m := metrics.New("test")
	c := newCache(t, up, clk, func(o *vend.CacheOptions) { o.MaxEntries = 2 }, m)
	a, b, d := grant(), grant(), grant()
	b.SessionName, d.SessionName = "b-task", "d-task"
	mustVend(t, c, a)
	mustVend(t, c, b)
	mustVend(t, c, a) // a is now the most recently used
	mustVend(t, c, d) // evicts b
	if !c.Cached(a) || c.Cached(b) || !c.Cached(d) {
		t.Fatalf("wrong entry evicted: a=%v b=%v d=%v", c.Cached(a), c.Cached(b), c.Cached(d))
	}
	st := c.Stats()
	if st.Evictions != 1 || st.Size != 2 {
		t.Errorf("stats %+v", st)
	}
	if v := counter(t, m, "eviction"); v != 1 {
		t.Errorf("eviction metric = %v", v)
	}
	if v := counter(t, m, "hit"); v != 1 {
		t.Errorf("hit metric = %v", v)
	}
	var g dto.Metric
	_ = m.CacheSize.Write(&g)
	if g.GetGauge().GetValue() != 2 {
		t.Errorf("size gauge = %v", g.GetGauge().GetValue())
	}
}

func counter(t *testing.T, m *metrics.Metrics, event string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.CacheEvents.WithLabelValues(event).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func TestRefreshFailureKeepsServing(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		if n == 1 {
			return creds(clk, n, time.Hour), nil
		}
		return vend.Credentials{}, fault.New(fault.BackendUnavailable, "sts_throttled", "throttled").WithRetryAfter(time.Second)
	}}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	first := mustVend(t, c, g)
	clk.Advance(31 * time.Minute)
	mustVend(t, c, g) // triggers the refresh
	c.Wait()
	if up.calls.Load() != 2 {
		t.Fatalf("calls %d", up.calls.Load())
	}
	cr := mustVend(t, c, g) // within the retry back-off: no new refresh
	c.Wait()
	if cr.AccessKeyID != first.AccessKeyID || up.calls.Load() != 2 {
		t.Fatalf("after a failed refresh: key %s calls %d", cr.AccessKeyID, up.calls.Load())
	}
	clk.Advance(61 * time.Second)
	mustVend(t, c, g)
	c.Wait()
	if up.calls.Load() != 3 {
		t.Fatalf("refresh not retried after its back-off: calls %d", up.calls.Load())
	}
	if st := c.Stats(); st.RefreshErrors != 2 || st.Size != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestAuthorizationFailureDropsTheEntry(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		if n == 1 {
			return creds(clk, n, time.Hour), nil
		}
		return vend.Credentials{}, fault.New(fault.AccessDenied, "sts_access_denied", "denied")
	}}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	mustVend(t, c, g)
	clk.Advance(31 * time.Minute)
	mustVend(t, c, g)
	c.Wait()
	if c.Cached(g) {
		t.Fatal("entry kept after the role refused the refresh")
	}
	if _, err := c.Vend(context.Background(), g); !fault.Is(err, fault.AccessDenied) {
		t.Fatalf("want AccessDenied, got %v", err)
	}
}

func TestUpstreamOutageLongerThanTheLifetime(t *testing.T) {
	clk := newClock()
	var down atomic.Bool
	up := &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		if down.Load() {
			return vend.Credentials{}, fault.New(fault.BackendUnavailable, "sts_unavailable", "down").WithRetryAfter(2 * time.Second)
		}
		return creds(clk, n, time.Hour), nil
	}}
	c := newCache(t, up, clk, nil, nil)
	g := grant()
	first := mustVend(t, c, g)
	down.Store(true)
	for elapsed := 5 * time.Minute; elapsed <= 40*time.Minute; elapsed += 5 * time.Minute {
		clk.Advance(5 * time.Minute)
		cr := mustVend(t, c, g)
		c.Wait()
		if cr.AccessKeyID != first.AccessKeyID {
			t.Fatalf("at %s: not the cached credential", elapsed)
		}
		if left := c.Stats().SoonestFloor; left != 40*time.Minute-elapsed {
			t.Fatalf("at %s: soonest floor %s, want %s", elapsed, left, 40*time.Minute-elapsed)
		}
	}
	clk.Advance(time.Second) // now under the floor
	_, err := c.Vend(context.Background(), g)
	if fe := fault.From(err); fe.Code != fault.BackendUnavailable || fe.RetryAfter == 0 {
		t.Fatalf("want 503 with Retry-After once the floor is reached, got %v", err)
	}
	if c.Stats().Size != 0 {
		t.Fatal("dead entry kept")
	}
}

func TestClosePassesThroughReadinessAndReload(t *testing.T) {
	ready := &readyVendor{}
	c := cache.New(ready, vend.CacheOptions{}, 0, cache.Deps{})
	if err := c.Ready(context.Background()); !errors.Is(err, errNotReady) {
		t.Fatalf("readiness not passed through: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

var errNotReady = errors.New("not ready")

type readyVendor struct{ fakeVendor }

func (*readyVendor) Ready(context.Context) error { return errNotReady }

type configurableVendor struct {
	fakeVendor
	opt vend.CacheOptions
}

func (c *configurableVendor) CacheOptions() vend.CacheOptions { return c.opt }

func TestWrapAllWrapsOnlyBackendsThatEnableTheCache(t *testing.T) {
	off := false
	on := &configurableVendor{}
	disabled := &configurableVendor{opt: vend.CacheOptions{Enabled: &off}}
	plain := &fakeVendor{}
	backends := map[string]vend.Vendor{"on": on, "disabled": disabled, "plain": plain}
	closers := cache.WrapAll(backends, 30*time.Minute, cache.Deps{})
	if len(closers) != 1 {
		t.Fatalf("closers %d", len(closers))
	}
	c, ok := backends["on"].(*cache.Cache)
	if !ok || c.Unwrap() != vend.Vendor(on) || c.Floor() != 30*time.Minute {
		t.Fatalf("enabled backend not wrapped with the server floor: %T", backends["on"])
	}
	if backends["disabled"] != vend.Vendor(disabled) || backends["plain"] != vend.Vendor(plain) {
		t.Fatal("a backend without an enabled cache was wrapped")
	}
	for _, f := range closers {
		_ = f()
	}
}
