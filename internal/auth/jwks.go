package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/vtk/dispenser/internal/validate"
)

// maxJWKSBytes bounds the body read from a JWKS endpoint.
const maxJWKSBytes = 1 << 20

// jwksSource caches the keys of a JSON Web Key Set.
//
// Requests never wait on the network for a periodic refresh: once keys are
// cached, a stale set is served while one background fetch replaces it. A
// request waits only when it names a kid the cache does not hold (a rotated
// key), and then at most for the client timeout; such refetches happen at
// most once per minGap however many requests miss, and concurrent misses
// share one fetch. A failed fetch keeps the cached keys.
type jwksSource struct {
	url     string
	refresh time.Duration
	minGap  time.Duration
	client  *http.Client
	log     *zap.Logger
	now     func() time.Time
	// onChange, when set, runs after a fetch replaced the keys with a
	// different set (the verified-token cache flushes).
	onChange func()

	cached atomic.Pointer[[]verificationKey]
	group  singleflight.Group
	bg     sync.WaitGroup // background refreshes, for tests

	mu          sync.Mutex
	fetched     time.Time // last successful fetch
	attempted   time.Time // last fetch attempt (success or not)
	refreshing  bool
	fetches     int // attempts, for tests
	lastFailure error
}

func newJWKSSource(url string, refresh, minGap, timeout time.Duration, client *http.Client, log *zap.Logger, now func() time.Time) *jwksSource {
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	// A redirect may not leave the rules jwks_url itself obeys: an open
	// redirect at the issuer must not hand the key set to plain http.
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("JWKS: too many redirects")
		}
		if err := validate.ServiceURL(req.URL.String()); err != nil {
			return fmt.Errorf("JWKS: refusing redirect: %w", err)
		}
		return nil
	}
	client = &c
	if log == nil {
		log = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	return &jwksSource{url: url, refresh: refresh, minGap: minGap, client: client, log: log, now: now}
}

// keys returns the keys to try for kid (all cached keys; keyFor filters).
func (s *jwksSource) keys(kid string) []verificationKey {
	cur := s.cached.Load()
	if cur == nil || (kid != "" && !hasKid(*cur, kid)) {
		// Nothing cached yet, or a kid we have never seen (rotation): fetch
		// now if the rate limit allows, sharing the fetch with concurrent
		// misses.
		if s.mayFetch() {
			_, _, _ = s.group.Do("fetch", func() (any, error) { return nil, s.fetch(context.Background()) })
		}
		cur = s.cached.Load()
	} else if s.stale() {
		s.refreshInBackground()
	}
	if cur == nil {
		return nil
	}
	return *cur
}

// errJWKSUnavailable means no cached key fits and the last fetch failed.
var errJWKSUnavailable = errors.New("JWKS unavailable: the last fetch failed and no cached key fits")

// failing reports whether the most recent fetch attempt failed.
func (s *jwksSource) failing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFailure != nil
}

func hasKid(keys []verificationKey, kid string) bool {
	for _, k := range keys {
		if k.id == kid {
			return true
		}
	}
	return false
}

// mayFetch applies the refetch rate limit.
func (s *jwksSource) mayFetch() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempted.IsZero() || s.now().Sub(s.attempted) >= s.minGap
}

func (s *jwksSource) stale() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now().Sub(s.fetched) >= s.refresh && s.now().Sub(s.attempted) >= s.minGap && !s.refreshing
}

func (s *jwksSource) refreshInBackground() {
	s.mu.Lock()
	if s.refreshing {
		s.mu.Unlock()
		return
	}
	s.refreshing = true
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		_, _, _ = s.group.Do("fetch", func() (any, error) { return nil, s.fetch(context.Background()) })
		s.mu.Lock()
		s.refreshing = false
		s.mu.Unlock()
	}()
}

// fetch downloads and parses the set; on any error the cache is kept.
func (s *jwksSource) fetch(ctx context.Context) error {
	s.mu.Lock()
	s.attempted = s.now()
	s.fetches++
	s.mu.Unlock()
	keys, err := s.download(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastFailure = err
		s.log.Warn("JWKS fetch failed; keeping the cached keys", zap.String("url", s.url), zap.Error(err))
		return err
	}
	s.lastFailure = nil
	s.fetched = s.now()
	old := s.cached.Swap(&keys)
	if old != nil && s.onChange != nil && !sameKeys(*old, keys) {
		s.onChange()
	}
	return nil
}

// privateKey is a private key that yields its public half (every
// crypto/* private key type has Public): a JWKS that publishes private
// keys is used only for their public halves.
type privateKey interface {
	Public() crypto.PublicKey
}

// comparableKey is a public key that can tell whether another is the same
// (every crypto/* public key type has Equal).
type comparableKey interface {
	Equal(crypto.PublicKey) bool
}

// sameKeys reports whether two key sets verify exactly the same tokens.
func sameKeys(a, b []verificationKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		k, ok := a[i].key.(comparableKey)
		if a[i].id != b[i].id || !slices.Equal(a[i].algs, b[i].algs) || !ok || !k.Equal(b[i].key) {
			return false
		}
	}
	return true
}

func (s *jwksSource) download(ctx context.Context) ([]verificationKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS endpoint answered %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS is larger than %d bytes", maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(b)
	for _, sk := range skipped {
		s.log.Warn("JWKS key skipped", zap.String("url", s.url), zap.String("reason", sk))
	}
	return keys, err
}

// parseJWKS parses a JWK Set into verification keys. Keys meant for
// encryption, symmetric keys (a published HMAC secret would let anyone mint
// tokens), malformed keys and keys whose alg does not fit their type are
// skipped, not fatal: one bad key must not take the whole set down.
func parseJWKS(b []byte) ([]verificationKey, []string, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, nil, fmt.Errorf("parse JWKS: no \"keys\" member")
	}
	var out []verificationKey
	var skipped []string
	for i, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		if jwk.Use != "" && jwk.Use != "sig" {
			continue
		}
		key := jwk.Key
		if _, sym := key.([]byte); sym {
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): symmetric keys are not accepted from a JWKS", i, jwk.KeyID))
			continue
		}
		if !jwk.IsPublic() {
			if pk, ok := key.(privateKey); ok {
				key = pk.Public()
			}
		}
		var algs []string
		if jwk.Algorithm != "" {
			algs = []string{jwk.Algorithm}
		}
		vk, err := newVerificationKey(jwk.KeyID, key, algs)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %q): %v", i, jwk.KeyID, err))
			continue
		}
		out = append(out, vk)
	}
	return out, skipped, nil
}
