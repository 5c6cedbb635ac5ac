package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/fault"
)

type fakeAuditLog struct {
	query   func(ctx context.Context, f audit.Filter) (audit.Page, error)
	receipt func(ctx context.Context, id string) (*audit.Receipt, error)
}

var _ AuditLog = (*fakeAuditLog)(nil)

func (f *fakeAuditLog) Query(ctx context.Context, fl audit.Filter) (audit.Page, error) {
	return f.query(ctx, fl)
}
func (f *fakeAuditLog) Receipt(ctx context.Context, id string) (*audit.Receipt, error) {
	return f.receipt(ctx, id)
}

type fakeAuthenticator struct {
	authenticate func(r *http.Request) (auth.Identity, error)
}

func (f *fakeAuthenticator) Authenticate(r *http.Request) (auth.Identity, error) {
	return f.authenticate(r)
}

func TestParseAuditFilter(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		q      string
		want   audit.Filter
		reason string
	}{
		{"", audit.Filter{Limit: 100}, ""},
		{"org=acme&principal=w&job_id=j&task_id=t&access_key_id=ASIA1&bucket=b&outcome=denied&limit=5&since=2026-03-01T12:00:00Z&until=2026-03-01T13:00:00Z",
			audit.Filter{Org: "acme", Principal: "w", JobID: "j", TaskID: "t", AccessKeyID: "ASIA1", Bucket: "b", Outcome: audit.Denied, Limit: 5, Since: t0, Until: t0.Add(time.Hour)}, ""},
		{"limit=1000", audit.Filter{Limit: 1000}, ""},
		{"limit=1001", audit.Filter{}, "bad_limit"},
		{"limit=0", audit.Filter{}, "bad_limit"},
		{"limit=x", audit.Filter{}, "bad_limit"},
		{"outcome=maybe", audit.Filter{}, "bad_filter"},
		{"outcome=summarized", audit.Filter{Outcome: audit.Summarized, Limit: 100}, ""},
		{"principal=%FF", audit.Filter{}, "bad_filter"},
		{"job_id=j%00", audit.Filter{}, "bad_filter"},
		{"since=yesterday", audit.Filter{}, "bad_time"},
		{"since=2026-03-01T13:00:00Z&until=2026-03-01T12:00:00Z", audit.Filter{}, "bad_filter"},
		{"cursor=@@", audit.Filter{}, "bad_cursor"},
		{"colour=red", audit.Filter{}, "unknown_parameter"},
		{"org=a&org=b", audit.Filter{}, "repeated_parameter"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/v1/audit?"+c.q, nil)
		f, err := ParseAuditFilter(r.URL.Query())
		if c.reason != "" {
			if fe := fault.From(err); err == nil || fe.Reason != c.reason || fe.Code != fault.InvalidRequest {
				t.Errorf("%q: err %v, want reason %s", c.q, err, c.reason)
			}
			continue
		}
		if err != nil || f != c.want {
			t.Errorf("%q: %+v, %v\nwant %+v", c.q, f, err, c.want)
		}
	}
}

func TestAuditRoutesErrors(t *testing.T) {
	storeDown := errors.New("connection refused")
	s := New(Options{
		AdminAuthenticator: &fakeAuthenticator{authenticate: func(r *http.Request) (auth.Identity, error) {
			if r.Header.Get("Authorization") != "Bearer admin" {
				return auth.Identity{}, fault.New(fault.Unauthorized, "admin_bad_token", "no")
			}
			return auth.Identity{Principal: "admin", Method: auth.MethodAdmin}, nil
		}},
		Audit: &fakeAuditLog{
			query: func(ctx context.Context, f audit.Filter) (audit.Page, error) { return audit.Page{}, storeDown },
			receipt: func(ctx context.Context, id string) (*audit.Receipt, error) {
				switch id {
				case "main:1":
					return nil, audit.ErrNotFound
				case "main:2":
					return nil, audit.ErrNotCheckpointed
				case "main:4":
					return nil, fmt.Errorf("anchor checkpoint: %w", audit.ErrAnchorMissing)
				}
				return nil, storeDown
			},
		},
	})
	h := s.Handler()
	for _, c := range []struct {
		path, token string
		status      int
		code        string
	}{
		{"/v1/audit", "", 401, "Unauthorized"},
		{"/v1/audit", "admin", 503, "AuditUnavailable"},
		{"/v1/audit/main:1/proof", "admin", 404, "NotFound"},
		{"/v1/audit/main:2/proof", "admin", 503, "BackendUnavailable"},
		{"/v1/audit/main:3/proof", "admin", 503, "AuditUnavailable"},
		{"/v1/audit/main:4/proof", "admin", 503, "AuditUnavailable"},
		// A piece the query parser would skip: the filter must not be
		// silently widened to every record.
		{"/v1/audit?org=acme;x", "admin", 400, "InvalidRequest"},
	} {
		req := httptest.NewRequest("GET", c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), `"code":"`+c.code+`"`) || strings.Contains(rec.Body.String(), "connection refused") {
			t.Errorf("%s: %d %s", c.path, rec.Code, rec.Body.String())
		}
		if rec.Code == 503 && rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", c.path)
		}
	}
}

// TestAuditExportAbortsOnStoreFailure: once a 200 NDJSON stream has
// started, a store failure on a later page must not end the stream cleanly
// (it would look like a complete export): the connection is aborted.
func TestAuditExportAbortsOnStoreFailure(t *testing.T) {
	calls := 0
	s := New(Options{
		AdminAuthenticator: &fakeAuthenticator{authenticate: func(r *http.Request) (auth.Identity, error) {
			return auth.Identity{Principal: "admin", Method: auth.MethodAdmin}, nil
		}},
		Audit: &fakeAuditLog{query: func(ctx context.Context, f audit.Filter) (audit.Page, error) {
			calls++
			if calls == 1 {
				return audit.Page{Records: []audit.Record{{ID: "main:2", Outcome: audit.Issued}}, Next: "cursor-1"}, nil
			}
			return audit.Page{}, errors.New("connection refused")
		}},
	})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/audit", nil)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the interrupted export ended like a complete one")
	}
}
