package sqlite

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

type fakeAuth struct {
	authenticate func(r *http.Request) (auth.Identity, error)
}

var _ auth.Authenticator = (*fakeAuth)(nil)

func (f *fakeAuth) Authenticate(r *http.Request) (auth.Identity, error) { return f.authenticate(r) }

// serve returns a credential server recording into s.
func serve(t *testing.T, s *Store) *httptest.Server {
	t.Helper()
	tn := scope.Tenant{Org: "acme", RoleARN: "arn:aws:iam::111122223333:role/r", Grants: []scope.GrantRule{{Bucket: "media", Prefixes: []string{"acme/"}, Operations: []string{"get", "put"}}}}
	tn.ApplyDefaults()
	rules, err := scope.Compile([]scope.Tenant{tn}, map[string]bool{"default": true})
	if err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(s, audit.WriterOptions{})
	t.Cleanup(func() { _ = w.Close() })
	srv := api.New(api.Options{
		Authenticator: &fakeAuth{authenticate: func(*http.Request) (auth.Identity, error) {
			return auth.Identity{Principal: "worker-1", Org: "acme", Method: auth.MethodJWT}, nil
		}},
		Rules: rules, Vendor: vend.Router{"default": &mock.Vendor{}}, Recorder: w, MinRemaining: 0,
	})
	srv.SetReady(true)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs
}

func get(t *testing.T, hs *httptest.Server) (int, string) {
	t.Helper()
	resp, err := http.Get(hs.URL + "/credentials?operation=get&location=s3://media/acme/x/&task_id=t1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	out, _ := json.Marshal(m)
	b.Write(out)
	return resp.StatusCode, b.String()
}

// TestFailClosed makes the SQLite store refuse writes in the ways a real
// deployment meets (file read-only, disk full): the caller gets 503
// AuditUnavailable and no credentials, and issuing recovers with the store.
func TestFailClosed(t *testing.T) {
	s := openTemp(t)
	hs := serve(t, s)
	ctx := context.Background()
	if code, body := get(t, hs); code != 200 || !strings.Contains(body, "SecretAccessKey") {
		t.Fatalf("healthy store: %d %s", code, body)
	}
	faults := []struct {
		name, on, off string
		fill          bool
	}{
		// query_only makes SQLite refuse every write exactly as for a
		// read-only file (SQLITE_READONLY); tests run as root, where chmod
		// would not stop a write.
		{"read-only", `PRAGMA query_only = 1`, `PRAGMA query_only = 0`, false},
		// max_page_count at the current size, with the free space then
		// filled, makes every page allocation fail with SQLITE_FULL, as on
		// a full disk.
		{"disk full", `PRAGMA max_page_count = 1`, `PRAGMA max_page_count = 1073741823`, true},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			if _, err := s.w.ExecContext(ctx, f.on); err != nil {
				t.Fatal(err)
			}
			// Fill the free space left in existing pages, largest records
			// first, so even a small record needs a new page.
			for size := 4000; f.fill && size >= 0; size /= 4 {
				for i := 0; ; i++ {
					r := audittest.Sample(i)
					r.Policy = strings.Repeat("x", size)
					_, err := s.Append(ctx, []audit.Record{r})
					if err != nil {
						if !strings.Contains(err.Error(), "full") {
							t.Fatalf("filling the database: %v", err)
						}
						break
					}
					if i > 10000 {
						t.Fatal("the database never filled")
					}
				}
				if size == 0 {
					break
				}
			}
			for i := 0; i < 3; i++ {
				code, body := get(t, hs)
				if code != http.StatusServiceUnavailable || !strings.Contains(body, `"AuditUnavailable"`) || strings.Contains(body, "Secret") || strings.Contains(body, "ASIA") {
					t.Fatalf("store down: %d %s; want 503 AuditUnavailable without credentials", code, body)
				}
			}
			if _, err := s.w.ExecContext(ctx, f.off); err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, hs); code != 200 {
				t.Fatalf("after recovery: %d %s", code, body)
			}
		})
	}
	var issued int
	if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM audit_records WHERE task_id = 't1'`).Scan(&issued); err != nil || issued != 3 {
		t.Fatalf("log holds %d records of the HTTP task (%v), want the 3 that were issued", issued, err)
	}
}
