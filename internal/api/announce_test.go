package api

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

// announcingRecorder is a fakeRecorder that is also an Announcer and
// counts the announcements not yet ended.
type announcingRecorder struct {
	*fakeRecorder
	open, announced atomic.Int64
}

var _ Announcer = (*announcingRecorder)(nil)

func (a *announcingRecorder) Expect() Expectation {
	a.open.Add(1)
	a.announced.Add(1)
	return &fakeExpectation{a: a}
}

type fakeExpectation struct {
	a     *announcingRecorder
	ended atomic.Bool
}

func (e *fakeExpectation) Record(ctx context.Context, rec audit.Record) error {
	e.Cancel()
	if err := ctx.Err(); err != nil { // as the writer: a caller gone is not recorded for it
		return err
	}
	return e.a.fakeRecorder.Record(ctx, rec)
}

func (e *fakeExpectation) Cancel() {
	if e.ended.CompareAndSwap(false, true) {
		e.a.open.Add(-1)
	}
}

// TestEveryExitEndsTheAnnouncement: the credential handler announces its
// record once the caller is authenticated, and every way out of it (issued,
// each kind of denial, dry run, panic, backend error, audit down, client
// gone) ends the announcement; an announcement left open would make every
// audit batch wait batch_wait for a record that never comes.
func TestEveryExitEndsTheAnnouncement(t *testing.T) {
	boom := func(h *harness, _ context.CancelFunc) {
		h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) { panic("boom") }
	}
	gone := func(h *harness, cancel context.CancelFunc) {
		// The client disconnects while the backend works.
		h.vendor.fn = func(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
			c, err := (&mock.Vendor{}).Vend(ctx, g)
			cancel()
			return c, err
		}
	}
	backendDown := func(h *harness, _ context.CancelFunc) {
		h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) {
			return vend.Credentials{}, errors.New("down")
		}
	}
	auditDown := func(h *harness, _ context.CancelFunc) { h.rec.err = errors.New("disk full") }
	for _, c := range []struct {
		name      string
		target    string
		authz     string // "" a valid token; "bad" an invalid one
		setup     func(*harness, context.CancelFunc)
		revoke    bool
		status    int
		announced int64 // announcements the request makes
		records   int
	}{
		{name: "issued", target: okQuery, status: 200, announced: 1, records: 1},
		{name: "dry run", target: okQuery + "&dry_run=true", status: 200, announced: 1, records: 0},
		{name: "bad request", target: okQuery + "&format=xml", status: 400, announced: 1, records: 1},
		{name: "no matching grant", target: "/credentials?operation=get&location=s3://media/other/", status: 403, announced: 1, records: 1},
		{name: "revoked", target: okQuery, revoke: true, status: 403, announced: 1, records: 1},
		{name: "backend error", target: okQuery, setup: backendDown, status: 500, announced: 1, records: 1},
		{name: "audit down", target: okQuery, setup: auditDown, status: 503, announced: 1, records: 1},
		{name: "panic", target: okQuery, setup: boom, status: 500, announced: 1, records: 0},
		{name: "client gone", target: okQuery, setup: gone, status: 503, announced: 1, records: 0},
		// Not authenticated: recorded, but never announced (nothing to
		// wait for: the denial is recorded at once).
		{name: "authentication failed", target: okQuery, authz: "bad", status: 401, announced: 0, records: 1},
		{name: "whoami", target: "/v1/whoami", status: 200, announced: 0, records: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ar := &announcingRecorder{fakeRecorder: &fakeRecorder{}}
			reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
			h := newHarness(t, func(o *Options) { o.Recorder = ar; o.Revocations = reg })
			h.rec = ar.fakeRecorder
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.setup != nil {
				c.setup(h, cancel)
			}
			if c.revoke {
				if _, err := reg.Add(context.Background(), revoke.Revocation{Kind: revoke.KindPrincipal, Value: "worker-1", Reason: "test"}, "ops"); err != nil {
					t.Fatal(err)
				}
			}
			authz := "Bearer " + h.token("worker-1", "acme", nil)
			if c.authz == "bad" {
				authz = "Bearer not.a.token"
			}
			r := httptest.NewRequestWithContext(ctx, "GET", c.target, nil)
			r.Header.Set("Authorization", authz)
			w := httptest.NewRecorder()
			h.h.ServeHTTP(w, r)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
			}
			if n := ar.announced.Load(); n != c.announced {
				t.Errorf("announced %d records, want %d", n, c.announced)
			}
			if n := ar.open.Load(); n != 0 {
				t.Errorf("%d announcements left open", n)
			}
			if n := len(ar.all()); n != c.records {
				t.Errorf("%d records, want %d", n, c.records)
			}
		})
	}
}
