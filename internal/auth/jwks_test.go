package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
)

func jwk(t testing.TB, key crypto.PublicKey, kid, alg, use string) json.RawMessage {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: use}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jwkSet(keys ...json.RawMessage) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// jwksServer serves a mutable key set and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	status  int
	fetches atomic.Int32
	block   chan struct{} // when non-nil, handlers wait on it
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{body: body, status: 200}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, status, block := s.body, s.status, s.block
		s.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = body, status
}

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newJWKSAuth(t *testing.T, url string, clock *fakeClock, timeout time.Duration) *JWT {
	t.Helper()
	cfg := JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser", JWKSURL: url,
		JWKSRefresh: duration.Duration(5 * time.Minute), JWKSMinInterval: duration.Duration(time.Minute),
		JWKSTimeout: duration.Duration(timeout)}
	j, err := NewJWT(cfg, WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func reasonOf(_ Identity, err error) string {
	if err == nil {
		return ""
	}
	return fault.From(err).Reason
}

func TestParseJWKS(t *testing.T) {
	k := genKeys(t)
	set := jwkSet(
		jwk(t, &k.rsa.PublicKey, "rsa", "", ""),
		jwk(t, &k.rsaOther.PublicKey, "rsa-ps", "PS256", "sig"),
		jwk(t, &k.ec256.PublicKey, "ec", "", ""),
		jwk(t, k.ed.Public(), "ed", "EdDSA", ""),
		jwk(t, &k.rsa.PublicKey, "enc", "RSA-OAEP", "enc"),
		jwk(t, &k.ec384.PublicKey, "mismatch", "RS256", ""),
		json.RawMessage(`{"kty":"oct","kid":"hmac","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`),
		json.RawMessage(`{"kty":"RSA","kid":"broken","n":"!!","e":"AQAB"}`),
		json.RawMessage(`{"kty":"XYZ","kid":"unknown-kty"}`),
	)
	keys, skipped, err := parseJWKS(set)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, vk := range keys {
		got[vk.id] = vk.algs
	}
	want := map[string]string{"rsa": "RS256,PS256", "rsa-ps": "PS256", "ec": "ES256", "ed": "EdDSA"}
	if len(got) != len(want) {
		t.Fatalf("keys %v, want %v (skipped %v)", got, want, skipped)
	}
	for kid, algs := range want {
		if strings.Join(got[kid], ",") != algs {
			t.Errorf("kid %s algs %v, want %s", kid, got[kid], algs)
		}
	}
	if len(skipped) != 4 { // mismatch, hmac, broken, unknown-kty (enc is silently not for us)
		t.Errorf("skipped %d: %v", len(skipped), skipped)
	}
	for _, bad := range []string{`{}`, `not json`, `{"keys":{}}`} {
		if _, _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%s) accepted", bad)
		}
	}
}

func TestJWKSRotationRateLimitAndOutage(t *testing.T) {
	k := genKeys(t)
	clock := &fakeClock{t: testNow}
	srv := newJWKSServer(t, jwkSet(jwk(t, &k.rsa.PublicKey, "k1", "RS256", "sig")))
	j := newJWKSAuth(t, srv.URL, clock, 5*time.Second)
	claims := func() jwt.MapClaims { return testClaims(clock.now()) }

	// First use fetches; the key works.
	if _, err := j.Verify(sign(t, jwt.SigningMethodRS256, "k1", claims(), k.rsa)); err != nil {
		t.Fatalf("k1: %v", err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("fetches %d, want 1", n)
	}
	// An RSA JWK never verifies an HMAC token keyed with its public bytes.
	if r := reasonOf(j.Verify(sign(t, jwt.SigningMethodHS256, "k1", claims(), []byte(k.rsa.N.Bytes())))); r != "jwt_bad_signature" {
		t.Fatalf("HS256 against RSA JWK: %q", r)
	}

	// Rotation: k2 appears at the IdP. Within the rate limit an unknown kid
	// triggers no fetch at all and is refused.
	srv.set(jwkSet(jwk(t, &k.rsa.PublicKey, "k1", "RS256", "sig"), jwk(t, &k.rsaOther.PublicKey, "k2", "RS256", "sig")), 200)
	tok2 := func() string { return sign(t, jwt.SigningMethodRS256, "k2", claims(), k.rsaOther) }
	clock.add(10 * time.Second)
	for i := 0; i < 5; i++ {
		if r := reasonOf(j.Verify(tok2())); r != "jwt_bad_signature" {
			t.Fatalf("k2 before refetch allowed: %q", r)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("rate limit broken: %d fetches", n)
	}
	// After the minimum interval the unknown kid refetches once and works.
	clock.add(time.Minute)
	if _, err := j.Verify(tok2()); err != nil {
		t.Fatalf("k2 after refetch: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("fetches %d, want 2", n)
	}
	// Unknown kids keep being rate-limited.
	for i := 0; i < 5; i++ {
		_, _ = j.Verify(sign(t, jwt.SigningMethodRS256, "k-unknown", claims(), k.rsa))
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("unknown kid storm: %d fetches", n)
	}

	// Outage: the IdP fails; after the refresh interval a background refresh
	// fails and the cached keys keep working.
	srv.set([]byte("oops"), 500)
	clock.add(10 * time.Minute)
	if _, err := j.Verify(sign(t, jwt.SigningMethodRS256, "k1", claims(), k.rsa)); err != nil {
		t.Fatalf("k1 during outage: %v", err)
	}
	j.jwks.bg.Wait()
	if n := srv.fetches.Load(); n != 3 {
		t.Fatalf("fetches %d, want 3 (one background refresh)", n)
	}
	if _, err := j.Verify(sign(t, jwt.SigningMethodRS256, "k2", claims(), k.rsaOther)); err != nil {
		t.Fatalf("k2 during outage: %v", err)
	}
	// A removed key disappears after the next successful refresh.
	srv.set(jwkSet(jwk(t, &k.rsaOther.PublicKey, "k2", "RS256", "sig")), 200)
	clock.add(10 * time.Minute)
	_, _ = j.Verify(tok2()) // served from cache, refresh starts in the background
	j.jwks.bg.Wait()
	if r := reasonOf(j.Verify(sign(t, jwt.SigningMethodRS256, "k1", claims(), k.rsa))); r != "jwt_bad_signature" {
		t.Fatalf("removed k1 still accepted: %q", r)
	}
}

func TestJWKSConcurrentMissesCollapse(t *testing.T) {
	k := genKeys(t)
	clock := &fakeClock{t: testNow}
	srv := newJWKSServer(t, jwkSet(jwk(t, k.ed.Public(), "ed", "", "")))
	block := make(chan struct{})
	srv.mu.Lock()
	srv.block = block
	srv.mu.Unlock()
	j := newJWKSAuth(t, srv.URL, clock, 5*time.Second)
	tok := sign(t, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := j.Verify(tok)
			errs <- err
		}()
	}
	// Wait until the one fetch is in flight, then let it finish.
	for srv.fetches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(block)
	wg.Wait()
	close(errs)
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 20 concurrent misses", n)
	}
	for err := range errs {
		// Requests that arrived after the fetch began may either have joined
		// it (accepted) or found the rate limit (refused); none may hang or
		// trigger another fetch.
		if err != nil && reasonOf(Identity{}, err) != "jwt_bad_signature" {
			t.Fatalf("unexpected error %v", err)
		}
	}
	if _, err := j.Verify(tok); err != nil {
		t.Fatalf("after fetch: %v", err)
	}
}

func TestJWKSSlowEndpointTimesOut(t *testing.T) {
	k := genKeys(t)
	clock := &fakeClock{t: testNow}
	srv := newJWKSServer(t, jwkSet(jwk(t, k.ed.Public(), "ed", "", "")))
	block := make(chan struct{})
	srv.mu.Lock()
	srv.block = block
	srv.mu.Unlock()
	defer close(block)
	j := newJWKSAuth(t, srv.URL, clock, 50*time.Millisecond)
	_, err := j.Verify(sign(t, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed))
	if reasonOf(Identity{}, err) != "jwt_jwks_unavailable" || !fault.Is(err, fault.BackendUnavailable) || fault.From(err).RetryAfter == 0 {
		t.Fatalf("got %v", err)
	}
	// Within the rate limit the next request does not wait on the endpoint.
	before := srv.fetches.Load()
	_, _ = j.Verify(sign(t, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed))
	if srv.fetches.Load() != before {
		t.Fatal("refetched inside the rate limit")
	}
}

func TestStaticKidSkipsJWKS(t *testing.T) {
	k := genKeys(t)
	srv := newJWKSServer(t, jwkSet(jwk(t, &k.rsa.PublicKey, "remote", "RS256", "sig")))
	cfg := JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser", JWKSURL: srv.URL,
		Keys: []JWTKey{{ID: "local", PublicKeyFile: writePublicPEM(t, t.TempDir(), "ed.pem", k.ed.Public())}}}
	j, err := NewJWT(cfg, WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Verify(sign(t, jwt.SigningMethodEdDSA, "local", testClaims(testNow), k.ed)); err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 0 {
		t.Fatalf("a configured kid fetched the JWKS %d times", n)
	}
	if _, err := j.Verify(sign(t, jwt.SigningMethodRS256, "remote", testClaims(testNow), k.rsa)); err != nil {
		t.Fatal(err)
	}
}

// recordingTransport records every URL requested through it.
type recordingTransport struct {
	mu   sync.Mutex
	urls []string
	next http.RoundTripper
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// TestJWKSRedirectMustStayHTTPS: a redirect from the key set's https URL
// to plain http (an open redirect at the issuer) is not followed; one to
// another https URL is.
func TestJWKSRedirectMustStayHTTPS(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwkSet(jwk(t, pub, "k1", "EdDSA", "sig")))
	})
	mux.Handle("/to-http", http.RedirectHandler("http://keys.example.invalid/jwks.json", http.StatusFound))
	mux.Handle("/to-https", http.RedirectHandler(srv.URL+"/jwks.json", http.StatusFound))
	for _, tc := range []struct {
		path   string
		follow bool
	}{
		{"/to-http", false},
		{"/to-https", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rt := &recordingTransport{next: srv.Client().Transport}
			src := newJWKSSource(srv.URL+tc.path, time.Hour, time.Second, 5*time.Second, &http.Client{Transport: rt}, nil, nil)
			err := src.fetch(t.Context())
			if tc.follow != (err == nil) {
				t.Fatalf("fetch = %v, want followed=%v", err, tc.follow)
			}
			if !tc.follow && len(rt.urls) != 1 {
				t.Fatalf("requested %v; the http redirect must not be followed", rt.urls)
			}
		})
	}
}
