package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// TestCacheGaugesAreCurrentAtScrape: the soonest-floor gauge shrinks while
// nothing happens in the cache (no request, no refresh: an STS outage with
// idle workers), and entries under the floor leave the size gauge.
func TestCacheGaugesAreCurrentAtScrape(t *testing.T) {
	clk := newClock()
	up := &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		return creds(clk, n, time.Hour), nil
	}}
	m := metrics.New("test")
	c := newCache(t, up, clk, nil, m)
	if got := gauge(t, m.CacheSize); got != 0 {
		t.Fatalf("empty cache size = %v", got)
	}
	mustVend(t, c, grant())
	c.Wait()
	// 1h credential, 20m floor: 40m to ride out an outage.
	if got := gauge(t, m.CacheOldestLeft); got != (40 * time.Minute).Seconds() {
		t.Fatalf("soonest floor = %v s, want 2400", got)
	}
	clk.Advance(15 * time.Minute) // nothing touches the cache
	if got := gauge(t, m.CacheOldestLeft); got != (25 * time.Minute).Seconds() {
		t.Fatalf("soonest floor after 15 idle minutes = %v s, want 1500", got)
	}
	clk.Advance(26 * time.Minute) // under the floor: not servable any more
	if size, left := gauge(t, m.CacheSize), gauge(t, m.CacheOldestLeft); size != 0 || left != 0 {
		t.Fatalf("after the floor: size %v, soonest %v; want 0, 0", size, left)
	}
}

// TestCacheGaugesAddUpAcrossBackends: one gauge for every cache (one per
// backend): sizes sum, the soonest floor is the least of non-empty caches,
// and a closed cache stops counting.
func TestCacheGaugesAddUpAcrossBackends(t *testing.T) {
	clk := newClock()
	m := metrics.New("test")
	long := newCache(t, &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		return creds(clk, n, 2*time.Hour), nil
	}}, clk, nil, m)
	short := newCache(t, &fakeVendor{VendFunc: func(_ context.Context, g scope.Grant, n int) (vend.Credentials, error) {
		return creds(clk, n, time.Hour), nil
	}}, clk, nil, m)
	empty := newCache(t, &fakeVendor{}, clk, nil, m)
	_ = empty
	a, b := grant(), grant()
	b.SessionName = "other-session"
	mustVend(t, long, a)
	mustVend(t, long, b)
	mustVend(t, short, a)
	if got := gauge(t, m.CacheSize); got != 3 {
		t.Fatalf("size = %v, want 3", got)
	}
	if got := gauge(t, m.CacheOldestLeft); got != (40 * time.Minute).Seconds() {
		t.Fatalf("soonest floor = %v, want the short cache's 2400 (the empty cache does not count)", got)
	}
	_ = short.Close()
	if size, left := gauge(t, m.CacheSize), gauge(t, m.CacheOldestLeft); size != 2 || left != (100*time.Minute).Seconds() {
		t.Fatalf("after closing one cache: size %v, soonest %v", size, left)
	}
}

func gauge(t *testing.T, g prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := g.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue()
}
