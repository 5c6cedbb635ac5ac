package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	dispenser "github.com/vtk/dispenser"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(dispenser.OpenAPI)
	if err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	return doc
}

// fakeAdmin admits everyone; it only makes the admin routes exist.
type fakeAdmin struct{}

var _ auth.Authenticator = fakeAdmin{}

func (fakeAdmin) Authenticate(*http.Request) (auth.Identity, error) {
	return auth.Identity{Principal: "admin", Org: "*", Method: auth.MethodAdmin}, nil
}

// fakeRevocationAdmin only lets the revocation routes be registered.
type fakeRevocationAdmin struct{}

var _ RevocationAdmin = fakeRevocationAdmin{}

func (fakeRevocationAdmin) Add(_ context.Context, r revoke.Revocation, _ string) (revoke.Revocation, error) {
	return r, nil
}
func (fakeRevocationAdmin) List(context.Context) ([]revoke.Revocation, error) { return nil, nil }
func (fakeRevocationAdmin) Delete(context.Context, string, string) error      { return nil }

// TestOpenAPIRoutes checks that every chi route (admin routes included) is
// documented and every documented operation is routed.
func TestOpenAPIRoutes(t *testing.T) {
	doc := loadSpec(t)
	h := newHarness(t, func(o *Options) {
		o.AdminAuthenticator = fakeAdmin{}
		o.RevocationAdmin = fakeRevocationAdmin{}
		o.Audit = &fakeAuditLog{} // the audit routes exist only with an audit log
	})
	routed := map[string]bool{}
	for _, r := range h.srv.Routes() {
		routed[r[0]+" "+r[1]] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	var missing, stale []string
	for r := range routed {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for d := range documented {
		if !routed[d] {
			stale = append(stale, d)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.yaml: %v", missing)
	}
	if len(stale) > 0 {
		t.Errorf("documented but not routed: %v", stale)
	}
	if len(routed) < 6 {
		t.Fatalf("only %d routes walked: %v", len(routed), routed)
	}
}

// TestOpenAPIResponses validates real requests and responses against the
// document's schemas, statuses and headers.
func TestOpenAPIResponses(t *testing.T) {
	doc := loadSpec(t)
	failWith := func(err error) func(*harness) {
		return func(h *harness) {
			h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) { return vend.Credentials{}, err }
		}
	}
	json1 := map[string]string{"Content-Type": "application/json"}
	cases := []struct {
		name, method, target, body string
		hdr                        map[string]string
		authz                      string // "" valid token, "-" none
		setup                      func(*harness)
		status                     int
	}{
		{name: "container", target: okQuery, status: 200},
		{name: "process", target: okQuery + "&format=process", status: 200},
		{name: "dry run", target: okQuery + "&dry_run=true&file=a.mp4&file=b.mp4", status: 200},
		{name: "POST", method: "POST", target: "/credentials", body: `{"operation":"put","location":"s3://media/acme/out/","files":["x"],"format":"process"}`, hdr: json1, status: 200},
		{name: "whoami", target: "/v1/whoami", status: 200},
		{name: "whoami unknown tenant", target: "/v1/whoami", authz: "org:globex", status: 200},
		{name: "healthz", target: "/healthz", authz: "-", status: 200},
		{name: "readyz", target: "/readyz", authz: "-", status: 200},
		{name: "readyz starting", target: "/readyz", authz: "-", setup: func(h *harness) { h.srv.SetReady(false) }, status: 503},
		{name: "readyz held by the gate", target: "/readyz", authz: "-", status: 503},
		{name: "openapi", target: "/openapi.yaml", authz: "-", status: 200},
		{name: "400", target: okQuery + "&duration_seconds=x", status: 400},
		{name: "401", target: okQuery, authz: "-", status: 401},
		{name: "401 whoami", target: "/v1/whoami", authz: "-", status: 401},
		{name: "403", target: "/credentials?operation=put&location=s3://media/zzz/", status: 403},
		{name: "403 whoami host", target: "/v1/whoami", hdr: map[string]string{"Host": "evil.test"}, setup: func(h *harness) {}, status: 403},
		{name: "413", method: "POST", target: "/credentials", body: `{"location":"` + strings.Repeat("x", 2048) + `"}`, hdr: json1, status: 413},
		{name: "500", target: okQuery, setup: failWith(errors.New("boom")), status: 500},
		{name: "502", target: okQuery, setup: failWith(fault.New(fault.BackendUnavailable, "sts_denied", "refused")), status: 502},
		{name: "503 backend", target: okQuery, setup: failWith(fault.New(fault.BackendUnavailable, "sts_throttled", "slow down").WithRetryAfter(time.Second)), status: 503},
		{name: "503 not ready", target: okQuery, setup: func(h *harness) { h.srv.SetReady(false) }, status: 503},
		{name: "503 whoami not ready", target: "/v1/whoami", setup: func(h *harness) { h.srv.SetReady(false) }, status: 503},
		{name: "503 held by the gate", target: okQuery, status: 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) {
				if c.name == "403 whoami host" {
					o.AllowedHosts = []string{"example.com"}
				}
				if strings.Contains(c.name, "held by the gate") {
					o.Gate = anchorMissing
				}
				o.OpenAPI = dispenser.OpenAPI
			})
			if c.setup != nil {
				c.setup(h)
			}
			method := c.method
			if method == "" {
				method = "GET"
			}
			authz := ""
			switch {
			case c.authz == "":
				authz = "Bearer " + h.token("worker-1", "acme", nil)
			case strings.HasPrefix(c.authz, "org:"):
				authz = h.token("worker-1", strings.TrimPrefix(c.authz, "org:"), nil)
			}
			w := h.do(method, c.target, authz, c.body, c.hdr)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			req := httptest.NewRequest(method, c.target, strings.NewReader(c.body))
			for k, v := range c.hdr {
				req.Header.Set(k, v)
			}
			path := req.URL.Path
			item := doc.Paths.Value(path)
			if item == nil {
				t.Fatalf("%s is not documented", path)
			}
			op := item.GetOperation(method)
			if op == nil {
				t.Fatalf("%s %s is not documented", method, path)
			}
			opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
			in := &openapi3filter.RequestValidationInput{
				Request: req, Options: opts,
				Route: &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op},
			}
			if c.status < 300 {
				// Requests the server accepts must also be valid by the document.
				if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
					t.Errorf("request does not match openapi.yaml: %v", err)
				}
			}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(), Options: opts}
			out.SetBodyBytes(w.Body.Bytes())
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Errorf("response does not match openapi.yaml: %v\nbody: %s", err, w.Body)
			}
		})
	}
}
