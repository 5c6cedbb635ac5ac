package budget_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/budget"
)

type fakeVendor struct {
	VendFunc func(ctx context.Context, g scope.Grant) (vend.Credentials, error)
	calls    atomic.Int32
}

var _ vend.Vendor = (*fakeVendor)(nil)

func (f *fakeVendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	f.calls.Add(1)
	return f.VendFunc(ctx, g)
}

func ok(context.Context, scope.Grant) (vend.Credentials, error) {
	return vend.Credentials{AccessKeyID: "ASIA"}, nil
}

func opts(rate float64, burst, conc int, wait time.Duration) budget.Options {
	w := duration.Duration(wait)
	return budget.Options{Rate: rate, Burst: burst, Concurrency: conc, MaxWait: &w}
}

func TestRateIsPerTenant(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	up := &fakeVendor{VendFunc: ok}
	b := budget.New(up, opts(1, 3, 10, 0), clock)
	a, g := scope.Grant{Org: "acme"}, scope.Grant{Org: "globex"}
	refused := 0
	for range 10 { // acme bursts 10 distinct calls
		if _, err := b.Vend(context.Background(), a); err != nil {
			if fe := fault.From(err); fe.Reason != "sts_budget_exhausted" || fe.RetryAfter == 0 || fe.Code != fault.BackendUnavailable {
				t.Fatalf("unexpected error %v", err)
			}
			refused++
		}
	}
	if refused != 7 {
		t.Fatalf("acme: %d refused, want 7 (burst 3)", refused)
	}
	for i := range 3 { // globex still has its whole burst
		if _, err := b.Vend(context.Background(), g); err != nil {
			t.Fatalf("globex call %d starved by acme's burst: %v", i, err)
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Second) // rate 1/s refills two tokens
	mu.Unlock()
	for i := range 2 {
		if _, err := b.Vend(context.Background(), a); err != nil {
			t.Fatalf("acme after refill, call %d: %v", i, err)
		}
	}
	if _, err := b.Vend(context.Background(), a); err == nil {
		t.Fatal("acme exceeded its rate")
	}
}

func TestConcurrencyIsPerTenant(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	up := &fakeVendor{VendFunc: func(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
		if g.Org == "acme" {
			started <- struct{}{}
			<-release
		}
		return vend.Credentials{AccessKeyID: "ASIA"}, nil
	}}
	b := budget.New(up, opts(1000, 1000, 2, 0), nil)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Vend(context.Background(), scope.Grant{Org: "acme"}); err != nil {
				t.Error(err)
			}
		}()
	}
	<-started
	<-started
	// acme has two calls in flight: a third is refused, globex goes through.
	if _, err := b.Vend(context.Background(), scope.Grant{Org: "acme"}); fault.From(err).Reason != "sts_budget_exhausted" {
		t.Fatalf("third acme call: %v", err)
	}
	if _, err := b.Vend(context.Background(), scope.Grant{Org: "globex"}); err != nil {
		t.Fatalf("globex blocked by acme's in-flight calls: %v", err)
	}
	close(release)
	wg.Wait()
	if _, err := b.Vend(context.Background(), scope.Grant{Org: "acme"}); err != nil {
		t.Fatalf("acme after its calls finished: %v", err)
	}
}

func TestQueuedCallWaitsForASlot(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	up := &fakeVendor{VendFunc: func(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
		select {
		case started <- struct{}{}:
			<-release
		default:
		}
		return vend.Credentials{}, nil
	}}
	b := budget.New(up, opts(1000, 1000, 1, time.Minute), nil)
	go func() { _, _ = b.Vend(context.Background(), scope.Grant{Org: "acme"}) }()
	<-started
	done := make(chan error, 1)
	go func() { _, err := b.Vend(context.Background(), scope.Grant{Org: "acme"}); done <- err }()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("queued call refused although max_wait allows waiting: %v", err)
	}
}
