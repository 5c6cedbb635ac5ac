// Package revoketest is the behaviour every revoke.Store must have, run
// against each implementation.
package revoketest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/migrate/migratetest"
	"github.com/vtk/dispenser/internal/revoke"
)

// RunStore checks a fresh, empty store.
func RunStore(t *testing.T, s revoke.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	exp := now.Add(time.Hour)
	a := revoke.Revocation{ID: revoke.NewID(), Kind: revoke.KindJob, Value: "job-1", Reason: "leaked", CreatedBy: "ops", CreatedAt: now}
	b := revoke.Revocation{ID: revoke.NewID(), Kind: revoke.KindOrg, Value: "acme", Reason: "unpaid — ünïcode", CreatedAt: now.Add(time.Second), ExpiresAt: &exp}
	gone := now.Add(-time.Minute)
	c := revoke.Revocation{ID: revoke.NewID(), Kind: revoke.KindTask, Value: "task-9", Reason: "expired", CreatedAt: now.Add(-time.Hour), ExpiresAt: &gone}
	for _, r := range []revoke.Revocation{a, b, c} {
		if err := s.Add(ctx, r); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if err := s.Add(ctx, a); err == nil {
		t.Fatal("Add with a duplicate id succeeded")
	}
	all, err := s.List(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("List(zero time) = %d entries, want 3 (expired ones included)", len(all))
	}
	// In force at now: a (no expiry) and b (expires later), not c. At an
	// instant past b's expiry only a is.
	list, err := s.List(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List(now) = %+v, want the two unexpired revocations", list)
	}
	if later, err := s.List(ctx, exp); err != nil || len(later) != 1 || later[0].ID != a.ID {
		t.Fatalf("List(at b's expiry) = %+v, %v; want only the revocation without expiry", later, err)
	}
	got := map[string]revoke.Revocation{}
	for _, r := range list {
		got[r.ID] = r
	}
	for _, want := range []revoke.Revocation{a, b} {
		g := got[want.ID]
		if g.Kind != want.Kind || g.Value != want.Value || g.Reason != want.Reason || g.CreatedBy != want.CreatedBy || !g.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("stored %+v, read back %+v", want, g)
		}
		if (g.ExpiresAt == nil) != (want.ExpiresAt == nil) || (g.ExpiresAt != nil && !g.ExpiresAt.Equal(*want.ExpiresAt)) {
			t.Fatalf("expires_at: stored %v, read back %v", want.ExpiresAt, g.ExpiresAt)
		}
	}
	if err := s.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, a.ID); !errors.Is(err, revoke.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, c.ID); err != nil {
		t.Fatalf("deleting an expired revocation: %v", err)
	}
	list, _ = s.List(ctx, time.Time{})
	if len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("after delete List = %+v", list)
	}
}

// Adoption checks that a store adopts a database an older release made:
// schema is the DDL that release ran inline (in driver's dialect, at
// dsn), createdAt a creation time in the store's column type. A
// revocation written the old way is listed after migrating, and the
// store's version table records version 1, on the first open and the
// next.
func Adoption(t *testing.T, driver, dsn, schema, createdAt string, open func() (revoke.Store, func() error, error)) {
	t.Helper()
	migratetest.Adoption{
		Driver: driver, DSN: dsn, Table: "revocations_schema", Versions: []int64{1},
		Legacy: []string{schema, `INSERT INTO revocations (id, kind, value, reason, created_by, created_at) VALUES ('rev_old', 'job', 'job-1', 'leaked', 'ops', ` + createdAt + `)`},
		Open: func(t *testing.T) func() error {
			s, closeStore, err := open()
			if err != nil {
				t.Fatal(err)
			}
			list, err := s.List(context.Background(), time.Time{})
			if err != nil || len(list) != 1 || list[0].ID != "rev_old" || list[0].Value != "job-1" || list[0].CreatedBy != "ops" {
				t.Fatalf("the old revocation after migrating: %+v, %v", list, err)
			}
			return closeStore
		},
	}.Run(t)
}
