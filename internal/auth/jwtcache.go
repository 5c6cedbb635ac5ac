package auth

import (
	"container/list"
	"crypto/sha256"
	"maps"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/metrics"
)

// tokenCache remembers the identities of verified JWTs, keyed by the
// SHA-256 of the exact token, so a worker that asks for credentials again
// with the same token skips the signature check (the pattern of Envoy's
// jwt_authn cache and PostgREST's jwt-cache-max-lifetime). Only successes
// are cached. An entry is served only while verification would accept the
// token too: before its exp (the leeway past exp is left to a fresh
// verification), not before its nbf minus the leeway, and at most maxLife
// after it was verified. Everything after authentication (revocation,
// job and task bindings, scope) runs on a hit as on a miss.
//
// The cache holds at most max entries, evicting the least recently used,
// so a flood of distinct tokens costs memory bounded by max. flush empties
// it when the key set changes; a verification that began before a flush
// is not cached after it (generation check), so no identity proven with a
// removed key survives the flush.
type tokenCache struct {
	maxLife time.Duration
	max     int
	leeway  time.Duration
	metrics *metrics.Metrics

	mu      sync.Mutex
	gen     uint64
	entries map[[sha256.Size]byte]*list.Element
	lru     list.List // front: most recently used *tokenEntry
}

type tokenEntry struct {
	key [sha256.Size]byte
	id  Identity
	// from and until bound when the entry may be served: nbf-leeway (zero
	// without nbf) and the earlier of exp and verification + maxLife.
	from, until time.Time
}

func newTokenCache(maxLife time.Duration, max int, leeway time.Duration, m *metrics.Metrics) *tokenCache {
	if maxLife <= 0 || max <= 0 {
		return nil
	}
	return &tokenCache{maxLife: maxLife, max: max, leeway: leeway, metrics: m, entries: make(map[[sha256.Size]byte]*list.Element)}
}

// get returns the cached identity of the token hashed to key, valid at now,
// and the generation to pass to put after a miss.
func (c *tokenCache) get(key [sha256.Size]byte, now time.Time) (Identity, uint64, bool) {
	c.mu.Lock()
	el, ok := c.entries[key]
	if ok {
		e := el.Value.(*tokenEntry)
		if now.Before(e.until) && !now.Before(e.from) {
			c.lru.MoveToFront(el)
			id := e.id
			c.mu.Unlock()
			c.metrics.JWTCache("hit")
			// Callers own the identity they get: the map is not shared.
			id.Details = maps.Clone(id.Details)
			return id, 0, true
		}
		c.remove(el)
	}
	gen := c.gen
	c.mu.Unlock()
	c.metrics.JWTCache("miss")
	return Identity{}, gen, false
}

// put caches id for the token raw just verified under generation gen. exp
// and nbf are read from the token's claims (verified a moment ago).
func (c *tokenCache) put(key [sha256.Size]byte, raw string, id Identity, gen uint64, verifiedAt time.Time) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, claims); err != nil {
		return
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return // exp is required, so verification never gets here without one
	}
	nbf, err := claims.GetNotBefore()
	if err != nil {
		return
	}
	e := &tokenEntry{key: key, id: id, until: exp.Time}
	if lim := verifiedAt.Add(c.maxLife); lim.Before(e.until) {
		e.until = lim
	}
	if nbf != nil {
		e.from = nbf.Add(-c.leeway)
	}
	if !verifiedAt.Before(e.until) {
		return // in the leeway after exp: valid now, but never servable from here
	}
	e.id.Details = maps.Clone(id.Details)
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // the key set changed while this token was being verified
	}
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	for len(c.entries) >= c.max {
		c.remove(c.lru.Back())
		c.metrics.JWTCache("eviction")
	}
	c.entries[key] = c.lru.PushFront(e)
}

// remove drops el; c.mu is held.
func (c *tokenCache) remove(el *list.Element) {
	delete(c.entries, el.Value.(*tokenEntry).key)
	c.lru.Remove(el)
}

// flush forgets every entry (the key set changed).
func (c *tokenCache) flush() {
	c.mu.Lock()
	c.gen++
	clear(c.entries)
	c.lru.Init()
	c.mu.Unlock()
	c.metrics.JWTCache("flush")
}

// len is the number of entries (tests).
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// verifyCached is Verify through the cache.
func (a *JWT) verifyCached(raw string) (Identity, error) {
	if a.cache == nil {
		return a.Verify(raw)
	}
	key := sha256.Sum256([]byte(raw))
	now := a.now()
	id, gen, ok := a.cache.get(key, now)
	if ok {
		// Hits keep the key set's periodic refresh going, so a key the
		// identity provider removed flushes the cache on the usual schedule.
		if a.jwks != nil && a.jwks.stale() {
			a.jwks.refreshInBackground()
		}
		return id, nil
	}
	id, err := a.Verify(raw)
	if err == nil {
		a.cache.put(key, raw, id, gen, now)
	}
	return id, err
}
