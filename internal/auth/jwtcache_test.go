package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/validate"
)

// cachedJWT is an Ed25519 JWT authenticator with the verified-token cache,
// a settable clock and metrics.
type cachedJWT struct {
	*JWT
	key   ed25519.PrivateKey
	clock *fakeClock
	m     *metrics.Metrics
}

func newCachedJWT(t *testing.T, maxLife time.Duration, maxEntries int, edit func(*JWTConfig)) *cachedJWT {
	t.Helper()
	k := genKeys(t)
	cfg := JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser",
		Keys:             []JWTKey{{ID: "ed", PublicKeyFile: writePublicPEM(t, t.TempDir(), "ed.pem", k.ed.Public())}},
		CacheMaxLifetime: ptr(duration.Duration(maxLife)), CacheMaxEntries: maxEntries}
	if edit != nil {
		edit(&cfg)
	}
	cfg.ApplyDefaults()
	c := &cachedJWT{key: k.ed, clock: &fakeClock{t: testNow}, m: metrics.New("test")}
	j, err := NewJWT(cfg, WithClock(c.clock.now), WithMetrics(c.m))
	if err != nil {
		t.Fatal(err)
	}
	c.JWT = j
	return c
}

func ptr[T any](v T) *T { return &v }

func newEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// token signs claims valid from now for ttl; edit adjusts them.
func (c *cachedJWT) token(t *testing.T, ttl time.Duration, edit func(jwt.MapClaims)) string {
	t.Helper()
	cl := testClaims(c.clock.now())
	cl["exp"] = c.clock.now().Add(ttl).Unix()
	if edit != nil {
		edit(cl)
	}
	return sign(t, jwt.SigningMethodEdDSA, "ed", cl, c.key)
}

// auth authenticates raw as a bearer token.
func (c *cachedJWT) auth(raw string) (Identity, error) {
	r := httptest.NewRequest("GET", "/credentials", nil)
	r.Header.Set("Authorization", "Bearer "+raw)
	return c.Authenticate(r)
}

func (c *cachedJWT) events(event string) int {
	return int(testutil.ToFloat64(c.m.JWTCacheEvents.WithLabelValues(event)))
}

// expect checks the result of one authentication and the hit and miss
// counts so far.
func (c *cachedJWT) expect(t *testing.T, what, raw, reason string, hits, misses int) Identity {
	t.Helper()
	id, err := c.auth(raw)
	if got := reasonOf(id, err); got != reason {
		t.Fatalf("%s: reason %q, want %q", what, got, reason)
	}
	if h, m := c.events("hit"), c.events("miss"); h != hits || m != misses {
		t.Fatalf("%s: %d hits, %d misses; want %d, %d", what, h, m, hits, misses)
	}
	return id
}

// TestJWTCacheServesUntilExp: a verified token is served from the cache,
// as the same identity, until its exp; past exp (within the leeway) it is
// verified afresh, and beyond the leeway it fails as without a cache.
func TestJWTCacheServesUntilExp(t *testing.T) {
	c := newCachedJWT(t, time.Minute, 0, nil)
	tok := c.token(t, 30*time.Second, func(cl jwt.MapClaims) { cl["job_id"] = "J1" })
	first := c.expect(t, "first use", tok, "", 0, 1)
	second := c.expect(t, "repeat", tok, "", 1, 1)
	if fmt.Sprint(first) != fmt.Sprint(second) || second.JobID != "J1" || second.Details["kid"] != "ed" {
		t.Fatalf("cached identity %+v differs from the verified %+v", second, first)
	}
	second.Details["kid"] = "edited" // callers own what they get
	if id := c.expect(t, "after a caller edited its copy", tok, "", 2, 1); id.Details["kid"] != "ed" {
		t.Fatalf("a caller's edit reached the cache: %+v", id.Details)
	}
	c.clock.add(29 * time.Second)
	c.expect(t, "just before exp", tok, "", 3, 1)
	c.clock.add(time.Second)
	// At exp the default 30s leeway still accepts the token: verified
	// again (a miss), and not cached, since it may not be served past exp.
	c.expect(t, "at exp, within the leeway", tok, "", 3, 2)
	c.expect(t, "again within the leeway", tok, "", 3, 3)
	c.clock.add(30 * time.Second)
	c.expect(t, "past exp and leeway", tok, "jwt_expired", 3, 4)
	if n := c.cache.len(); n != 0 {
		t.Fatalf("%d entries, want 0", n)
	}
}

// TestJWTCacheMaxLifetime: an entry lives at most cache_max_lifetime, then
// the token is verified again (and cached again); 0s turns the cache off.
func TestJWTCacheMaxLifetime(t *testing.T) {
	c := newCachedJWT(t, time.Minute, 0, nil)
	tok := c.token(t, time.Hour, nil)
	c.expect(t, "first", tok, "", 0, 1)
	c.clock.add(59 * time.Second)
	c.expect(t, "59s later", tok, "", 1, 1)
	c.clock.add(time.Second)
	c.expect(t, "at the max lifetime", tok, "", 1, 2)
	c.expect(t, "cached again", tok, "", 2, 2)

	off := newCachedJWT(t, 0, 0, nil)
	if off.cache != nil {
		t.Fatal("cache_max_lifetime 0s: the cache is on")
	}
	tok = off.token(t, time.Hour, nil)
	for i := 0; i < 3; i++ {
		off.expect(t, "cache off", tok, "", 0, 0)
	}
}

// TestJWTCacheNotBefore: a hit is served only where verification would
// accept the token, nbf minus leeway included (a clock stepped back).
func TestJWTCacheNotBefore(t *testing.T) {
	c := newCachedJWT(t, time.Hour, 0, nil)
	tok := c.token(t, time.Hour, func(cl jwt.MapClaims) { cl["nbf"] = c.clock.now().Add(10 * time.Second).Unix() })
	c.expect(t, "nbf within the leeway", tok, "", 0, 1)
	c.expect(t, "cached", tok, "", 1, 1)
	c.clock.add(-25 * time.Second) // now nbf is 35s ahead, beyond the 30s leeway
	c.expect(t, "clock stepped back", tok, "jwt_not_yet_valid", 1, 2)
}

// TestJWTCacheNeverCachesFailures: refused tokens are verified (and
// refused) every time and never take a cache entry.
func TestJWTCacheNeverCachesFailures(t *testing.T) {
	c := newCachedJWT(t, time.Minute, 0, nil)
	forged := sign(t, jwt.SigningMethodEdDSA, "ed", testClaims(c.clock.now()), newEd25519(t))
	noOrg := c.token(t, time.Hour, func(cl jwt.MapClaims) { delete(cl, "org") })
	badBinding := c.token(t, time.Hour, func(cl jwt.MapClaims) { cl["job_id"] = 7 })
	misses := 0
	for i := 0; i < 3; i++ {
		for _, tc := range []struct{ tok, reason string }{
			{forged, "jwt_bad_signature"}, {noOrg, "jwt_no_org"}, {badBinding, "jwt_bad_binding"}, {"a.b.c", "jwt_malformed"},
		} {
			misses++
			c.expect(t, tc.reason, tc.tok, tc.reason, 0, misses)
		}
	}
	if n := c.cache.len(); n != 0 {
		t.Fatalf("%d entries after failures only, want 0", n)
	}
}

// TestJWTCacheIsBounded: a flood of distinct valid tokens never holds more
// than cache_max_entries; the least recently used go first.
func TestJWTCacheIsBounded(t *testing.T) {
	c := newCachedJWT(t, time.Minute, 50, nil)
	keep := c.token(t, time.Hour, func(cl jwt.MapClaims) { cl["jti"] = "keep" })
	c.expect(t, "kept token", keep, "", 0, 1)
	hits := 0
	for i := 0; i < 500; i++ {
		tok := c.token(t, time.Hour, func(cl jwt.MapClaims) { cl["jti"] = fmt.Sprint(i) })
		if _, err := c.auth(tok); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 { // used often: stays
			if _, err := c.auth(keep); err != nil {
				t.Fatal(err)
			}
			hits++
		}
		if n := c.cache.len(); n > 50 {
			t.Fatalf("%d entries, over the bound of 50", n)
		}
	}
	if got := c.events("eviction"); got != 501-50 {
		t.Fatalf("%d evictions, want %d", got, 501-50)
	}
	c.expect(t, "recently used token survived", keep, "", hits+1, 501)
}

// TestJWTCacheFlushesOnKeyChange: a JWKS refresh that changes the key set
// flushes the cache, so a token signed by a removed key is refused at
// once; a refresh that returns the same keys keeps it. A verification
// that began before the flush is not cached after it.
func TestJWTCacheFlushesOnKeyChange(t *testing.T) {
	k := genKeys(t)
	edOther := newEd25519(t)
	clock := &fakeClock{t: testNow}
	srv := newJWKSServer(t, jwkSet(jwk(t, k.ed.Public(), "k1", "EdDSA", "sig"), jwk(t, edOther.Public(), "k2", "EdDSA", "sig")))
	m := metrics.New("test")
	cfg := JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser", JWKSURL: srv.URL, CacheMaxLifetime: ptr(duration.Duration(time.Hour))}
	cfg.ApplyDefaults()
	j, err := NewJWT(cfg, WithClock(clock.now), WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	c := &cachedJWT{JWT: j, key: k.ed, clock: clock, m: m}
	cl := testClaims(clock.now())
	cl["exp"] = clock.now().Add(2 * time.Hour).Unix()
	tok1 := sign(t, jwt.SigningMethodEdDSA, "k1", cl, k.ed)
	tok2 := sign(t, jwt.SigningMethodEdDSA, "k2", cl, edOther)
	c.expect(t, "k1", tok1, "", 0, 1)
	c.expect(t, "k2", tok2, "", 0, 2)
	c.expect(t, "k1 cached", tok1, "", 1, 2)

	// The periodic refresh, with the same keys: nothing is flushed.
	clock.add(6 * time.Minute)
	c.expect(t, "k1 starts a refresh", tok1, "", 2, 2)
	j.jwks.bg.Wait()
	if n := srv.fetches.Load(); n != 2 || c.events("flush") != 0 {
		t.Fatalf("%d fetches, %d flushes; want 2 and 0", n, c.events("flush"))
	}
	c.expect(t, "k1 still cached", tok1, "", 3, 2)

	// k1 is removed at the identity provider: the next refresh flushes.
	srv.set(jwkSet(jwk(t, edOther.Public(), "k2", "EdDSA", "sig")), 200)
	clock.add(6 * time.Minute)
	c.expect(t, "k2 starts a refresh", tok2, "", 4, 2)
	j.jwks.bg.Wait()
	if c.events("flush") != 1 {
		t.Fatalf("%d flushes after the key set changed, want 1", c.events("flush"))
	}
	c.expect(t, "k1 after its key was removed", tok1, "jwt_bad_signature", 4, 3)
	c.expect(t, "k2 verified again", tok2, "", 4, 4)
	c.expect(t, "k2 cached again", tok2, "", 5, 4)

	// A verification in flight across a flush is not cached.
	key := sha256.Sum256([]byte(tok1))
	_, gen, _ := j.cache.get(key, clock.now())
	j.cache.flush()
	j.cache.put(key, tok1, Identity{Principal: "worker-1", Org: "acme"}, gen, clock.now())
	if n := j.cache.len(); n != 0 {
		t.Fatalf("an identity verified before the flush was cached after it (%d entries)", n)
	}
}

// TestJWTCacheConcurrent exercises the cache under the race detector.
func TestJWTCacheConcurrent(t *testing.T) {
	c := newCachedJWT(t, time.Minute, 8, nil)
	toks := make([]string, 16)
	for i := range toks {
		toks[i] = c.token(t, time.Hour, func(cl jwt.MapClaims) { cl["jti"] = fmt.Sprint(i) })
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := c.auth(toks[(g+i)%len(toks)]); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					c.cache.flush()
				}
			}
		}()
	}
	wg.Wait()
	if n := c.cache.len(); n > 8 {
		t.Fatalf("%d entries, over the bound", n)
	}
}

func TestJWTCacheConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*JWTConfig)
		problem string
	}{
		{"defaults", func(*JWTConfig) {}, ""},
		{"off", func(c *JWTConfig) { c.CacheMaxLifetime = ptr(duration.Duration(0)) }, ""},
		{"negative lifetime", func(c *JWTConfig) { c.CacheMaxLifetime = ptr(duration.Duration(-time.Second)) }, "auth.jwt.cache_max_lifetime"},
		{"lifetime over 1h", func(c *JWTConfig) { c.CacheMaxLifetime = ptr(duration.Duration(2 * time.Hour)) }, "auth.jwt.cache_max_lifetime"},
		{"negative entries", func(c *JWTConfig) { c.CacheMaxEntries = -1 }, "auth.jwt.cache_max_entries"},
		{"too many entries", func(c *JWTConfig) { c.CacheMaxEntries = 2000000 }, "auth.jwt.cache_max_entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := genKeys(t)
			c := JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser",
				Keys: []JWTKey{{ID: "ed", PublicKeyFile: writePublicPEM(t, t.TempDir(), "ed.pem", k.ed.Public())}}}
			tc.edit(&c)
			c.ApplyDefaults()
			var p validate.Problems
			c.Validate(&p, "auth.jwt")
			err := p.Err()
			switch {
			case tc.problem == "" && err != nil:
				t.Fatalf("unexpected problems: %v", err)
			case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
				t.Fatalf("problems %v, want one at %s", err, tc.problem)
			}
			if tc.name == "defaults" && (c.CacheMaxLifetime.D() != time.Minute || c.CacheMaxEntries != 10000) {
				t.Fatalf("defaults %s / %d, want 1m / 10000", c.CacheMaxLifetime, c.CacheMaxEntries)
			}
		})
	}
}
