package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/ratelimit"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/vend"
)

// fakeAuth trusts X-Test-Principal / X-Test-Org headers.
type fakeAuth struct {
	Fn func(r *http.Request) (auth.Identity, error)
}

func (f *fakeAuth) Authenticate(r *http.Request) (auth.Identity, error) { return f.Fn(r) }

var _ auth.Authenticator = (*fakeAuth)(nil)

func headerAuth(method auth.Method) *fakeAuth {
	return &fakeAuth{Fn: func(r *http.Request) (auth.Identity, error) {
		p := r.Header.Get("X-Test-Principal")
		if p == "" {
			return auth.Identity{}, fault.New(fault.Unauthorized, "jwt_missing", "no credentials")
		}
		return auth.Identity{Principal: p, Org: r.Header.Get("X-Test-Org"), Method: method}, nil
	}}
}

// cachingVendor is a caching vendor: Cached and Forget are optional
// abilities.
type cachingVendor struct {
	VendFn   func(ctx context.Context, g scope.Grant) (vend.Credentials, error)
	CachedFn func(g scope.Grant) bool
	ForgetFn func(g scope.Grant)
}

func (f *cachingVendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	return f.VendFn(ctx, g)
}
func (f *cachingVendor) Cached(g scope.Grant) bool { return f.CachedFn != nil && f.CachedFn(g) }
func (f *cachingVendor) Forget(g scope.Grant) bool {
	if f.ForgetFn != nil {
		f.ForgetFn(g)
	}
	return true
}

var (
	_ vend.Vendor       = (*cachingVendor)(nil)
	_ vend.CacheChecker = (*cachingVendor)(nil)
	_ vend.Forgetter    = (*cachingVendor)(nil)
)

func keyVendor(keys ...string) (*cachingVendor, *atomic.Int32) {
	var n atomic.Int32
	return &cachingVendor{VendFn: func(_ context.Context, g scope.Grant) (vend.Credentials, error) {
		i := int(n.Add(1)) - 1
		k := keys[len(keys)-1]
		if i < len(keys) {
			k = keys[i]
		}
		return vend.Credentials{AccessKeyID: k, SecretAccessKey: secret.Secret("s"), SessionToken: secret.Secret("t"),
			Expiration: time.Now().Add(time.Hour), PackedPolicySize: -1}, nil
	}}, &n
}

func newServer(t *testing.T, o api.Options) *httptest.Server {
	t.Helper()
	rules, err := scope.Compile([]scope.Tenant{{Org: "acme", Backend: "default", Grants: []scope.GrantRule{{Bucket: "media", Prefixes: []string{"acme/"}, Operations: []string{"get", "put"}}}}},
		map[string]bool{"default": true})
	if err != nil {
		t.Fatal(err)
	}
	o.Rules = rules
	if o.Authenticator == nil {
		o.Authenticator = headerAuth(auth.MethodJWT)
	}
	if o.MinRemaining == 0 {
		o.MinRemaining = 5 * time.Minute
	}
	s := api.New(o)
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, principal, query string) (*http.Response, api.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/credentials?operation=get&location=s3://media/acme/in/"+query, nil)
	req.Header.Set("X-Test-Principal", principal)
	req.Header.Set("X-Test-Org", "acme")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body api.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("error Content-Type = %q", ct)
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
	}
	return resp, body
}

func TestRateLimit429(t *testing.T) {
	lim, err := ratelimit.New(ratelimit.Config{PerPrincipal: ratelimit.Limit{Rate: 0.01, Burst: 2}}, ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, calls := keyVendor("ASIAONE")
	srv := newServer(t, api.Options{Vendor: v, Limiter: lim})
	for i := 0; i < 2; i++ {
		if resp, body := get(t, srv, "w1", ""); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %+v", i, resp.StatusCode, body)
		}
	}
	resp, body := get(t, srv, "w1", "")
	if resp.StatusCode != http.StatusTooManyRequests || body.Code != "Throttled" || body.Message == "" {
		t.Fatalf("over the limit: %d %+v, want 429 Throttled", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "100" {
		t.Fatalf("Retry-After = %q, want 100 (one token at 0.01/s)", ra)
	}
	if calls.Load() != 2 {
		t.Fatalf("vendor called %d times, want 2 (a throttled request never reaches it)", calls.Load())
	}
	// Dry runs do not issue, so they are not limited.
	if resp, body := get(t, srv, "w1", "&dry_run=true"); resp.StatusCode != 200 {
		t.Fatalf("dry run throttled: %d %+v", resp.StatusCode, body)
	}
	// Another principal has its own bucket.
	if resp, _ := get(t, srv, "w2", ""); resp.StatusCode != 200 {
		t.Fatalf("w2 throttled by w1's bucket: %d", resp.StatusCode)
	}
}

// TestRateLimitCountsCachedGrants: a grant the vendor serves from its
// cache spends a token like any issuance (each is an audit record), and
// is refused with 429 past the budget.
func TestRateLimitCountsCachedGrants(t *testing.T) {
	lim, _ := ratelimit.New(ratelimit.Config{PerPrincipal: ratelimit.Limit{Rate: 0.01, Burst: 2}}, ratelimit.Options{})
	v, calls := keyVendor("ASIAONE")
	v.CachedFn = func(g scope.Grant) bool { return true }
	srv := newServer(t, api.Options{Vendor: v, Limiter: lim})
	for i := 0; i < 2; i++ {
		if resp, body := get(t, srv, "w1", ""); resp.StatusCode != 200 {
			t.Fatalf("cached grant %d within the budget: %d %+v", i, resp.StatusCode, body)
		}
	}
	resp, body := get(t, srv, "w1", "")
	if resp.StatusCode != http.StatusTooManyRequests || body.Code != "Throttled" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("cached grant over the budget: %d %+v, want 429 Throttled with Retry-After", resp.StatusCode, body)
	}
	if calls.Load() != 2 {
		t.Fatalf("vendor calls = %d, want 2 (a throttled request never reaches it)", calls.Load())
	}
}

func TestRevocationRefusesEachKind(t *testing.T) {
	for _, tc := range []struct {
		kind  revoke.Kind
		value string
		query string
	}{
		{revoke.KindOrg, "acme", ""},
		{revoke.KindPrincipal, "w1", ""},
		{revoke.KindJob, "job-7", "&job_id=job-7"},
		{revoke.KindTask, "task-9", "&job_id=job-7&task_id=task-9"},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
			v, calls := keyVendor("ASIAONE")
			srv := newServer(t, api.Options{Vendor: v, Revocations: reg})
			if resp, _ := get(t, srv, "w1", tc.query); resp.StatusCode != 200 {
				t.Fatalf("before revocation: %d", resp.StatusCode)
			}
			if _, err := reg.Add(context.Background(), revoke.Revocation{Kind: tc.kind, Value: tc.value, Reason: "test"}, "ops"); err != nil {
				t.Fatal(err)
			}
			resp, body := get(t, srv, "w1", tc.query)
			if resp.StatusCode != 403 || body.Code != "AccessDenied" || !strings.Contains(body.Message, "revoked") {
				t.Fatalf("after revocation: %d %+v", resp.StatusCode, body)
			}
			if calls.Load() != 1 {
				t.Fatalf("vendor called %d times", calls.Load())
			}
			// Unrelated callers are unaffected (except by an org revocation).
			if tc.kind != revoke.KindOrg {
				if resp, _ := get(t, srv, "w2", ""); resp.StatusCode != 200 {
					t.Fatalf("unrelated caller refused: %d", resp.StatusCode)
				}
			}
		})
	}
}

func TestRevokedAccessKey(t *testing.T) {
	t.Run("forgettable cache vends afresh", func(t *testing.T) {
		reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
		v, calls := keyVendor("ASIALEAKED", "ASIAFRESH")
		var forgot atomic.Int32
		v.ForgetFn = func(scope.Grant) { forgot.Add(1) }
		srv := newServer(t, api.Options{Vendor: v, Revocations: reg})
		_, _ = reg.Add(context.Background(), revoke.Revocation{Kind: revoke.KindAccessKeyID, Value: "ASIALEAKED", Reason: "leaked"}, "ops")
		resp, _ := get(t, srv, "w1", "")
		var c api.ContainerCredentials
		_ = json.NewDecoder(resp.Body).Decode(&c)
		if resp.StatusCode != 200 || forgot.Load() != 1 || calls.Load() != 2 {
			t.Fatalf("status %d, forgot %d, calls %d: want the fresh key served", resp.StatusCode, forgot.Load(), calls.Load())
		}
	})
	t.Run("no forget: refused", func(t *testing.T) {
		reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
		inner, _ := keyVendor("ASIALEAKED")
		v := struct{ vend.Vendor }{inner} // hides Forget
		srv := newServer(t, api.Options{Vendor: v, Revocations: reg})
		_, _ = reg.Add(context.Background(), revoke.Revocation{Kind: revoke.KindAccessKeyID, Value: "ASIALEAKED", Reason: "leaked"}, "ops")
		resp, body := get(t, srv, "w1", "")
		if resp.StatusCode != 403 || body.Code != "AccessDenied" {
			t.Fatalf("revoked key served: %d %+v", resp.StatusCode, body)
		}
	})
}

func adminDo(t *testing.T, srv *httptest.Server, method, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("X-Test-Principal", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestRevocationAdminAPI(t *testing.T) {
	reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
	v, _ := keyVendor("ASIAONE")
	admin := &fakeAuth{Fn: func(r *http.Request) (auth.Identity, error) {
		if r.Header.Get("X-Test-Principal") != "admin-1" {
			return auth.Identity{}, fault.New(fault.Unauthorized, "admin_bad_token", "admin token is not accepted")
		}
		return auth.Identity{Principal: "admin-1", Org: "*", Method: auth.MethodAdmin}, nil
	}}
	srv := newServer(t, api.Options{Vendor: v, Revocations: reg, RevocationAdmin: reg, AdminAuthenticator: admin})

	if resp, _ := adminDo(t, srv, "GET", "/v1/revocations", "w1", ""); resp.StatusCode != 401 {
		t.Fatalf("worker on admin API: %d, want 401", resp.StatusCode)
	}
	for _, bad := range []string{`{"kind":"tenant","value":"x","reason":"r"}`, `{"kind":"job","value":"x"}`, `{"kind":"job","value":"x","reason":"r","extra":1}`, `not json`} {
		if resp, b := adminDo(t, srv, "POST", "/v1/revocations", "admin-1", bad); resp.StatusCode != 400 {
			t.Fatalf("POST %s: %d %s, want 400", bad, resp.StatusCode, b)
		}
	}
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	resp, b := adminDo(t, srv, "POST", "/v1/revocations", "admin-1", `{"kind":"principal","value":"w1","reason":"compromised","expires_at":"`+exp+`"}`)
	if resp.StatusCode != 201 {
		t.Fatalf("POST: %d %s", resp.StatusCode, b)
	}
	var created api.RevocationView
	if err := json.Unmarshal(b, &created); err != nil || created.ID == "" || !created.Active || created.CreatedBy != "admin-1" || created.ExpiresAt == nil {
		t.Fatalf("created %s (%v)", b, err)
	}
	if resp.Header.Get("Location") != "/v1/revocations/"+created.ID {
		t.Fatalf("Location = %q", resp.Header.Get("Location"))
	}
	if resp, _ := get(t, srv, "w1", ""); resp.StatusCode != 403 {
		t.Fatalf("revoked principal served: %d", resp.StatusCode)
	}
	resp, b = adminDo(t, srv, "GET", "/v1/revocations", "admin-1", "")
	var list api.RevocationList
	if err := json.Unmarshal(b, &list); err != nil || resp.StatusCode != 200 || len(list.Revocations) != 1 || list.Revocations[0].ID != created.ID {
		t.Fatalf("GET: %d %s", resp.StatusCode, b)
	}
	if resp, b := adminDo(t, srv, "DELETE", "/v1/revocations/"+created.ID, "admin-1", ""); resp.StatusCode != 204 {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, b)
	}
	if resp, _ := adminDo(t, srv, "DELETE", "/v1/revocations/"+created.ID, "admin-1", ""); resp.StatusCode != 404 {
		t.Fatalf("second DELETE: %d, want 404", resp.StatusCode)
	}
	if resp, _ := get(t, srv, "w1", ""); resp.StatusCode != 200 {
		t.Fatalf("un-revoked principal refused: %d", resp.StatusCode)
	}
}

func TestSetAuthenticator(t *testing.T) {
	v, _ := keyVendor("ASIAONE")
	rules, _ := scope.Compile([]scope.Tenant{{Org: "acme", Grants: []scope.GrantRule{{Bucket: "media", Prefixes: []string{"acme/"}, Operations: []string{"get"}}}}}, map[string]bool{"default": true})
	s := api.New(api.Options{Vendor: v, Rules: rules, Authenticator: headerAuth(auth.MethodJWT), MinRemaining: 5 * time.Minute})
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	if resp, _ := get(t, srv, "w1", ""); resp.StatusCode != 200 {
		t.Fatalf("before swap: %d", resp.StatusCode)
	}
	s.SetAuthenticator(&fakeAuth{Fn: func(*http.Request) (auth.Identity, error) {
		return auth.Identity{}, fault.New(fault.Unauthorized, "jwt_unknown_key", "unknown key")
	}}, nil)
	if resp, _ := get(t, srv, "w1", ""); resp.StatusCode != 401 {
		t.Fatalf("after swap: %d, want 401", resp.StatusCode)
	}
}

// TestReadyzFollowsRevocationStaleness: a replica whose revocation list
// has gone stale answers every /credentials with 503 revocations_stale, so
// /readyz must say it is not ready (the orchestrator then sends the
// traffic to replicas that can vend) and say ready again once a refresh
// succeeds.
func TestReadyzFollowsRevocationStaleness(t *testing.T) {
	var now atomic.Pointer[time.Time]
	t0 := time.Now()
	now.Store(&t0)
	st := &revoketest.Mem{}
	reg := revoke.NewRegistry(revoke.Options{Store: st, MaxAge: 10 * time.Second, Now: func() time.Time { return *now.Load() }})
	if err := reg.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, _ := keyVendor("ASIAONE")
	s := api.New(api.Options{Vendor: v, Revocations: reg, Authenticator: headerAuth(auth.MethodJWT), MinRemaining: 5 * time.Minute})
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	readyz := func() (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&b)
		if resp.StatusCode != 200 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("/readyz %d without Retry-After", resp.StatusCode)
		}
		return resp.StatusCode, b.Status
	}
	if code, status := readyz(); code != 200 || status != "ready" || s.ReadyState() != "ready" {
		t.Fatalf("fresh list: /readyz %d %q, ReadyState() = %q", code, status, s.ReadyState())
	}
	st.Fail = errors.New("connection refused")
	later := t0.Add(11 * time.Second)
	now.Store(&later)
	_ = reg.Refresh(context.Background())
	if code, status := readyz(); code != 503 || status != "revocations_stale" || s.ReadyState() == "ready" {
		t.Fatalf("stale list: /readyz %d %q, ReadyState() = %q; want 503 revocations_stale, not ready", code, status, s.ReadyState())
	}
	st.Fail = nil
	if err := reg.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, status := readyz(); code != 200 || status != "ready" || s.ReadyState() != "ready" {
		t.Fatalf("refreshed list: /readyz %d %q, ReadyState() = %q", code, status, s.ReadyState())
	}
}
