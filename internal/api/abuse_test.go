package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/fault"
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
