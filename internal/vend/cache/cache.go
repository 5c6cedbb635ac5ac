// Package cache is a credential cache decorator: a vend.Vendor that wraps
// any vend.Vendor. STS rate limits cannot be raised and AWS recommends
// reusing temporary credentials, and SDK credential providers time out long
// before a throttled STS answers, so the cache
//
//   - keys entries by the complete grant as STS sees it (role, external id,
//     policy, duration, session name, tags, transitive tag keys, source
//     identity, backend, org): a hit is exactly what STS would return;
//   - collapses concurrent identical misses into one upstream call that runs
//     on its own context and deadline, so a caller that gives up does not
//     cancel it and the result is cached for the caller's retry;
//   - serves an entry only while it has at least MinRemaining left (SDKs
//     refresh earlier than that, and some refetch on every call below 15m);
//   - refreshes an entry in the background once it is past half-life
//     (jittered, so a fleet started together does not refresh together);
//     a failed refresh keeps serving the still-valid entry, an authorization
//     failure drops it;
//   - holds at most MaxEntries, evicting the least recently used.
package cache

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// Stats is a snapshot of the cache.
type Stats struct {
	Size, Hits, Misses, Evictions, Expired, Refreshes, RefreshErrors int
	// SoonestFloor is how long until the soonest entry falls under the
	// floor: how long an upstream outage can be ridden out (0 when empty).
	SoonestFloor time.Duration
}

// Deps are the cache's collaborators; all are optional.
type Deps struct {
	Now     func() time.Time
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Jitter returns a number in [0,1) (default math/rand/v2).
	Jitter func() float64
}

// Cache is the credential cache decorator.
type Cache struct {
	next  vend.Vendor
	opt   vend.CacheOptions
	floor time.Duration
	d     Deps

	stop      context.Context
	stopFunc  context.CancelFunc
	unpublish func() // removes the cache from the metrics
	bg        sync.WaitGroup
	sf        singleflight.Group

	mu    sync.Mutex
	ll    *list.List // front = most recently used
	items map[string]*list.Element
	st    Stats
}

type entry struct {
	key        string
	creds      vend.Credentials
	refreshAt  time.Time
	refreshing bool
}

var (
	_ vend.Vendor       = (*Cache)(nil)
	_ vend.CacheChecker = (*Cache)(nil)
	_ vend.Readiness    = (*Cache)(nil)
	_ vend.Reloader     = (*Cache)(nil)
	_ vend.Forgetter    = (*Cache)(nil)
)

// New wraps next. serverFloor is the server's min_remaining: the cache
// never serves below max(opt.MinRemaining, serverFloor), since the API would
// refuse such a credential anyway.
func New(next vend.Vendor, opt vend.CacheOptions, serverFloor time.Duration, d Deps) *Cache {
	opt.ApplyDefaults()
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Jitter == nil {
		d.Jitter = rand.Float64
	}
	c := &Cache{next: next, opt: opt, floor: max(opt.MinRemaining.D(), serverFloor), d: d,
		ll: list.New(), items: map[string]*list.Element{}}
	c.stop, c.stopFunc = context.WithCancel(context.Background())
	c.unpublish = d.Metrics.AddCache(func() (int, time.Duration) { st := c.Stats(); return st.Size, st.SoonestFloor })
	return c
}

// Floor is the effective serving floor.
func (c *Cache) Floor() time.Duration { return c.floor }

// Key is the cache key of g: a hash over every input that shapes what STS
// returns (plus backend and org), length-prefixed so fields cannot run
// into each other.
func Key(g scope.Grant) string {
	h := sha256.New()
	put := func(s string) {
		writeLen(h, len(s))
		h.Write([]byte(s))
	}
	put(g.Backend)
	put(g.Org)
	put(g.RoleARN)
	put(g.ExternalID)
	put(g.Policy)
	writeLen(h, int(g.Duration/time.Second))
	put(g.SessionName)
	put(g.SourceIdentity)
	writeLen(h, len(g.Tags))
	for _, t := range g.Tags {
		put(t.Key)
		put(t.Value)
	}
	writeLen(h, len(g.TransitiveTagKeys))
	for _, k := range g.TransitiveTagKeys {
		put(k)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeLen(h hash.Hash, n int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

// Vend serves g from the cache when a credential with at least the floor
// left is held, else fetches it (collapsing concurrent identical misses).
func (c *Cache) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	key := Key(g)
	now := c.d.Now()
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*entry)
		if e.creds.Expiration.Sub(now) >= c.floor {
			c.ll.MoveToFront(el)
			c.st.Hits++
			creds := e.creds
			if !now.Before(e.refreshAt) && !e.refreshing {
				e.refreshing = true
				c.st.Refreshes++
				c.refresh(ctx, key, g)
			}
			c.mu.Unlock()
			c.d.Metrics.Cache("hit")
			creds.Source = "cache"
			return creds, nil
		}
		c.removeLocked(el)
		c.st.Expired++
		c.d.Metrics.Cache("expired")
	}
	c.st.Misses++
	c.mu.Unlock()
	c.d.Metrics.Cache("miss")

	// The flight is tracked until its result is delivered, so Close and
	// Wait cover fetches whose callers have given up.
	ch := make(chan singleflight.Result, 1)
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ch <- <-c.sf.DoChan(key, c.fetchFunc(ctx, key, g, false))
	}()
	select {
	case r := <-ch:
		if r.Err != nil {
			return vend.Credentials{}, r.Err
		}
		return r.Val.(vend.Credentials), nil
	case <-ctx.Done():
		// The fetch goes on without this caller; its result is cached.
		return vend.Credentials{}, fault.Wrap(ctx.Err(), fault.BackendUnavailable, "backend_pending",
			"credentials are still being fetched; retry shortly").WithRetryAfter(time.Second)
	}
}

// fetchFunc is the one upstream call for key. It runs on a context detached
// from the caller (values kept, cancellation not) with its own deadline,
// cancelled only when the cache is closed.
//
// A miss re-checks the cache first: a miss that raced with the end of the
// previous flight for the same key finds its stored result instead of
// calling upstream again.
func (c *Cache) fetchFunc(ctx context.Context, key string, g scope.Grant, refresh bool) func() (any, error) {
	return func() (any, error) {
		if !refresh {
			if creds, ok := c.lookup(key); ok {
				return creds, nil
			}
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opt.FetchTimeout.D())
		defer cancel()
		stopCancel := context.AfterFunc(c.stop, cancel)
		defer stopCancel()
		creds, err := c.next.Vend(fctx, g)
		if err != nil {
			c.failed(key, err)
			return nil, err
		}
		c.store(key, creds)
		return creds, nil
	}
}

// refresh starts a background refresh of key; c.mu is held.
func (c *Cache) refresh(ctx context.Context, key string, g scope.Grant) {
	c.d.Metrics.Cache("refresh")
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		r := <-c.sf.DoChan(key, c.fetchFunc(ctx, key, g, true))
		if r.Err != nil {
			c.d.Logger.Warn("credential refresh failed; serving the cached credential while it lasts",
				zap.String("backend", g.Backend), zap.String("org", g.Org), zap.Error(r.Err))
		}
	}()
}

// store caches creds when they have more than the floor left.
func (c *Cache) store(key string, creds vend.Credentials) {
	now := c.d.Now()
	life := creds.Expiration.Sub(now)
	usable := life - c.floor
	c.mu.Lock()
	defer c.mu.Unlock()
	if usable <= 0 {
		// Too short-lived to serve again; drop any older entry too.
		if el, ok := c.items[key]; ok {
			c.removeLocked(el)
		}
		c.st.Size = c.ll.Len()
		return
	}
	// Refresh past half-life, but early enough to finish before the entry
	// falls under the floor; jitter spreads a fleet's refreshes by up to 20%.
	base := min(life/2, usable*3/4)
	refreshAt := now.Add(base + time.Duration(float64(base)*0.2*c.d.Jitter()))
	if el, ok := c.items[key]; ok {
		e := el.Value.(*entry)
		e.creds, e.refreshAt, e.refreshing = creds, refreshAt, false
		c.ll.MoveToFront(el)
	} else {
		c.items[key] = c.ll.PushFront(&entry{key: key, creds: creds, refreshAt: refreshAt})
		for c.ll.Len() > c.opt.MaxEntries {
			c.removeLocked(c.ll.Back())
			c.st.Evictions++
			c.d.Metrics.Cache("eviction")
		}
	}
	c.st.Size = c.ll.Len()
}

// failed handles an upstream failure for key: a definite refusal
// (AccessDenied, InvalidRequest) drops the entry, since the same inputs
// will not be granted again; anything else keeps it and retries the refresh
// later (with jitter).
func (c *Cache) failed(key string, err error) {
	now := c.d.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return
	}
	e := el.Value.(*entry)
	if e.refreshing {
		c.st.RefreshErrors++
		c.d.Metrics.Cache("refresh_error")
	}
	if fault.Is(err, fault.AccessDenied) || fault.Is(err, fault.InvalidRequest) {
		c.removeLocked(el)
		c.d.Metrics.Cache("dropped")
		c.st.Size = c.ll.Len()
		return
	}
	e.refreshing = false
	e.refreshAt = now.Add(30*time.Second + time.Duration(float64(30*time.Second)*c.d.Jitter()))
	c.st.Size = c.ll.Len()
}

func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*entry)
	delete(c.items, e.key)
	c.ll.Remove(el)
}

// publishLocked drops entries under the floor and reports size and the
// soonest floor crossing. It walks every entry, so it runs at scrape time
// (Stats), never on the request path; entries under the floor are never
// served meanwhile (lookup checks) and the LRU bound holds memory.
func (c *Cache) publishLocked(now time.Time) {
	soonest := time.Duration(-1)
	for el := c.ll.Front(); el != nil; {
		next := el.Next()
		e := el.Value.(*entry)
		left := e.creds.Expiration.Sub(now) - c.floor
		if left < 0 {
			c.removeLocked(el)
			c.st.Expired++
		} else if soonest < 0 || left < soonest {
			soonest = left
		}
		el = next
	}
	c.st.Size = c.ll.Len()
	c.st.SoonestFloor = max(soonest, 0)
}

// Stats returns a snapshot at the current time (the size and soonest-floor
// gauges read it at every scrape).
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.publishLocked(c.d.Now())
	return c.st
}

// Cached implements vend.CacheChecker: whether g would be a hit now.
func (c *Cache) Cached(g scope.Grant) bool {
	_, ok := c.lookup(Key(g))
	return ok
}

// Forget implements vend.Forgetter: it drops the cached credentials of g
// (a revoked access key), so the next Vend fetches fresh ones instead of
// serving the revoked key again. It always can.
func (c *Cache) Forget(g scope.Grant) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[Key(g)]; ok {
		c.removeLocked(el)
		c.st.Size = c.ll.Len()
	}
	return true
}

// lookup returns the entry for key if it is above the floor, without
// counting a hit or starting a refresh.
func (c *Cache) lookup(key string) (vend.Credentials, bool) {
	now := c.d.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok || el.Value.(*entry).creds.Expiration.Sub(now) < c.floor {
		return vend.Credentials{}, false
	}
	creds := el.Value.(*entry).creds
	creds.Source = "cache"
	return creds, true
}

// Ready passes through to the wrapped vendor.
func (c *Cache) Ready(ctx context.Context) error {
	if r, ok := c.next.(vend.Readiness); ok {
		return r.Ready(ctx)
	}
	return nil
}

// Reload implements vend.Reloader: it passes through to the wrapped vendor
// when that can reload.
func (c *Cache) Reload() error {
	if r, ok := c.next.(vend.Reloader); ok {
		return r.Reload()
	}
	return nil
}

// Close cancels in-flight upstream fetches and waits for background
// refreshes to finish.
func (c *Cache) Close() error {
	c.unpublish()
	c.stopFunc()
	c.bg.Wait()
	return nil
}

// Wait blocks until no started upstream fetch or background refresh is
// running (tests).
func (c *Cache) Wait() { c.bg.Wait() }

// Unwrap returns the wrapped vendor.
func (c *Cache) Unwrap() vend.Vendor { return c.next }
