// Package budget gives every tenant its own share of upstream (STS) calls:
// a token-bucket rate and a concurrency limit per tenant, so one tenant's
// burst of distinct tasks cannot use up the account-wide STS throttle that
// every other tenant depends on. A Budget is a vend.Vendor decorator placed
// directly around the call that reaches STS (below the credential cache, so
// cache hits and collapsed misses never spend budget).
package budget

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

// Options configure a per-tenant budget (the `budget:` block of a backend).
type Options struct {
	// Enabled switches the budget on (default true).
	Enabled *bool `yaml:"enabled"`
	// Rate is the sustained upstream calls per second per tenant (default 5).
	Rate float64 `yaml:"rate"`
	// Burst is how many calls a tenant may make at once above Rate (default 20).
	Burst int `yaml:"burst"`
	// Concurrency is the most upstream calls of one tenant in flight (default 8).
	Concurrency int `yaml:"concurrency"`
	// MaxWait is how long a call may queue for its tenant's budget before it
	// is refused with 503 and Retry-After (default 2s; 0s refuses at once).
	MaxWait *duration.Duration `yaml:"max_wait"`
}

// ApplyDefaults fills unset fields.
func (o *Options) ApplyDefaults() {
	if o.Enabled == nil {
		t := true
		o.Enabled = &t
	}
	if o.Rate == 0 {
		o.Rate = 5
	}
	if o.Burst == 0 {
		o.Burst = 20
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	if o.MaxWait == nil {
		d := duration.Duration(2 * time.Second)
		o.MaxWait = &d
	}
}

// On reports whether the budget is enabled (after ApplyDefaults).
func (o Options) On() bool { return o.Enabled == nil || *o.Enabled }

// Validate records problems under path.
func (o Options) Validate(p *validate.Problems, path string) {
	if o.Rate < 0 || o.Rate > 1000 {
		p.Addf(validate.Join(path, "rate"), "must be between 0 and 1000 calls per second, got %v", o.Rate)
	}
	if o.Burst < 1 || o.Burst > 10000 {
		p.Addf(validate.Join(path, "burst"), "must be between 1 and 10000, got %d", o.Burst)
	}
	if o.Concurrency < 1 || o.Concurrency > 1000 {
		p.Addf(validate.Join(path, "concurrency"), "must be between 1 and 1000, got %d", o.Concurrency)
	}
	if o.MaxWait != nil && (o.MaxWait.D() < 0 || o.MaxWait.D() > time.Minute) {
		p.Addf(validate.Join(path, "max_wait"), "must be between 0s and 1m, got %s", o.MaxWait)
	}
}

// Budget limits upstream calls per tenant (grant.Org).
type Budget struct {
	next vend.Vendor
	opt  Options
	now  func() time.Time

	mu      sync.Mutex
	tenants map[string]*tenant
}

type tenant struct {
	lim *rate.Limiter
	sem chan struct{}
}

var _ vend.Vendor = (*Budget)(nil)

// New wraps next. opt must have had ApplyDefaults; now may be nil.
func New(next vend.Vendor, opt Options, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	opt.ApplyDefaults()
	return &Budget{next: next, opt: opt, now: now, tenants: map[string]*tenant{}}
}

func (b *Budget) tenant(org string) *tenant {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.tenants[org]
	if !ok {
		t = &tenant{lim: rate.NewLimiter(rate.Limit(b.opt.Rate), b.opt.Burst), sem: make(chan struct{}, b.opt.Concurrency)}
		b.tenants[org] = t
	}
	return t
}

// Vend waits (up to MaxWait) for a rate token and a concurrency slot of the
// grant's tenant, then calls the wrapped vendor. A tenant over budget gets
// BackendUnavailable with RetryAfter (reason sts_budget_exhausted); other
// tenants are not affected.
func (b *Budget) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	t := b.tenant(g.Org)
	maxWait := b.opt.MaxWait.D()
	now := b.now()
	r := t.lim.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if !r.OK() || delay > maxWait {
		r.CancelAt(now)
		return vend.Credentials{}, exhausted("rate", max(delay, time.Second))
	}
	if delay > 0 {
		tm := time.NewTimer(delay)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			r.CancelAt(b.now())
			return vend.Credentials{}, exhausted("rate", max(delay, time.Second))
		}
	}
	select {
	case t.sem <- struct{}{}:
	default:
		if maxWait-delay <= 0 {
			return vend.Credentials{}, exhausted("concurrency", time.Second)
		}
		tm := time.NewTimer(maxWait - delay)
		defer tm.Stop()
		select {
		case t.sem <- struct{}{}:
		case <-tm.C:
			return vend.Credentials{}, exhausted("concurrency", time.Second)
		case <-ctx.Done():
			return vend.Credentials{}, exhausted("concurrency", time.Second)
		}
	}
	defer func() { <-t.sem }()
	return b.next.Vend(ctx, g)
}

func exhausted(what string, retry time.Duration) error {
	return fault.New(fault.BackendUnavailable, "sts_budget_exhausted",
		"this organization's share of STS calls is used up (%s limit); retry shortly", what).
		WithRetryAfter(retry.Round(time.Second))
}

// Cached passes through to the wrapped vendor when it can tell.
func (b *Budget) Cached(g scope.Grant) bool {
	c, ok := b.next.(vend.CacheChecker)
	return ok && c.Cached(g)
}

// Ready passes through to the wrapped vendor when it has readiness.
func (b *Budget) Ready(ctx context.Context) error {
	if r, ok := b.next.(vend.Readiness); ok {
		return r.Ready(ctx)
	}
	return nil
}
