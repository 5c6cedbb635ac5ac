// Package scope decides what a caller may do: it maps a storage task
// (operation, s3:// location, optional files, job and task ids) through the
// tenant rules to a Grant carrying a minimal IAM session policy. Deny by
// default: an org without a tenant, or a task no grant rule covers, is refused.
package scope

import "time"

// FloorMargin is how much longer than the credential lifetime floor
// (server.min_remaining) a session must be. A session only as long as the
// floor has less than the floor left by the time it is served (backend
// latency, clock skew, Expiration cut to whole seconds), so it could never
// be returned: the configuration demands the margin of every tenant's
// default_duration, the API of a requested duration_seconds.
const FloorMargin = time.Minute

// Tag is an STS session tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Grant is everything a vendor needs to mint credentials for one task, and
// everything an operator needs to understand why (dry_run renders it).
type Grant struct {
	Org       string    `json:"org"`
	Principal string    `json:"principal"`
	Operation Operation `json:"operation"`
	Bucket    string    `json:"bucket"`
	Prefix    string    `json:"prefix"`
	// Keys are the exact object keys when the request named files.
	Keys []string `json:"keys,omitempty"`
	// Compacted is true when the file list did not fit the session policy
	// limit as exact object ARNs and the policy grants CompactedPrefix (the
	// files' longest common directory, at or under Prefix) instead.
	Compacted       bool   `json:"compacted,omitempty"`
	CompactedPrefix string `json:"compacted_prefix,omitempty"`
	JobID           string `json:"job_id,omitempty"`
	TaskID          string `json:"task_id,omitempty"`

	Backend    string `json:"backend"`
	RoleARN    string `json:"role_arn,omitempty"`
	ExternalID string `json:"-"` // a shared secret of sorts with the customer: not rendered
	// Policy is the compact JSON session policy. It is never empty.
	Policy string `json:"policy"`
	// PolicySHA256 is the hex SHA-256 of Policy when Decide made the grant
	// ("" otherwise: compute it).
	PolicySHA256      string        `json:"-"`
	Duration          time.Duration `json:"-"`
	SessionName       string        `json:"session_name"`
	Tags              []Tag         `json:"tags,omitempty"`
	TransitiveTagKeys []string      `json:"transitive_tag_keys,omitempty"`
	SourceIdentity    string        `json:"source_identity,omitempty"`
}

// Request is a storage task as the caller describes it.
type Request struct {
	Operation string
	Location  string
	Files     []string
	JobID     string
	TaskID    string
	// Duration is the requested session length; zero means the tenant default.
	Duration time.Duration
}

// Subject is the authenticated caller as scope needs it.
type Subject struct {
	Principal string
	Org       string
}
