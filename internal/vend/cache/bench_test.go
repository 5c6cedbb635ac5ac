package cache_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"

	"github.com/vtk/dispenser/internal/ststest"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/assumerole"
	"github.com/vtk/dispenser/internal/vend/cache"
)

// stsStack builds the real assume-role backend (real STS client) against a
// fake STS with the given latency, with or without the cache. The budget is
// off: these benchmarks measure the cache, not the fairness limit (which
// would refuse a 1,000-task burst by design).
func stsStack(b *testing.B, latency time.Duration, cached bool) (vend.Vendor, *ststest.Server) {
	b.Helper()
	b.Setenv("AWS_ACCESS_KEY_ID", "AKIDBENCH")
	b.Setenv("AWS_SECRET_ACCESS_KEY", "bench-secret")
	b.Setenv("AWS_REGION", "eu-central-1")
	b.Setenv("AWS_CONFIG_FILE", b.TempDir()+"/none")
	b.Setenv("AWS_SHARED_CREDENTIALS_FILE", b.TempDir()+"/none")
	b.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := ststest.New(b)
	fake.Latency = latency
	off := false
	o := assumerole.Options{Endpoint: fake.URL}
	o.Budget.Enabled = &off
	o.ApplyDefaults()
	v, err := assumerole.New(context.Background(), o, assumerole.Deps{
		Backoff: retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil }),
	})
	if err != nil {
		b.Fatal(err)
	}
	if !cached {
		return v, fake
	}
	c := cache.New(v, o.Cache, 0, cache.Deps{})
	b.Cleanup(func() { _ = c.Close() })
	return c, fake
}

// BenchmarkSTSCallsPer1000Requests reports how many STS calls 1,000
// credential requests cost through the cache: one identical grant (target
// 1) and 1,000 distinct tasks (1,000).
func BenchmarkSTSCallsPer1000Requests(b *testing.B) {
	for _, tc := range []struct {
		name     string
		distinct bool
	}{{"identical_grant", false}, {"distinct_tasks", true}} {
		b.Run(tc.name, func(b *testing.B) {
			var calls int
			for range b.N {
				v, fake := stsStack(b, 0, true)
				var wg sync.WaitGroup
				sem := make(chan struct{}, 50)
				for i := range 1000 {
					g := grant()
					if tc.distinct {
						g.TaskID = fmt.Sprintf("task-%d", i)
						g.SessionName = fmt.Sprintf("job.task-%d", i)
					}
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						if _, err := v.Vend(context.Background(), g); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				calls = fake.Count("AssumeRole")
			}
			b.ReportMetric(float64(calls), "sts-calls/1000req")
		})
	}
}

// BenchmarkThroughput50msSTS runs the same workload — 1,000 requests from
// 50 concurrent callers over 50 distinct tasks (each task asking 20 times,
// as retries and refreshes do) — against a fake STS that adds 50 ms per
// call, with the cache on and off, and reports both rates and their ratio.
func BenchmarkThroughput50msSTS(b *testing.B) {
	run := func(cached bool) (float64, int) {
		v, fake := stsStack(b, 50*time.Millisecond, cached)
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 50)
		for i := range 1000 {
			g := grant()
			g.SessionName = fmt.Sprintf("job.task-%d", i%50)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := v.Vend(context.Background(), g); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		return 1000 / time.Since(start).Seconds(), fake.Count("AssumeRole")
	}
	var on, off float64
	var onCalls, offCalls int
	for range b.N {
		on, onCalls = run(true)
		off, offCalls = run(false)
	}
	b.ReportMetric(on, "req/s-cache-on")
	b.ReportMetric(off, "req/s-cache-off")
	b.ReportMetric(on/off, "speedup")
	b.ReportMetric(float64(onCalls), "sts-calls-cache-on")
	b.ReportMetric(float64(offCalls), "sts-calls-cache-off")
}

// TestDetachedFetchThroughTheRealSTSClient: a caller gives up at 200 ms
// while STS answers at 1.5 s; the STS call completes and the retry is a hit.
func TestDetachedFetchThroughTheRealSTSClient(t *testing.T) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-central-1",
		"AWS_CONFIG_FILE": t.TempDir() + "/none", "AWS_SHARED_CREDENTIALS_FILE": t.TempDir() + "/none", "AWS_EC2_METADATA_DISABLED": "true"} {
		t.Setenv(k, v)
	}
	fake := ststest.New(t)
	fake.AssumeRole = ststest.Sequence(ststest.Answer{Delay: 1500 * time.Millisecond})
	o := assumerole.Options{Endpoint: fake.URL}
	o.ApplyDefaults()
	v, err := assumerole.New(context.Background(), o, assumerole.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(v, o.Cache, 0, cache.Deps{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Vend(ctx, grant()); err == nil {
		t.Fatal("the caller that gave up got credentials")
	}
	c.Wait()
	cr, err := c.Vend(context.Background(), grant())
	if err != nil || cr.Source != "cache" {
		t.Fatalf("retry: %v (source %q)", err, cr.Source)
	}
	if n := fake.Count("AssumeRole"); n != 1 {
		t.Fatalf("STS calls = %d, want 1", n)
	}
}
