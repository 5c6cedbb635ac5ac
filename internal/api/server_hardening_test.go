package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/ratelimit"
	"github.com/vtk/dispenser/internal/revoke"
)

// TestMethodNotAllowedNamesAllow: a 405 carries Allow (RFC 9110) listing
// exactly the route's methods, in the contract's error shape.
func TestMethodNotAllowedNamesAllow(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPut, "/credentials", "GET, POST"},
		{http.MethodDelete, "/healthz", "GET"},
		{"BREW", "/v1/whoami", "GET"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("%s %s: status %d", tc.method, tc.path, rec.Code)
		}
		if got := rec.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
}

// TestMethodLabelIsBounded: arbitrary method strings must not become new
// metric series (an unauthenticated client could grow them without limit).
func TestMethodLabelIsBounded(t *testing.T) {
	m := metrics.New("test")
	h := newHarness(t, func(o *Options) { o.Metrics = m })
	for _, meth := range []string{"RANDOM0", "RANDOM1", "RANDOM2"} {
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, httptest.NewRequest(meth, "/nope", nil))
	}
	if n := testutil.CollectAndCount(m.Requests); n != 1 {
		t.Fatalf("%d request series after three odd methods, want 1", n)
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("unmatched", "other", "404")); got != 3 {
		t.Fatalf(`requests{route="unmatched",method="other",status="404"} = %v, want 3`, got)
	}
}

// TestUnknownMethodOnUnknownPathIs404: a path no method serves is a 404
// whatever the method (chi answers 405 for a method it has no routes for).
func TestUnknownMethodOnUnknownPathIs404(t *testing.T) {
	h := newHarness(t, nil)
	for _, meth := range []string{"BREW", http.MethodPut, http.MethodGet} {
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, httptest.NewRequest(meth, "/no-such-path", nil))
		if rec.Code != http.StatusNotFound || rec.Header().Get("Allow") != "" || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s /no-such-path: %d Allow=%q Content-Type=%q, want a JSON 404 without Allow", meth, rec.Code, rec.Header().Get("Allow"), rec.Header().Get("Content-Type"))
		}
	}
}

// TestPanicAfterWriteAbortsConnection: once part of an answer is out, a
// panic must abort the connection, not append an error to the body.
func TestPanicAfterWriteAbortsConnection(t *testing.T) {
	s := New(Options{})
	h := s.recoverer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"partial":`))
		panic("boom")
	}))
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	t.Fatal("panic was swallowed after a partial write")
}

// TestAuthFailureBudget: a client that keeps failing authentication is
// refused with 429 before authentication, with no further audit records,
// while a valid caller from another address is unaffected.
func TestAuthFailureBudget(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.AuthFailures = ratelimit.NewFailureGuard(ratelimit.Limit{Rate: 0.001, Burst: 3}, 100, nil)
	})
	target := "/credentials?operation=get&location=s3://media/acme/in/"
	for i := 0; i < 3; i++ {
		if w := h.do("GET", target, "Bearer not-a-jwt", "", nil); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d", i, w.Code)
		}
	}
	recorded := len(h.rec.records)
	w := h.do("GET", target, "Bearer not-a-jwt", "", nil)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"code":"Throttled"`) {
		t.Fatalf("over the budget: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if len(h.rec.records) != recorded {
		t.Fatal("a refused flood request still wrote an audit record")
	}
	// httptest requests come from 192.0.2.1; another address is unaffected.
	r := httptest.NewRequest("GET", target, nil)
	r.RemoteAddr = "198.51.100.7:1234"
	r.Header.Set("Authorization", "Bearer "+h.token("w1", "acme", nil))
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Fatalf("valid caller from another address: %d %s", rec.Code, rec.Body)
	}
}

// TestTenantLabelIsBounded: an org no tenant serves (taken from the
// caller's credential) must not become a metric label value.
func TestTenantLabelIsBounded(t *testing.T) {
	m := metrics.New("test")
	h := newHarness(t, func(o *Options) { o.Metrics = m })
	for _, org := range []string{"evil-1", "evil-2", "evil-3"} {
		w := h.do("GET", "/credentials?operation=get&location=s3://media/acme/in/", "Bearer "+h.token("w1", org, nil), "", nil)
		if w.Code != http.StatusForbidden {
			t.Fatalf("org %s: %d", org, w.Code)
		}
	}
	if got := testutil.ToFloat64(m.Issuances.WithLabelValues("unknown", "get", "", "denied", "unknown_org")); got != 3 {
		t.Fatalf(`issuances{tenant="unknown",reason="unknown_org"} = %v, want 3`, got)
	}
	if n := testutil.CollectAndCount(m.Issuances); n != 1 {
		t.Fatalf("%d issuance series, want 1", n)
	}
}

// TestAdminRoutesFollowReload: without an admin section the admin routes
// are 404; an admin section added by a reload makes them answer.
func TestAdminRoutesFollowReload(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.RevocationAdmin = fakeRevocationAdmin{} })
	if w := h.do("GET", "/v1/revocations", "", "", nil); w.Code != http.StatusNotFound {
		t.Fatalf("no admin section: %d, want 404", w.Code)
	}
	h.srv.SetAuthenticator(h.srv.authn.Load().worker, fakeAdmin{})
	if w := h.do("GET", "/v1/revocations", "", "", nil); w.Code != http.StatusOK {
		t.Fatalf("after the reload added admin: %d %s", w.Code, w.Body)
	}
}

// staleRevocations is a revocation list that could not be refreshed.
type staleRevocations struct{}

func (staleRevocations) Check(revoke.Subject) (revoke.Revocation, bool) {
	return revoke.Revocation{}, false
}
func (staleRevocations) CheckAccessKey(string) (revoke.Revocation, bool) {
	return revoke.Revocation{}, false
}
func (staleRevocations) Fresh() error { return revoke.ErrStale }

var _ RevocationChecker = staleRevocations{}

// TestStaleRevocationsFailClosed: a replica whose revocation list is stale
// answers 503 with Retry-After and vends nothing.
func TestStaleRevocationsFailClosed(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Revocations = staleRevocations{} })
	w := h.do("GET", "/credentials?operation=get&location=s3://media/acme/in/", "Bearer "+h.token("w1", "acme", nil), "", nil)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || strings.Contains(w.Body.String(), "AccessKeyId") {
		t.Fatalf("stale revocations: %d %v %s", w.Code, w.Header(), w.Body)
	}
}

// TestAdmin401ChallengesAdminRealm: a 401 from an admin route names the
// admin scheme (RFC 9110: the challenge applies to the target resource),
// not the worker methods, which an admin route never accepts.
func TestAdmin401ChallengesAdminRealm(t *testing.T) {
	t.Setenv("TEST_ADMIN_TOKEN", strings.Repeat("a", 40))
	for _, tc := range []struct {
		name  string
		admin auth.AdminConfig
	}{
		{"tokens", auth.AdminConfig{Tokens: []auth.AdminToken{{Name: "ops", TokenEnv: "TEST_ADMIN_TOKEN"}}}},
		{"jwt", auth.AdminConfig{JWT: &auth.JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser-admin", Keys: []auth.JWTKey{{HMACSecretEnv: "TEST_ADMIN_TOKEN"}}}}},
		{"tokens and jwt", auth.AdminConfig{Tokens: []auth.AdminToken{{Name: "ops", TokenEnv: "TEST_ADMIN_TOKEN"}},
			JWT: &auth.JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser-admin", Keys: []auth.JWTKey{{HMACSecretEnv: "TEST_ADMIN_TOKEN"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.admin.ApplyDefaults()
			admin, err := tc.admin.Build()
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, func(o *Options) { o.RevocationAdmin = fakeRevocationAdmin{}; o.AdminAuthenticator = admin })
			for _, authz := range []string{"", "Bearer wrong-token"} {
				w := h.do("GET", "/v1/revocations", authz, "", nil)
				if w.Code != http.StatusUnauthorized {
					t.Fatalf("%q: status %d", authz, w.Code)
				}
				if got := w.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != `Bearer realm="dispenser-admin"` {
					t.Errorf("%q: WWW-Authenticate %q, want exactly the admin realm", authz, got)
				}
			}
			// Worker routes keep the worker challenges.
			w := h.do("GET", "/credentials", "", "", nil)
			if got := w.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != `Bearer realm="dispenser"` {
				t.Errorf("worker route: WWW-Authenticate %q", got)
			}
		})
	}
}

// TestAuditText: request text bound for the audit record is valid UTF-8
// without NUL (PostgreSQL text), at most n bytes, cut between characters.
func TestAuditText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"job-1", 128, "job-1"},
		{"a\xffb", 128, "a\uFFFDb"},
		{"t\x00", 128, "t\uFFFD"},
		{"\xff\xff\xff\xff", 128, "\uFFFD"}, // one replacement for the run
		{"ab" + "é", 3, "ab"},               // cut inside é: the half goes
		{"abc\x00", 5, "abc"},               // the replacement does not fit whole
		{"abcd", 3, "abc"},
	} {
		got := auditText(tc.in, tc.n)
		if got != tc.want || len(got) > tc.n || !utf8.ValidString(got) || strings.ContainsRune(got, 0) {
			t.Errorf("auditText(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
