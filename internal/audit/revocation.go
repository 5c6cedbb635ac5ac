package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Outcomes of a change to the revocation list. The trail records who cut
// off (or restored) access next to the decisions that cut-off affects, so
// one query answers "why was this job refused, and who decided it".
const (
	// Revoked is a revocation added.
	Revoked Outcome = "revoked"
	// Unrevoked is a revocation deleted (access restored).
	Unrevoked Outcome = "unrevoked"
)

// Known reports whether o is an outcome the trail records.
func (o Outcome) Known() bool {
	switch o {
	case Issued, Denied, Failed, Revoked, Unrevoked, Adopted:
		return true
	case Summarized: // refusals counted past the denial-record budget
		return true
	}
	return false
}

// RevocationChange is one change to the revocation list, as the trail
// records it. A revocation record is stored in the fields of a credential
// decision, so the trail's usual filters and indexes find it; Record is
// the one place that maps it onto them:
//
//   - Outcome: Revoked (added), Unrevoked (deleted), or Failed (a deletion
//     recorded, then failed in the store); Operation: revocation.add or
//     revocation.delete;
//   - Principal: the actor who changed the list (an admin principal, or
//     "cli:<user>"), not a caller;
//   - Reason: the revocation's kind;
//   - the revoked value in the field of its kind (Org, JobID, TaskID,
//     AccessKeyID), and SourceIdentity for a revoked principal (Principal
//     holds the actor);
//   - Expiration: when the revocation expires (zero: never);
//   - Policy: the revocation itself as JSON, PolicySHA256 over it.
type RevocationChange struct {
	Time      time.Time
	Outcome   Outcome
	Operation string
	Actor     string
	// Kind and Value are what is revoked: org, principal, job, task or
	// access_key_id, and its value.
	Kind, Value string
	ExpiresAt   *time.Time
	// Document is the revocation as JSON.
	Document             []byte
	RequestID, ReplicaID string
}

// Record maps the change onto a Record (see RevocationChange).
func (c RevocationChange) Record() Record {
	rec := Record{
		Time: c.Time.UTC(), Outcome: c.Outcome, Operation: c.Operation, Reason: c.Kind, Principal: c.Actor,
		PackedPolicySize: -1, RequestID: c.RequestID, ReplicaID: c.ReplicaID,
	}
	switch c.Kind {
	case "org":
		rec.Org = c.Value
	case "principal":
		rec.SourceIdentity = c.Value
	case "job":
		rec.JobID = c.Value
	case "task":
		rec.TaskID = c.Value
	case "access_key_id":
		rec.AccessKeyID = c.Value
	}
	if c.ExpiresAt != nil {
		rec.Expiration = c.ExpiresAt.UTC()
	}
	rec.Policy = string(c.Document)
	sum := sha256.Sum256(c.Document)
	rec.PolicySHA256 = hex.EncodeToString(sum[:])
	return rec
}
