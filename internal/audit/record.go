// Package audit records every credential decision (issued, denied, failed)
// before the caller gets an answer.
package audit

import "time"

// Outcome of a decision.
type Outcome string

// Outcomes.
const (
	Issued Outcome = "issued"
	Denied Outcome = "denied"
	Failed Outcome = "failed"
)

// Record is one decision. It never holds a secret access key, session token
// or bearer token: the types here cannot carry one.
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
}
