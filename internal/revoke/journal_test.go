package revoke_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

// fakeRecorder records audit records, or fails with err.
type fakeRecorder struct {
	recs []audit.Record
	err  error
}

var _ revoke.Recorder = (*fakeRecorder)(nil)

func (f *fakeRecorder) Record(_ context.Context, r audit.Record) error {
	if f.err != nil {
		return f.err
	}
	f.recs = append(f.recs, r)
	return nil
}

type ctxKey struct{}

func TestAuditJournalRecords(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	tests := []struct {
		kind  revoke.Kind
		field func(audit.Record) string
	}{
		{revoke.KindOrg, func(r audit.Record) string { return r.Org }},
		{revoke.KindPrincipal, func(r audit.Record) string { return r.SourceIdentity }},
		{revoke.KindJob, func(r audit.Record) string { return r.JobID }},
		{revoke.KindTask, func(r audit.Record) string { return r.TaskID }},
		{revoke.KindAccessKeyID, func(r audit.Record) string { return r.AccessKeyID }},
	}
	for _, tc := range tests {
		for _, action := range []struct {
			name    string
			outcome audit.Outcome
			op      string
		}{{"add", audit.Revoked, revoke.OpAdd}, {"delete", audit.Unrevoked, revoke.OpDelete}, {"delete_failed", audit.Failed, revoke.OpDelete}} {
			t.Run(string(tc.kind)+"/"+action.name, func(t *testing.T) {
				rec := &fakeRecorder{}
				j := revoke.AuditJournal{Recorder: rec, ReplicaID: "r1",
					RequestID: func(ctx context.Context) string { s, _ := ctx.Value(ctxKey{}).(string); return s }}
				rv := revoke.Revocation{ID: "rev_1", Kind: tc.kind, Value: "V-1", Reason: "leaked", CreatedBy: "ops", CreatedAt: now, ExpiresAt: &exp}
				ctx := context.WithValue(context.Background(), ctxKey{}, "req-7")
				if err := j.Note(ctx, revoke.Event{Time: now, Action: action.name, Actor: "ops", Revocation: rv}); err != nil {
					t.Fatal(err)
				}
				if len(rec.recs) != 1 {
					t.Fatalf("%d records", len(rec.recs))
				}
				r := rec.recs[0]
				if r.Outcome != action.outcome || r.Operation != action.op || r.Reason != string(tc.kind) || r.Principal != "ops" ||
					tc.field(r) != "V-1" || !r.Expiration.Equal(exp) || !r.Time.Equal(now) || r.RequestID != "req-7" || r.ReplicaID != "r1" ||
					r.PackedPolicySize != -1 {
					t.Fatalf("record %+v", r)
				}
				var doc revoke.Revocation
				if err := json.Unmarshal([]byte(r.Policy), &doc); err != nil || doc.ID != "rev_1" || doc.Reason != "leaked" || doc.Kind != tc.kind {
					t.Fatalf("policy document %q: %v", r.Policy, err)
				}
				if !audit.Outcome(r.Outcome).Known() {
					t.Fatalf("outcome %q is not one the trail can query", r.Outcome)
				}
			})
		}
	}
	// Without a request id (the CLI), the revocation id stands in.
	rec := &fakeRecorder{}
	_ = revoke.AuditJournal{Recorder: rec}.Note(context.Background(), revoke.Event{Action: "add", Revocation: revoke.Revocation{ID: "rev_2", Kind: revoke.KindJob}})
	if rec.recs[0].RequestID != "rev_2" || !rec.recs[0].Expiration.IsZero() {
		t.Fatalf("record %+v", rec.recs[0])
	}
	if err := (revoke.AuditJournal{}).Note(context.Background(), revoke.Event{}); err == nil {
		t.Fatal("a journal without a recorder claimed success")
	}
}

func TestMultiJournalStopsAtFirstFailure(t *testing.T) {
	bad := &fakeRecorder{err: errors.New("disk full")}
	after := &fakeJournal{}
	err := revoke.MultiJournal{revoke.AuditJournal{Recorder: bad}, after}.Note(context.Background(), revoke.Event{Action: "add"})
	if err == nil || len(after.events) != 0 {
		t.Fatalf("err = %v, later journal saw %d events", err, len(after.events))
	}
	ok := &fakeRecorder{}
	if err := (revoke.MultiJournal{revoke.AuditJournal{Recorder: ok}, after}).Note(context.Background(), revoke.Event{Action: "add"}); err != nil || len(after.events) != 1 || len(ok.recs) != 1 {
		t.Fatalf("err = %v", err)
	}
}

// TestRegistryWithFailingTrail: an add stays in force and says it is
// unrecorded; a delete is refused and the revocation stays.
func TestRegistryWithFailingTrail(t *testing.T) {
	ctx := context.Background()
	rec := &fakeRecorder{}
	store := &revoketest.Mem{}
	g := revoke.NewRegistry(revoke.Options{Store: store, Journal: revoke.AuditJournal{Recorder: rec}})
	kept, err := g.Add(ctx, revoke.Revocation{Kind: revoke.KindOrg, Value: "acme", Reason: "r"}, "ops")
	if err != nil || len(rec.recs) != 1 {
		t.Fatalf("add: %v, %d records", err, len(rec.recs))
	}

	rec.err = errors.New("disk full")
	r, err := g.Add(ctx, revoke.Revocation{Kind: revoke.KindJob, Value: "j", Reason: "r"}, "ops")
	var inc *revoke.Incomplete
	if r.ID == "" || !errors.As(err, &inc) || len(inc.Warnings) != 1 || inc.Warnings[0] != "audit_unrecorded" || !fault.Is(err, fault.AuditUnavailable) {
		t.Fatalf("Add with a failing trail = %+v, %v", r, err)
	}
	if _, hit := g.Check(revoke.Subject{JobID: "j"}); !hit {
		t.Fatal("an unrecorded revocation is not in force")
	}

	if err := g.Delete(ctx, kept.ID, "ops"); !fault.Is(err, fault.AuditUnavailable) {
		t.Fatalf("Delete with a failing trail = %v, want AuditUnavailable", err)
	}
	if _, hit := g.Check(revoke.Subject{Org: "acme"}); !hit {
		t.Fatal("a revocation was lifted without a record")
	}
	if err := g.Delete(ctx, "rev_unknown", "ops"); !fault.Is(err, fault.NotFound) {
		t.Fatalf("Delete unknown = %v, want NotFound (before any record)", err)
	}

	// The trail recovers, the store fails the delete: the "unrevoked"
	// record is followed by a "failed" one.
	rec.err = nil
	rec.recs = nil
	g2 := revoke.NewRegistry(revoke.Options{Store: failingDelete{store}, Journal: revoke.AuditJournal{Recorder: rec}})
	if err := g2.Delete(ctx, kept.ID, "ops"); !fault.Is(err, fault.BackendUnavailable) {
		t.Fatalf("Delete on a failing store = %v", err)
	}
	if len(rec.recs) != 2 || rec.recs[0].Outcome != audit.Unrevoked || rec.recs[1].Outcome != audit.Failed {
		t.Fatalf("records %+v", rec.recs)
	}
}

// failingDelete is a store whose Delete fails.
type failingDelete struct{ *revoketest.Mem }

func (failingDelete) Delete(context.Context, string) error { return errors.New("database down") }
