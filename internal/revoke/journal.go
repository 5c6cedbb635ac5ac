package revoke

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/vtk/dispenser/internal/audit"
)

// Recorder makes one audit record durable (audit.Writer, api.Recorder).
type Recorder interface {
	Record(ctx context.Context, rec audit.Record) error
}

// Operations of revocation records in the audit trail.
const (
	OpAdd    = "revocation.add"
	OpDelete = "revocation.delete"
)

// AuditJournal records each revocation change as a durable audit record,
// in the same hash-chained trail as the credential decisions it affects.
// A record reads:
//
//   - outcome: revoked (add), unrevoked (delete), or failed (a delete that
//     was recorded but then failed in the store);
//   - operation: revocation.add or revocation.delete; reason: the kind;
//   - principal: the admin (or "cli:<user>") who made the change;
//   - the value in the field of its kind, so the usual filters find it:
//     org, job_id, task_id, access_key_id, and source_identity for a
//     principal (the principal field holds the actor);
//   - expiration: expires_at (absent when the revocation never expires);
//   - policy: the revocation itself as JSON (id, kind, value, reason,
//     created_by, created_at, expires_at), with policy_sha256 over it.
//
// No field can hold a secret: a revocation carries none.
type AuditJournal struct {
	Recorder Recorder
	// RequestID returns the request id of ctx (the admin API's), or "".
	RequestID func(context.Context) string
	// ReplicaID names the replica that took the change.
	ReplicaID string
}

// Note implements Journal: it returns nil only once the record is durable.
func (j AuditJournal) Note(ctx context.Context, e Event) error {
	if j.Recorder == nil {
		return errors.New("revoke: audit journal has no recorder")
	}
	return j.Recorder.Record(ctx, j.record(ctx, e))
}

func (j AuditJournal) record(ctx context.Context, e Event) audit.Record {
	r := e.Revocation
	rec := audit.Record{
		Time: e.Time.UTC(), Outcome: audit.Revoked, Operation: OpAdd, Reason: string(r.Kind), Principal: e.Actor,
		PackedPolicySize: -1, ReplicaID: j.ReplicaID,
	}
	switch e.Action {
	case "delete":
		rec.Outcome, rec.Operation = audit.Unrevoked, OpDelete
	case "delete_failed":
		rec.Outcome, rec.Operation = audit.Failed, OpDelete
	}
	if j.RequestID != nil {
		rec.RequestID = j.RequestID(ctx)
	}
	if rec.RequestID == "" {
		// Records are found by request id in logs; the revocation id is the
		// closest thing a CLI change has.
		rec.RequestID = r.ID
	}
	switch r.Kind {
	case KindOrg:
		rec.Org = r.Value
	case KindPrincipal:
		rec.SourceIdentity = r.Value
	case KindJob:
		rec.JobID = r.Value
	case KindTask:
		rec.TaskID = r.Value
	case KindAccessKeyID:
		rec.AccessKeyID = r.Value
	}
	if r.ExpiresAt != nil {
		rec.Expiration = r.ExpiresAt.UTC()
	}
	// Revocation marshals without error: strings, times and a kind.
	doc, _ := json.Marshal(r)
	rec.Policy = string(doc)
	sum := sha256.Sum256(doc)
	rec.PolicySHA256 = hex.EncodeToString(sum[:])
	return rec
}

// MultiJournal notes an event in each journal in order and stops at the
// first failure, so a journal after the audit trail (the log) only says a
// change happened once the trail holds it.
type MultiJournal []Journal

// Note implements Journal.
func (m MultiJournal) Note(ctx context.Context, e Event) error {
	for _, j := range m {
		if err := j.Note(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// Incomplete is returned together with a revocation that is stored and in
// force when a follow-up step failed. Warnings are reason codes for the
// operator (audit_unrecorded, aws_kill_switch_failed); Err holds the causes.
type Incomplete struct {
	Warnings []string
	Err      error
}

func (e *Incomplete) Error() string {
	return "revocation in force, but incomplete (" + strings.Join(e.Warnings, ", ") + "): " + e.Err.Error()
}

// Unwrap returns the causes.
func (e *Incomplete) Unwrap() error { return e.Err }
