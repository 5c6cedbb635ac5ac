// Package audit records every credential decision (issued, denied, failed)
// before the caller gets an answer.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Outcome of a decision.
type Outcome string

// Outcomes.
const (
	Issued Outcome = "issued"
	Denied Outcome = "denied"
	Failed Outcome = "failed"
)

// Record is one decision. It never holds a secret access key, session token
// or bearer token: the types here cannot carry one. A change to the
// revocation list (outcome revoked or unrevoked) is stored in the same
// fields with another meaning for some: RevocationChange names the mapping.
type Record struct {
	ID               string        `json:"id,omitempty"` // assigned by the store
	Time             time.Time     `json:"time"`
	RequestID        string        `json:"request_id"`
	Outcome          Outcome       `json:"outcome"`
	Reason           string        `json:"reason,omitempty"`
	Principal        string        `json:"principal,omitempty"`
	AuthMethod       string        `json:"auth_method,omitempty"`
	Org              string        `json:"org,omitempty"`
	JobID            string        `json:"job_id,omitempty"`
	TaskID           string        `json:"task_id,omitempty"`
	Operation        string        `json:"operation,omitempty"`
	Bucket           string        `json:"bucket,omitempty"`
	Prefix           string        `json:"prefix,omitempty"`
	FileCount        int           `json:"file_count"`
	RoleARN          string        `json:"role_arn,omitempty"`
	Backend          string        `json:"backend,omitempty"`
	SessionName      string        `json:"session_name,omitempty"`
	SourceIdentity   string        `json:"source_identity,omitempty"`
	AccessKeyID      string        `json:"access_key_id,omitempty"`
	Expiration       time.Time     `json:"expiration,omitzero"`
	Duration         time.Duration `json:"duration_ns,omitempty"`
	PolicySHA256     string        `json:"policy_sha256,omitempty"`
	Policy           string        `json:"policy,omitempty"`
	PackedPolicySize int           `json:"packed_policy_size"` // -1 when unknown
	ClientAddr       string        `json:"client_addr,omitempty"`
	UserAgent        string        `json:"user_agent,omitempty"`
	Latency          time.Duration `json:"latency_ns"`
	ReplicaID        string        `json:"replica_id,omitempty"`
	// Detail carries the structured facts of a record that is not one
	// credential decision (a summary of folded denials, an operator's
	// decision about the log). Empty for ordinary decisions.
	Detail Detail `json:"detail,omitempty"`
}

// Detail is a JSON object stored verbatim in an entry (entry encoding
// version 2) and rendered as that object. It is a string so that a Record
// stays comparable; NewDetail builds one.
type Detail string

// NewDetail marshals v, which must encode as a JSON object.
func NewDetail(v any) (Detail, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("audit: detail: %w", err)
	}
	d := Detail(b)
	if !d.valid() {
		return "", errors.New("audit: detail must be a JSON object")
	}
	return d, nil
}

// valid reports whether d is empty or one JSON object.
func (d Detail) valid() bool {
	if d == "" {
		return true
	}
	return d[0] == '{' && json.Valid([]byte(d))
}

// Decode unmarshals d into v.
func (d Detail) Decode(v any) error {
	if d == "" {
		return errors.New("audit: record has no detail")
	}
	return json.Unmarshal([]byte(d), v)
}

// MarshalJSON renders the stored object itself, not a string holding it.
func (d Detail) MarshalJSON() ([]byte, error) {
	if d == "" {
		return []byte("null"), nil
	}
	if !d.valid() {
		return nil, errors.New("audit: detail is not a JSON object")
	}
	return []byte(d), nil
}

// UnmarshalJSON keeps the object's bytes as given.
func (d *Detail) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*d = ""
		return nil
	}
	v := Detail(b)
	if !v.valid() {
		return errors.New("audit: detail must be a JSON object")
	}
	*d = v
	return nil
}
