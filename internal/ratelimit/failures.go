package ratelimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// FailureGuard holds one token bucket per client address, charged only by
// failed authentications. Every authentication failure is a durable audit
// record; without this guard anyone who can reach the port could grow the
// audit trail at group-commit speed and crowd out real issuances. Valid
// callers never spend tokens, so they are refused only while their own
// address keeps failing. The number of tracked addresses is bounded (LRU).
type FailureGuard struct {
	limit Limit
	max   int
	now   func() time.Time

	mu    sync.Mutex
	ll    *list.List // front = most recently used
	items map[string]*list.Element
}

type failureEntry struct {
	key string
	lim *rate.Limiter
}

// NewFailureGuard returns a guard, or nil when l is disabled (rate 0).
func NewFailureGuard(l Limit, maxClients int, now func() time.Time) *FailureGuard {
	if !l.Enabled() {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	if maxClients <= 0 {
		maxClients = 100000
	}
	return &FailureGuard{limit: l, max: maxClients, now: now, ll: list.New(), items: map[string]*list.Element{}}
}

// Blocked reports whether client has no failures left in its budget, and
// when it will have one again. Safe on a nil guard (never blocked).
func (g *FailureGuard) Blocked(client string) (time.Duration, bool) {
	if g == nil {
		return 0, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	el, ok := g.items[client]
	if !ok {
		return 0, false
	}
	lim := el.Value.(*failureEntry).lim
	now := g.now()
	if tokens := lim.TokensAt(now); tokens < 1 {
		return time.Duration((1 - tokens) / g.limit.Rate * float64(time.Second)), true
	}
	return 0, false
}

// Failed charges one failed authentication to client.
func (g *FailureGuard) Failed(client string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.entry(client).lim.AllowN(g.now(), 1)
}

// Allow takes one token from key's bucket and reports whether there was
// one: the guard as a plain keyed budget (per principal, for instance).
// Safe on a nil guard (always allowed).
func (g *FailureGuard) Allow(key string) bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entry(key).lim.AllowN(g.now(), 1)
}

// entry returns key's bucket, made most recently used (created if need
// be, forgetting the least recently used past the bound). Call with mu.
func (g *FailureGuard) entry(client string) *failureEntry {
	el, ok := g.items[client]
	if ok {
		g.ll.MoveToFront(el)
	} else {
		el = g.ll.PushFront(&failureEntry{key: client, lim: rate.NewLimiter(rate.Limit(g.limit.Rate), g.limit.Burst)})
		g.items[client] = el
		for g.ll.Len() > g.max {
			old := g.ll.Back()
			g.ll.Remove(old)
			delete(g.items, old.Value.(*failureEntry).key)
		}
	}
	return el.Value.(*failureEntry)
}
