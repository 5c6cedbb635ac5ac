package revoke_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

type fakeJournal struct{ events []revoke.Event }

func (j *fakeJournal) Note(_ context.Context, e revoke.Event) error {
	j.events = append(j.events, e)
	return nil
}

var _ revoke.Journal = (*fakeJournal)(nil)

func TestCheckEachKind(t *testing.T) {
	subject := revoke.Subject{Org: "acme", Principal: "worker-1", JobID: "job-7", TaskID: "task-9"}
	tests := []struct {
		kind  revoke.Kind
		value string
		hit   bool
	}{
		{revoke.KindOrg, "acme", true},
		{revoke.KindOrg, "other", false},
		{revoke.KindPrincipal, "worker-1", true},
		{revoke.KindPrincipal, "worker-2", false},
		{revoke.KindJob, "job-7", true},
		{revoke.KindJob, "job-8", false},
		{revoke.KindTask, "task-9", true},
		{revoke.KindTask, "TASK-9", false},
		// An access key id never matches a request subject: it is checked on
		// the credentials a vendor returns.
		{revoke.KindAccessKeyID, "job-7", false},
	}
	for _, tc := range tests {
		t.Run(string(tc.kind)+"="+tc.value, func(t *testing.T) {
			j := &fakeJournal{}
			g := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}, Journal: j})
			r, err := g.Add(context.Background(), revoke.Revocation{Kind: tc.kind, Value: tc.value, Reason: "test"}, "admin-1")
			if err != nil {
				t.Fatal(err)
			}
			got, hit := g.Check(subject)
			if hit != tc.hit || (hit && got.ID != r.ID) {
				t.Fatalf("Check = %+v, %v; want hit=%v", got, hit, tc.hit)
			}
			if len(j.events) != 1 || j.events[0].Action != "add" || j.events[0].Actor != "admin-1" || j.events[0].Revocation.ID != r.ID {
				t.Fatalf("journal = %+v", j.events)
			}
		})
	}
}

func TestAccessKeyAndExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	g := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}, Now: clock})
	exp := now.Add(time.Minute)
	if _, err := g.Add(context.Background(), revoke.Revocation{Kind: revoke.KindAccessKeyID, Value: "ASIAKEY", Reason: "leaked", ExpiresAt: &exp}, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.CheckAccessKey("ASIAKEY"); !ok {
		t.Fatal("revoked access key not found")
	}
	if _, ok := g.CheckAccessKey("ASIAOTHER"); ok {
		t.Fatal("other key revoked")
	}
	now = now.Add(time.Minute)
	if _, ok := g.CheckAccessKey("ASIAKEY"); ok {
		t.Fatal("expired revocation still in force")
	}
}

func TestValidateAndDelete(t *testing.T) {
	g := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
	past := time.Now().Add(-time.Second)
	for _, bad := range []revoke.Revocation{
		{Kind: "tenant", Value: "x", Reason: "r"},
		{Kind: revoke.KindJob, Value: "", Reason: "r"},
		{Kind: revoke.KindJob, Value: "x", Reason: ""},
		{Kind: revoke.KindJob, Value: "x", Reason: "r", ExpiresAt: &past},
		{Kind: revoke.KindJob, Value: "x\x00", Reason: "r"},
		{Kind: revoke.KindJob, Value: "x", Reason: "r\x00"},
		{Kind: revoke.KindJob, Value: "x\xff", Reason: "r"},
		{Kind: revoke.KindJob, Value: "x", Reason: "\xfe"},
	} {
		if _, err := g.Add(context.Background(), bad, "a"); !fault.Is(err, fault.InvalidRequest) {
			t.Fatalf("Add(%+v) = %v, want InvalidRequest", bad, err)
		}
	}
	// The admin principal is stored with the revocation too.
	for _, actor := range []string{"ops\x00", "ops\xff"} {
		if _, err := g.Add(context.Background(), revoke.Revocation{Kind: revoke.KindJob, Value: "x", Reason: "r"}, actor); !fault.Is(err, fault.InvalidRequest) {
			t.Fatalf("Add by %q = %v, want InvalidRequest", actor, err)
		}
	}
	r, err := g.Add(context.Background(), revoke.Revocation{Kind: revoke.KindJob, Value: "j", Reason: "r"}, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(context.Background(), r.ID, "a"); err != nil {
		t.Fatal(err)
	}
	if _, hit := g.Check(revoke.Subject{JobID: "j"}); hit {
		t.Fatal("deleted revocation still in force")
	}
	if err := g.Delete(context.Background(), r.ID, "a"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("second delete = %v, want NotFound", err)
	}
}

func TestStoreDownKeepsLastList(t *testing.T) {
	m := &revoketest.Mem{}
	g := revoke.NewRegistry(revoke.Options{Store: m})
	if err := g.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Add(context.Background(), revoke.Revocation{Kind: revoke.KindOrg, Value: "acme", Reason: "r"}, "a"); err != nil {
		t.Fatal(err)
	}
	m.Fail = errors.New("database down")
	if err := g.Refresh(context.Background()); err == nil {
		t.Fatal("refresh succeeded on a failing store")
	}
	if _, hit := g.Check(revoke.Subject{Org: "acme"}); !hit {
		t.Fatal("a failed refresh dropped a known revocation")
	}
	if _, err := g.Add(context.Background(), revoke.Revocation{Kind: revoke.KindOrg, Value: "b", Reason: "r"}, "a"); !fault.Is(err, fault.BackendUnavailable) {
		t.Fatalf("Add on a failing store = %v, want BackendUnavailable", err)
	}
	fresh := revoke.NewRegistry(revoke.Options{Store: m})
	if err := fresh.Ready(context.Background()); err == nil {
		t.Fatal("a registry that never loaded the list reports ready")
	}
}

// failingKill applies revocations on the AWS side but cannot remove them.
type failingKill struct{}

var _ revoke.KillSwitch = failingKill{}

func (failingKill) Apply(context.Context, revoke.Revocation) error { return nil }
func (failingKill) Remove(context.Context, revoke.Revocation) error {
	return errors.New("iam: AccessDenied on DeleteRolePolicy")
}

// TestDeleteWithFailedKillSwitchIsIncomplete: the revocation is deleted
// even when its AWS deny cannot be removed; Delete says so with an
// Incomplete (answered 204 + warning), not an error a client would retry
// into a 404.
func TestDeleteWithFailedKillSwitchIsIncomplete(t *testing.T) {
	ctx := context.Background()
	g := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}, Kill: failingKill{}})
	rv, err := g.Add(ctx, revoke.Revocation{Kind: revoke.KindJob, Value: "job-1", Reason: "test"}, "ops")
	if err != nil {
		t.Fatal(err)
	}
	err = g.Delete(ctx, rv.ID, "ops")
	var inc *revoke.Incomplete
	if !errors.As(err, &inc) || len(inc.Warnings) != 1 || inc.Warnings[0] != "kill_switch_not_removed" {
		t.Fatalf("Delete = %v, want Incomplete{kill_switch_not_removed}", err)
	}
	if _, ok := g.Check(revoke.Subject{JobID: "job-1"}); ok {
		t.Fatal("the revocation is still in force after Delete")
	}
	if err := g.Delete(ctx, rv.ID, "ops"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("second Delete = %v, want NotFound", err)
	}
}

// unreachable is a store whose reads fail after it is cut off.
type unreachable struct {
	revoke.Store
	down bool
}

func (u *unreachable) List(ctx context.Context, activeAt time.Time) ([]revoke.Revocation, error) {
	if u.down {
		return nil, errors.New("connection refused")
	}
	return u.Store.List(ctx, activeAt)
}

// TestStaleListIsReported: once refreshes fail for longer than MaxAge, the
// registry says so (and the api stops vending); a refresh clears it.
func TestStaleListIsReported(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := &unreachable{Store: &revoketest.Mem{}}
	g := revoke.NewRegistry(revoke.Options{Store: st, MaxAge: 10 * time.Second, Now: func() time.Time { return now }})
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.down = true
	now = now.Add(9 * time.Second)
	if err := g.Refresh(context.Background()); err == nil {
		t.Fatal("refresh of an unreachable store succeeded")
	}
	if err := g.Fresh(); err != nil {
		t.Fatalf("within MaxAge: %v", err)
	}
	now = now.Add(2 * time.Second)
	if err := g.Fresh(); !errors.Is(err, revoke.ErrStale) {
		t.Fatalf("past MaxAge: %v, want ErrStale", err)
	}
	st.down = false
	if err := g.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Fresh(); err != nil {
		t.Fatalf("after a successful refresh: %v", err)
	}
}

// listSpy records the instants a registry asks its store about.
type listSpy struct {
	revoke.Store
	asked []time.Time
}

func (l *listSpy) List(ctx context.Context, activeAt time.Time) ([]revoke.Revocation, error) {
	l.asked = append(l.asked, activeAt)
	return l.Store.List(ctx, activeAt)
}

// TestRefreshReadsOnlyRevocationsInForce: a poll asks the store for the
// revocations in force now, so a table full of expired ones is not reread
// every interval; the admin list and delete still see expired ones.
func TestRefreshReadsOnlyRevocationsInForce(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	mem := &revoketest.Mem{}
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	old := revoke.Revocation{ID: revoke.NewID(), Kind: revoke.KindJob, Value: "job-old", Reason: "expired", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: &past}
	live := revoke.Revocation{ID: revoke.NewID(), Kind: revoke.KindJob, Value: "job-live", Reason: "in force", CreatedAt: now.Add(-time.Hour), ExpiresAt: &future}
	for _, r := range []revoke.Revocation{old, live} {
		if err := mem.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	spy := &listSpy{Store: mem}
	g := revoke.NewRegistry(revoke.Options{Store: spy, Journal: &fakeJournal{}, Now: func() time.Time { return now }})
	if err := g.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if len(spy.asked) != 1 || !spy.asked[0].Equal(now) {
		t.Fatalf("Refresh asked the store for %v, want [%v]", spy.asked, now)
	}
	if _, hit := g.Check(revoke.Subject{JobID: "job-live"}); !hit {
		t.Fatal("the revocation in force is not enforced")
	}
	if _, hit := g.Check(revoke.Subject{JobID: "job-old"}); hit {
		t.Fatal("an expired revocation is enforced")
	}
	all, err := g.List(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("admin List = %d revocations, %v; want both, the expired one included", len(all), err)
	}
	if err := g.Delete(ctx, old.ID, "ops"); err != nil {
		t.Fatalf("deleting an expired revocation: %v", err)
	}
}

// hangingStore never answers List until the caller gives up.
type hangingStore struct {
	revoke.Store
	calls atomic.Int32
}

func (h *hangingStore) List(ctx context.Context, _ time.Time) ([]revoke.Revocation, error) {
	h.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestPollSurvivesAHangingStore: each poll is bounded, so a store that
// accepts and never answers does not stop the polling (the list goes
// stale and the replica stops vending, then recovers when it answers).
func TestPollSurvivesAHangingStore(t *testing.T) {
	h := &hangingStore{Store: &revoketest.Mem{}}
	g := revoke.NewRegistry(revoke.Options{Store: h, Journal: &fakeJournal{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Run(ctx, 10*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for h.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := h.calls.Load(); n < 2 {
		t.Fatalf("the store was polled %d time(s); a hanging poll stopped the polling", n)
	}
}
