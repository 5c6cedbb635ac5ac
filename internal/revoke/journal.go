package revoke

import (
	"context"
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
// The record is an audit.RevocationChange (which names how it maps onto
// the record's fields): the actor in principal, the kind in reason, the
// value in the field of its kind, the revocation itself as JSON in policy.
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
	return j.Recorder.Record(ctx, j.change(ctx, e).Record())
}

func (j AuditJournal) change(ctx context.Context, e Event) audit.RevocationChange {
	r := e.Revocation
	c := audit.RevocationChange{Time: e.Time, Outcome: audit.Revoked, Operation: OpAdd, Actor: e.Actor,
		Kind: string(r.Kind), Value: r.Value, ExpiresAt: r.ExpiresAt, ReplicaID: j.ReplicaID}
	switch e.Action {
	case "delete":
		c.Outcome, c.Operation = audit.Unrevoked, OpDelete
	case "delete_failed":
		c.Outcome, c.Operation = audit.Failed, OpDelete
	}
	if j.RequestID != nil {
		c.RequestID = j.RequestID(ctx)
	}
	if c.RequestID == "" {
		// Records are found by request id in logs; the revocation id is the
		// closest thing a CLI change has.
		c.RequestID = r.ID
	}
	// Revocation marshals without error: strings, times and a kind.
	c.Document, _ = json.Marshal(r)
	return c
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
