package api

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

// TestAdminErrors: every refusal an operator can meet on the admin API
// (audit query and receipt, revocations) has the contract's error shape
// and headers (checkError) and is a response openapi.yaml documents.
func TestAdminErrors(t *testing.T) {
	doc := loadSpec(t)
	token := strings.Repeat("a", 40)
	t.Setenv("TEST_ADMIN_TOKEN", token)
	ac := auth.AdminConfig{Tokens: []auth.AdminToken{{Name: "ops", TokenEnv: "TEST_ADMIN_TOKEN"}}}
	ac.ApplyDefaults()
	admin, err := ac.Build()
	if err != nil {
		t.Fatal(err)
	}
	storeDown := errors.New("connection refused to 10.0.0.9")
	json1 := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		name, method, target, route, body string
		hdr                               map[string]string
		anonymous, revStoreDown           bool
		status                            int
		code                              fault.Code
	}{
		{name: "audit without a token", target: "/v1/audit", route: "/v1/audit", anonymous: true, status: 401, code: fault.Unauthorized},
		{name: "audit unknown parameter", target: "/v1/audit?role=x", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit repeated parameter", target: "/v1/audit?org=a&org=b", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit bad limit", target: "/v1/audit?limit=0", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit bad time", target: "/v1/audit?since=yesterday", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit bad cursor", target: "/v1/audit?cursor=@@", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit bad outcome", target: "/v1/audit?outcome=maybe", route: "/v1/audit", status: 400, code: fault.InvalidRequest},
		{name: "audit store down", target: "/v1/audit", route: "/v1/audit", status: 503, code: fault.AuditUnavailable},
		{name: "audit export store down", target: "/v1/audit", route: "/v1/audit", hdr: map[string]string{"Accept": "application/x-ndjson"}, status: 503, code: fault.AuditUnavailable},
		{name: "receipt unknown record", target: "/v1/audit/main:1/proof", route: "/v1/audit/{id}/proof", status: 404, code: fault.NotFound},
		{name: "receipt not checkpointed", target: "/v1/audit/main:2/proof", route: "/v1/audit/{id}/proof", status: 503, code: fault.BackendUnavailable},
		{name: "receipt store down", target: "/v1/audit/main:3/proof", route: "/v1/audit/{id}/proof", status: 503, code: fault.AuditUnavailable},
		{name: "revocations without a token", target: "/v1/revocations", route: "/v1/revocations", anonymous: true, status: 401, code: fault.Unauthorized},
		{name: "revocation list store down", target: "/v1/revocations", route: "/v1/revocations", revStoreDown: true, status: 503, code: fault.BackendUnavailable},
		{name: "revocation bad JSON", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `not json`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation unknown field", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x","reason":"r","extra":1}`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation two objects", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x","reason":"r"}{}`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation unknown kind", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"tenant","value":"x","reason":"r"}`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation without a reason", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x"}`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation body too large", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x","reason":"` + strings.Repeat("r", 20<<10) + `"}`, hdr: json1, status: 413, code: fault.RequestTooLarge},
		{name: "revocation store down", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x","reason":"r"}`, hdr: json1, revStoreDown: true, status: 503, code: fault.BackendUnavailable},
		{name: "delete unknown revocation", method: "DELETE", target: "/v1/revocations/nope", route: "/v1/revocations/{id}", status: 404, code: fault.NotFound},
		{name: "delete store down", method: "DELETE", target: "/v1/revocations/nope", route: "/v1/revocations/{id}", revStoreDown: true, status: 503, code: fault.BackendUnavailable},
		{name: "revocation value with NUL", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: `{"kind":"job","value":"x\u0000","reason":"r"}`, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "revocation body not UTF-8", method: "POST", target: "/v1/revocations", route: "/v1/revocations", body: "{\"kind\":\"job\",\"value\":\"\xff\",\"reason\":\"r\"}", hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "delete id with NUL", method: "DELETE", target: "/v1/revocations/rev%00", route: "/v1/revocations/{id}", status: 400, code: fault.InvalidRequest},
		{name: "receipt id not UTF-8", target: "/v1/audit/main:%FF/proof", route: "/v1/audit/{id}/proof", status: 400, code: fault.InvalidRequest},
		{name: "revocations wrong method", method: "PUT", target: "/v1/revocations", route: "", status: 405, code: fault.MethodNotAllowed},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := &revoketest.Mem{}
			h := newHarness(t, func(o *Options) {
				o.AdminAuthenticator = admin
				o.Audit = &fakeAuditLog{
					query: func(context.Context, audit.Filter) (audit.Page, error) { return audit.Page{}, storeDown },
					receipt: func(_ context.Context, id string) (*audit.Receipt, error) {
						switch id {
						case "main:1":
							return nil, audit.ErrNotFound
						case "main:2":
							return nil, audit.ErrNotCheckpointed
						}
						return nil, storeDown
					},
				}
				o.RevocationAdmin = revoke.NewRegistry(revoke.Options{Store: mem})
			})
			if c.revStoreDown {
				mem.Fail = storeDown
			}
			method := c.method
			if method == "" {
				method = "GET"
			}
			authz := "Bearer " + token
			if c.anonymous {
				authz = ""
			}
			w := h.do(method, c.target, authz, c.body, c.hdr)
			checkError(t, w, c.status, c.code)
			if strings.Contains(w.Body.String(), "10.0.0.9") {
				t.Errorf("internal cause leaked: %s", w.Body)
			}
			if c.route == "" {
				return // not an operation of the document
			}
			req := httptest.NewRequest(method, c.target, strings.NewReader(c.body))
			item := doc.Paths.Value(c.route)
			if item == nil || item.GetOperation(method) == nil {
				t.Fatalf("%s %s is not documented", method, c.route)
			}
			opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
			in := &openapi3filter.RequestValidationInput{Request: req, Options: opts,
				Route: &routers.Route{Spec: doc, Path: c.route, PathItem: item, Method: method, Operation: item.GetOperation(method)}}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(), Options: opts}
			out.SetBodyBytes(w.Body.Bytes())
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Errorf("response does not match openapi.yaml: %v\nbody: %s", err, w.Body)
			}
		})
	}
}
