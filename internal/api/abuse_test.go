package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/ratelimit"
)

// TestRepeatedAuthorizationRefused: a request with two Authorization
// headers is refused with 400 whichever of them would pass, so no
// authenticator can pick one and a proxy that reads the other cannot be
// told a different story. It is a failed authentication: recorded and
// charged to the caller's budget.
func TestRepeatedAuthorizationRefused(t *testing.T) {
	doc := loadSpec(t)
	h := newHarness(t, func(o *Options) { o.AdminAuthenticator = fakeAdmin{}; o.RevocationAdmin = fakeRevocationAdmin{} })
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "admin", "org": "acme"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	valid := "Bearer " + h.token("worker-1", "acme", nil)
	for route, target := range map[string]string{"/credentials": okQuery, "/v1/whoami": "/v1/whoami", "/v1/revocations": "/v1/revocations"} {
		for _, pair := range [][2]string{{valid, "Bearer " + none}, {valid, valid}} {
			r := httptest.NewRequest(http.MethodGet, target, nil)
			r.Header.Add("Authorization", pair[0])
			r.Header.Add("Authorization", pair[1])
			w := httptest.NewRecorder()
			h.h.ServeHTTP(w, r)
			checkError(t, w, http.StatusBadRequest, fault.InvalidRequest)
			checkSpec(t, doc, route, r, w)
		}
	}
	recs := h.rec.all()
	if len(recs) != 4 {
		t.Fatalf("%d audit records, want 4 (the worker routes' refusals)", len(recs))
	}
	for _, rec := range recs {
		if rec.Outcome != audit.Denied || rec.Reason != "repeated_authorization" || rec.Principal != "" {
			t.Fatalf("record %+v, want an anonymous denial with reason repeated_authorization", rec)
		}
	}
	// One header is still fine.
	if w := h.do(http.MethodGet, okQuery, valid, "", nil); w.Code != http.StatusOK {
		t.Fatalf("one Authorization header: %d %s", w.Code, w.Body)
	}
}

// checkSpec validates w, the answer to r on route, against openapi.yaml.
func checkSpec(t *testing.T, doc *openapi3.T, route string, r *http.Request, w *httptest.ResponseRecorder) {
	t.Helper()
	item := doc.Paths.Value(route)
	if item == nil || item.GetOperation(r.Method) == nil {
		t.Fatalf("%s %s is not documented", r.Method, route)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: r, Options: opts,
		Route: &routers.Route{Spec: doc, Path: route, PathItem: item, Method: r.Method, Operation: item.GetOperation(r.Method)}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(), Options: opts}
	out.SetBodyBytes(w.Body.Bytes())
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: response does not match openapi.yaml: %v\nbody: %s", r.Method, route, err, w.Body)
	}
}

// foldingRecorder is a fakeRecorder that also takes folded refusals.
type foldingRecorder struct {
	fakeRecorder
	folded []audit.Record
}

var _ Folder = (*foldingRecorder)(nil)

func (f *foldingRecorder) Fold(rec audit.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.folded = append(f.folded, rec)
}

// outage fails every authentication as a dependency being down would.
type outage struct{}

func (outage) Authenticate(*http.Request) (auth.Identity, error) {
	return auth.Identity{}, fault.New(fault.BackendUnavailable, "iam_sts_unavailable", "STS could not be reached").WithRetryAfter(2 * time.Second)
}

// TestFailedAuthBudgetCountsOutagesAndFoldsItsRefusals: an authentication
// that fails because a dependency is down spends the client's budget like
// any failure (forged requests reaching an outage were free), and a
// request refused by the budget is counted into the trail's summaries
// rather than recorded on its own.
func TestFailedAuthBudgetCountsOutagesAndFoldsItsRefusals(t *testing.T) {
	rec := &foldingRecorder{}
	h := newHarness(t, func(o *Options) {
		o.Authenticator = outage{}
		o.Recorder = rec
		o.AuthFailures = ratelimit.NewFailureGuard(ratelimit.Limit{Rate: 0.001, Burst: 2}, 100, nil)
	})
	for i := range 2 {
		if w := h.do("GET", okQuery, "Bearer x", "", nil); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	w := h.do("GET", okQuery, "Bearer x", "", nil)
	checkError(t, w, http.StatusTooManyRequests, fault.Throttled)
	if n := len(rec.all()); n != 2 {
		t.Fatalf("%d records, want the 2 outage failures only", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.folded) != 1 || rec.folded[0].Reason != "rate_limited_auth_failures" || rec.folded[0].Outcome != audit.Denied || rec.folded[0].ClientAddr != "192.0.2.1" {
		t.Fatalf("folded %+v, want the refused request", rec.folded)
	}
}

// TestTrustedProxyForwardsTheClient: behind a trusted proxy the client is
// the address it forwards, in records and in the failed-auth budget; one
// client's failures do not get another refused through the same proxy.
// From an untrusted peer, X-Forwarded-For is ignored.
func TestTrustedProxyForwardsTheClient(t *testing.T) {
	tr, err := clientip.Parse([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) {
		o.TrustedProxies = tr
		o.AuthFailures = ratelimit.NewFailureGuard(ratelimit.Limit{Rate: 0.001, Burst: 2}, 100, nil)
	})
	send := func(peer, xff string) int {
		r := httptest.NewRequest("GET", okQuery, nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", xff)
		r.Header.Set("Authorization", "Bearer not-a-jwt")
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		return w.Code
	}
	for range 2 {
		if code := send("10.1.1.1:443", "198.51.100.7"); code != 401 {
			t.Fatalf("through the proxy: %d", code)
		}
	}
	if code := send("10.1.1.1:443", "198.51.100.7"); code != 429 {
		t.Fatalf("the failing client through the proxy: %d, want 429", code)
	}
	if code := send("10.1.1.1:443", "198.51.100.8"); code != 401 {
		t.Fatalf("another client through the same proxy: %d, want 401 (its own budget)", code)
	}
	if code := send("203.0.113.5:1000", "198.51.100.9"); code != 401 {
		t.Fatalf("untrusted peer: %d", code)
	}
	var addrs []string
	for _, r := range h.rec.all() {
		addrs = append(addrs, r.ClientAddr)
	}
	if want := []string{"198.51.100.7", "198.51.100.7", "198.51.100.8", "203.0.113.5"}; !slices.Equal(addrs, want) {
		t.Fatalf("recorded client addresses %v, want %v", addrs, want)
	}
}

// TestFailedAuthBudgetCountsAnIPv6Slash64AsOneClient: a host rotating
// through the addresses of its own /64 gets no fresh budget, while a
// caller in another /64 keeps its own.
func TestFailedAuthBudgetCountsAnIPv6Slash64AsOneClient(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.AuthFailures = ratelimit.NewFailureGuard(ratelimit.Limit{Rate: 0.001, Burst: 2}, 100, nil)
	})
	send := func(peer string) int {
		r := httptest.NewRequest("GET", okQuery, nil)
		r.RemoteAddr = peer
		r.Header.Set("Authorization", "Bearer not-a-jwt")
		w := httptest.NewRecorder()
		h.h.ServeHTTP(w, r)
		return w.Code
	}
	var codes []int
	for i := range 5 {
		codes = append(codes, send(fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1)))
	}
	if want := []int{401, 401, 429, 429, 429}; !slices.Equal(codes, want) {
		t.Fatalf("one /64 rotating addresses: %v, want %v", codes, want)
	}
	if code := send("[2001:db8:1:3::1]:443"); code != 401 {
		t.Fatalf("another /64: %d, want 401 (its own budget)", code)
	}
	if code := send("192.0.2.77:443"); code != 401 {
		t.Fatalf("an IPv4 caller: %d, want 401", code)
	}
}

// stalled is an authenticator that holds every request until release is
// closed (a signed POST whose body never arrives), then refuses it; with
// panics set it panics instead.
type stalled struct {
	entered chan struct{}
	release chan struct{}
	panics  bool
}

func (s stalled) Authenticate(*http.Request) (auth.Identity, error) {
	s.entered <- struct{}{}
	<-s.release
	if s.panics {
		panic("authenticator bug")
	}
	return auth.Identity{}, fault.New(fault.Unauthorized, "sigv4_bad_signature", "bad signature")
}

// TestRequestsInAuthenticationAreCapped: one client holding its cap of
// stalled requests gets every further one refused at once (429), without
// touching the authenticator, while another client still gets through;
// past the total cap everyone gets 503. The refusals are folded into the
// summaries, not recorded one by one, and every place is given back when
// authentication ends, a panicking authenticator included.
func TestRequestsInAuthenticationAreCapped(t *testing.T) {
	doc := loadSpec(t)
	for _, panics := range []bool{false, true} {
		st := stalled{entered: make(chan struct{}, 16), release: make(chan struct{}), panics: panics}
		rec := &foldingRecorder{}
		h := newHarness(t, func(o *Options) {
			o.Authenticator = st
			o.Recorder = rec
			o.AuthInFlight = ratelimit.NewInFlight(2, 3)
		})
		send := func(peer string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("GET", okQuery, nil)
			r.RemoteAddr = peer
			r.Header.Set("Authorization", "Bearer x")
			w := httptest.NewRecorder()
			func() {
				defer func() { _ = recover() }() // the recoverer answers 500 and re-panics nothing here
				h.h.ServeHTTP(w, r)
			}()
			return w
		}
		held := make(chan *httptest.ResponseRecorder, 3)
		for _, peer := range []string{"192.0.2.1:1", "192.0.2.1:2", "192.0.2.2:1"} {
			go func() { held <- send(peer) }()
			<-st.entered
		}
		w := send("192.0.2.1:3")
		checkError(t, w, http.StatusTooManyRequests, fault.Throttled)
		checkSpec(t, doc, "/credentials", httptest.NewRequest("GET", okQuery, nil), w)
		if w.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		w = send("192.0.2.3:1") // a third client, but three are in flight in all
		checkError(t, w, http.StatusServiceUnavailable, fault.BackendUnavailable)
		close(st.release)
		for range 3 {
			<-held
		}
		rec.mu.Lock()
		folded := len(rec.folded)
		var reasons []string
		for _, f := range rec.folded {
			reasons = append(reasons, f.Reason)
		}
		rec.mu.Unlock()
		if folded != 2 || !slices.Contains(reasons, "rate_limited_auth_in_flight") || !slices.Contains(reasons, "auth_overloaded") {
			t.Fatalf("folded %v, want the two refusals", reasons)
		}
		// Every place was given back: the same client can hold two again.
		st2 := stalled{entered: st.entered, release: make(chan struct{})}
		h.srv.SetAuthenticator(st2, nil)
		for i := range 2 {
			go func() { held <- send("192.0.2.1:9") }()
			select {
			case <-st.entered:
			case <-time.After(5 * time.Second):
				t.Fatalf("panics=%v: request %d refused after the earlier ones ended", panics, i)
			}
		}
		close(st2.release)
		<-held
		<-held
	}
}
