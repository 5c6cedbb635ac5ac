// Package correlate joins AWS CloudTrail S3 data events with the audit
// trail: for each event it finds the dispenser record that issued the
// access key the event was signed with, and judges the event against that
// record's session policy (evaluated with iampolicy, the evaluator the
// policy tests use) and lifetime. A session of a tenant role whose key the
// dispenser never issued is flagged: someone assumed the role another way.
package correlate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/scope/iampolicy"
)

// Verdict is the judgement of one S3 event.
type Verdict string

// Verdicts. OutsideGrant and UnknownKey are always critical; Unverifiable,
// AfterExpiry and BeforeIssue are critical when the call succeeded (AWS
// would have refused the credential the record describes, so the key was
// used as something else).
const (
	// OK: the key was issued by this dispenser and the event lies inside
	// its grant and its lifetime.
	OK Verdict = "ok"
	// DeniedAsExpected: a call outside the grant that S3 refused (the
	// session policy held).
	DeniedAsExpected Verdict = "denied_as_expected"
	// OutsideGrant: a call outside the grant that S3 did not refuse: the
	// session policy failed to restrict it.
	OutsideGrant Verdict = "outside_grant"
	// UnknownKey: a session of a configured tenant role whose access key
	// the dispenser never issued: the role was assumed some other way.
	UnknownKey Verdict = "unknown_key"
	// AfterExpiry: the event is later than the issued Expiration (plus the
	// clock skew tolerance).
	AfterExpiry Verdict = "after_expiry"
	// BeforeIssue: the event is earlier than the key's issuance (minus the
	// clock skew tolerance): the key was in use before the dispenser handed
	// it out.
	BeforeIssue Verdict = "before_issue"
	// Unverifiable: a dispenser key was used for a call the correlator
	// cannot judge (an eventName it cannot map to IAM actions, missing
	// request parameters, a policy the evaluator refuses).
	Unverifiable Verdict = "unverifiable"
	// NotDispenser: every other S3 event.
	NotDispenser Verdict = "not_dispenser"
)

// Verdicts lists every verdict in the order summaries show them.
var Verdicts = []Verdict{OK, DeniedAsExpected, OutsideGrant, UnknownKey, AfterExpiry, BeforeIssue, Unverifiable, NotDispenser}

// Issuance is the audit record of the credentials an event used: enough to
// name the task and fetch the record's receipt (GET
// /v1/audit/{record_id}/proof).
type Issuance struct {
	RecordID       string    `json:"record_id"`
	IssuedAt       time.Time `json:"issued_at"`
	Expiration     time.Time `json:"expiration"`
	Principal      string    `json:"principal"`
	Org            string    `json:"org"`
	JobID          string    `json:"job_id,omitempty"`
	TaskID         string    `json:"task_id,omitempty"`
	Operation      string    `json:"operation"`
	Location       string    `json:"location"`
	Backend        string    `json:"backend,omitempty"`
	RoleARN        string    `json:"role_arn,omitempty"`
	SessionName    string    `json:"session_name,omitempty"`
	SourceIdentity string    `json:"source_identity,omitempty"`
	PolicySHA256   string    `json:"policy_sha256"`
}

// Event is one judged S3 event.
type Event struct {
	Time      time.Time `json:"time"`
	EventName string    `json:"event_name"`
	EventID   string    `json:"event_id,omitempty"`
	// Actions are the IAM actions the call needed.
	Actions []string `json:"actions,omitempty"`
	// Object is s3://bucket/key (s3://bucket/prefix for a listing,
	// s3://bucket for a bucket-level call).
	Object string `json:"object,omitempty"`
	// CopySource is the object a copy read.
	CopySource string `json:"copy_source,omitempty"`
	// Outcome is "success" or CloudTrail's errorCode.
	Outcome  string  `json:"outcome"`
	Verdict  Verdict `json:"verdict"`
	Critical bool    `json:"critical"`
	Reason   string  `json:"reason,omitempty"`

	AccessKeyID    string `json:"access_key_id,omitempty"`
	IdentityType   string `json:"identity_type,omitempty"`
	SessionARN     string `json:"session_arn,omitempty"`
	RoleARN        string `json:"role_arn,omitempty"`
	SourceIdentity string `json:"source_identity,omitempty"`
	SourceIP       string `json:"source_ip,omitempty"`
	BytesIn        int64  `json:"bytes_in"`
	BytesOut       int64  `json:"bytes_out"`

	// Record is the issuance the event is attributed to (nil when the key
	// is not the dispenser's).
	Record *Issuance `json:"record,omitempty"`
	// AlsoIssued lists other records the same key was served under and
	// that were live at the event time (the credential cache hands one
	// session to identical grants).
	AlsoIssued []string `json:"also_issued,omitempty"`
	Notes      []string `json:"notes,omitempty"`

	// Where the record was read.
	Source cloudtrail.Position `json:"input"`

	access access
	source string // copy source object, for the task summary
}

// Summary counts a run.
type Summary struct {
	Files         int             `json:"files"`
	Records       int             `json:"records"`
	S3Events      int             `json:"s3_events"`
	OtherEvents   int             `json:"other_events"`
	OutsideWindow int             `json:"outside_window"`
	Verdicts      map[Verdict]int `json:"verdicts"`
	Critical      int             `json:"critical"`
	TrailQueries  int             `json:"trail_queries"`
	// Problems lists the first MaxProblems problems; ProblemCount counts
	// them all.
	Problems     []cloudtrail.Problem `json:"problems"`
	ProblemCount int                  `json:"problem_count"`
}

// MaxProblems bounds the problems a summary lists.
const MaxProblems = 100

// Role is a tenant's role: sessions of it should only exist through the
// dispenser.
type Role struct {
	ARN string // arn:aws:iam::ACCOUNT:role/PATH/NAME
	Org string
}

// Options configure a Correlator.
type Options struct {
	// Trail is the audit trail (its access_key_id index answers lookups).
	Trail audit.Querier
	// Roles are the configured tenants' roles.
	Roles []Role
	// ClockSkew is tolerated around a key's lifetime.
	ClockSkew time.Duration
	// Since (inclusive) and Until (exclusive) select events by eventTime;
	// zero means unbounded.
	Since, Until time.Time
	// CacheWeight bounds the access-key cache, in records held (default
	// DefaultCacheWeight).
	CacheWeight int
}

// DefaultCacheWeight is the default bound of the access-key cache.
const DefaultCacheWeight = 10000

// Correlator judges events one at a time. It is not safe for concurrent
// use; memory is bounded by its cache whatever the number of events.
type Correlator struct {
	opt       Options
	roles     roleSet
	keys      *lookups
	sum       Summary
	onProblem func(cloudtrail.Problem)
}

// New returns a Correlator.
func New(opt Options) (*Correlator, error) {
	if opt.Trail == nil {
		return nil, errors.New("correlate: no audit trail")
	}
	if opt.CacheWeight <= 0 {
		opt.CacheWeight = DefaultCacheWeight
	}
	c := &Correlator{opt: opt, roles: newRoleSet(opt.Roles), keys: newLookups(opt.Trail, opt.CacheWeight)}
	c.sum.Verdicts = map[Verdict]int{}
	for _, v := range Verdicts {
		c.sum.Verdicts[v] = 0
	}
	c.sum.Problems = []cloudtrail.Problem{}
	return c, nil
}

// Problem counts a problem with the input (and lists the first ones).
func (c *Correlator) Problem(p cloudtrail.Problem) {
	if c.onProblem != nil {
		c.onProblem(p)
	}
	c.sum.ProblemCount++
	if len(c.sum.Problems) < MaxProblems {
		c.sum.Problems = append(c.sum.Problems, p)
	}
}

// Summary returns the counts so far; files is the number of files read.
func (c *Correlator) Summary(files int) Summary {
	s := c.sum
	s.Files = files
	s.TrailQueries = c.keys.queries
	return s
}

// keyIDRe is the shape of an AWS access key id.
var keyIDRe = regexp.MustCompile(`^[A-Z0-9]{16,128}$`)

// Judge judges one record. It returns nil for a record that is not an S3
// event, lies outside the time window or cannot be judged (reported as a
// problem); the error is only a failure to read the trail.
func (c *Correlator) Judge(ctx context.Context, pos cloudtrail.Position, rec *cloudtrail.Record) (*Event, error) {
	c.sum.Records++
	if rec.EventSource != "s3.amazonaws.com" {
		c.sum.OtherEvents++
		return nil, nil
	}
	t := rec.Time()
	if (!c.opt.Since.IsZero() && t.Before(c.opt.Since)) || (!c.opt.Until.IsZero() && !t.Before(c.opt.Until)) {
		c.sum.OutsideWindow++
		return nil, nil
	}
	ui := rec.UserIdentity
	if ui == nil {
		c.Problem(cloudtrail.Problem{Position: pos, Message: "malformed record: S3 event without userIdentity"})
		return nil, nil
	}
	c.sum.S3Events++
	e := &Event{Time: t, EventName: rec.EventName, EventID: rec.EventID, Outcome: "success", AccessKeyID: ui.AccessKeyID,
		IdentityType: ui.Type, SessionARN: ui.ARN, SourceIP: rec.SourceIPAddress, Source: pos}
	if rec.ErrorCode != "" {
		e.Outcome = rec.ErrorCode
	}
	if sc := ui.SessionContext; sc != nil {
		e.SourceIdentity = sc.SourceIdentity
		if sc.SessionIssuer != nil {
			e.RoleARN = sc.SessionIssuer.ARN
		}
	}
	if d := rec.AdditionalEventData; d != nil {
		e.BytesIn, e.BytesOut = int64(d.BytesTransferredIn), int64(d.BytesTransferredOut)
	}
	call, callErr := callOf(rec)
	e.Actions, e.Object, e.CopySource, e.access = call.actions, call.object, call.source, call.access
	if callErr != nil && rec.RequestParameters != nil && rec.RequestParameters.BucketName != "" {
		e.Object = "s3://" + rec.RequestParameters.BucketName
		if k := rec.RequestParameters.Key; k != "" {
			e.Object += "/" + k
		}
	}

	var entry *keyEntry
	if keyIDRe.MatchString(ui.AccessKeyID) {
		var err error
		if entry, err = c.keys.entry(ctx, ui.AccessKeyID); err != nil {
			return nil, err
		}
	}
	if entry == nil || len(entry.issued) == 0 {
		if orgs, ok := c.roles.match(ui); ok {
			c.verdict(e, UnknownKey, true, fmt.Sprintf("a session of the role of tenant %s whose access key the dispenser never issued: the role was assumed outside the dispenser", orgs))
		} else {
			c.verdict(e, NotDispenser, false, "")
		}
		return e, nil
	}
	issued := entry.issued
	if entry.dense {
		var err error
		if issued, err = c.keys.around(ctx, ui.AccessKeyID, t, c.opt.ClockSkew); err != nil {
			return nil, err
		}
		e.Notes = append(e.Notes, fmt.Sprintf("the key has more than %d issued records; only those around the event time were considered", audit.MaxLimit))
		if len(issued) == 0 {
			issued = entry.issued
		}
	}
	c.judgeIssued(e, rec, call, callErr, issued)
	if !entry.revokedAt.IsZero() && t.After(entry.revokedAt) {
		e.Notes = append(e.Notes, fmt.Sprintf("used after the key was revoked at %s (a revocation stops issuance; only the AWS kill switch ends a live session)", entry.revokedAt.UTC().Format(time.RFC3339)))
	}
	return e, nil
}

// judgeIssued judges an event signed with a key the dispenser issued.
func (c *Correlator) judgeIssued(e *Event, rec *cloudtrail.Record, call s3Call, callErr error, issued []*issuance) {
	t := e.Time
	live, lifetime := c.liveAt(t, issued)
	// The session must be the one the dispenser created: the key id alone
	// does not prove it (a forged or corrupted record, in either log).
	var same []*issuance
	mismatch := ""
	for _, is := range live {
		if m := sessionMismatch(rec.UserIdentity, e, is); m == "" {
			same = append(same, is)
		} else if mismatch == "" {
			mismatch = m
		}
	}
	if len(same) == 0 {
		c.verdict(e, UnknownKey, true, fmt.Sprintf("the access key id is the one %s issued, but %s: the dispenser did not issue this session", live[0].RecordID, mismatch))
		return
	}
	live = same
	chosen, allowed, policyErr := attribute(live, call, callErr)
	e.Record = &chosen.Issuance
	if chosen.PolicySHA256 != "" && chosen.PolicySHA256 != chosen.policy.sha256 {
		e.Notes = append(e.Notes, fmt.Sprintf("the policy_sha256 of %s does not match its policy (sha256 %s), which it was judged by", chosen.RecordID, chosen.policy.sha256))
	}
	for _, is := range live {
		if is != chosen && len(e.AlsoIssued) < 10 {
			e.AlsoIssued = append(e.AlsoIssued, is.RecordID)
		}
	}

	succeeded := rec.ErrorCode == ""
	what := strings.Join(e.Actions, "+") + " on " + e.Object
	if call.via != "" {
		what += " through " + call.via
	}
	switch {
	case callErr != nil:
		c.verdict(e, Unverifiable, succeeded, strings.TrimPrefix(callErr.Error(), errUnmapped.Error()+": "))
	case policyErr != nil:
		c.verdict(e, Unverifiable, succeeded, fmt.Sprintf("the session policy of %s cannot be evaluated: %v", chosen.RecordID, policyErr))
	case !allowed && !refused(rec.ErrorCode):
		c.verdict(e, OutsideGrant, true, fmt.Sprintf("%s is outside the session policy of %s (sha256 %s), and S3 did not refuse it (%s): the policy failed to restrict the session",
			what, chosen.RecordID, chosen.PolicySHA256, e.Outcome))
	case lifetime == AfterExpiry:
		// AWS refuses an expired session: one that succeeded was not the
		// credential this record describes.
		c.verdict(e, AfterExpiry, succeeded, fmt.Sprintf("%s after the credentials of %s expired at %s", t.Sub(chosen.Expiration).Round(time.Second),
			chosen.RecordID, chosen.Expiration.Format(time.RFC3339)))
	case lifetime == BeforeIssue:
		c.verdict(e, BeforeIssue, succeeded, fmt.Sprintf("%s before %s issued the key at %s", chosen.IssuedAt.Sub(t).Round(time.Second),
			chosen.RecordID, chosen.IssuedAt.Format(time.RFC3339)))
	case allowed:
		c.verdict(e, OK, false, "")
	default:
		c.verdict(e, DeniedAsExpected, false, fmt.Sprintf("%s is outside the session policy of %s; S3 refused it (%s)", what, chosen.RecordID, e.Outcome))
	}
}

// liveAt returns the issuances of the key live at t (within the clock
// skew), newest first as given. When none is, it returns the nearest one
// and how t misses it: the last to expire before t (AfterExpiry: a key
// used after its session), or else the first issued (BeforeIssue: a key
// used before the dispenser handed it out).
func (c *Correlator) liveAt(t time.Time, issued []*issuance) ([]*issuance, Verdict) {
	skew := c.opt.ClockSkew
	var live []*issuance
	for _, is := range issued {
		if !t.Before(is.IssuedAt.Add(-skew)) && !t.After(is.Expiration.Add(skew)) {
			live = append(live, is)
		}
	}
	if len(live) > 0 {
		return live, ""
	}
	var nearest *issuance
	for _, is := range issued {
		if t.After(is.Expiration.Add(skew)) && (nearest == nil || is.Expiration.After(nearest.Expiration)) {
			nearest = is
		}
	}
	if nearest != nil {
		return []*issuance{nearest}, AfterExpiry
	}
	nearest = issued[0]
	for _, is := range issued {
		if is.IssuedAt.Before(nearest.IssuedAt) {
			nearest = is
		}
	}
	return []*issuance{nearest}, BeforeIssue
}

// attribute picks the newest live issuance whose session policy allows
// the call (allowed), or else the newest, with the error that kept its
// policy from being evaluated.
func attribute(live []*issuance, call s3Call, callErr error) (chosen *issuance, allowed bool, policyErr error) {
	chosen = live[0]
	if callErr != nil {
		return chosen, false, nil
	}
	for _, is := range live {
		p, err := is.policy.get()
		if err != nil {
			if is == live[0] {
				policyErr = err
			}
			continue
		}
		if allowsAll(p.Allows, call) {
			return is, true, nil
		}
	}
	return chosen, false, policyErr
}

func allowsAll(allows func(r iampolicy.Request) bool, call s3Call) bool {
	for _, r := range call.requests {
		if !allows(r) {
			return false
		}
	}
	return len(call.requests) > 0
}

func (c *Correlator) verdict(e *Event, v Verdict, critical bool, reason string) {
	e.Verdict, e.Critical, e.Reason = v, critical, reason
	c.sum.Verdicts[v]++
	if critical {
		c.sum.Critical++
	}
}

// sessionMismatch says how the event's session differs from the one is
// describes, or "" when it does not: another role (by account and name,
// IAM role names being unique in an account whatever the path) or another
// source identity (set by AssumeRole and kept by the session).
func sessionMismatch(ui *cloudtrail.UserIdentity, e *Event, is *issuance) string {
	if is.RoleARN != "" {
		if got, ok := sessionRole(ui); ok {
			if want, ok := roleKey(is.RoleARN); ok && got != want {
				return fmt.Sprintf("the session is of role %s, not %s", sessionRoleName(ui, e), is.RoleARN)
			}
		}
	}
	if e.SourceIdentity != "" && is.SourceIdentity != "" && e.SourceIdentity != is.SourceIdentity {
		return fmt.Sprintf("the session's source identity is %q, not %q", e.SourceIdentity, is.SourceIdentity)
	}
	return ""
}

// sessionRoleName names the session's role for messages.
func sessionRoleName(ui *cloudtrail.UserIdentity, e *Event) string {
	if e.RoleARN != "" {
		return e.RoleARN
	}
	return ui.ARN
}

// roleKey is "ACCOUNT/name" (lower-case name) of an IAM role ARN
// (arn:aws:iam::ACCOUNT:role/PATH/NAME) or an assumed-role ARN
// (arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION, which has no path).
func roleKey(arn string) (string, bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[4] == "" {
		return "", false
	}
	var name string
	switch res := parts[5]; {
	case parts[2] == "iam" && strings.HasPrefix(res, "role/"):
		name = res[strings.LastIndexByte(res, '/')+1:]
	case parts[2] == "sts" && strings.HasPrefix(res, "assumed-role/"):
		name, _, _ = strings.Cut(strings.TrimPrefix(res, "assumed-role/"), "/")
	}
	if name == "" {
		return "", false
	}
	return parts[4] + "/" + strings.ToLower(name), true
}

// sessionRole is the roleKey of the role whose session made a call: its
// sessionIssuer.arn, or, when a record lacks it, its assumed-role ARN.
func sessionRole(ui *cloudtrail.UserIdentity) (string, bool) {
	if sc := ui.SessionContext; sc != nil && sc.SessionIssuer != nil && sc.SessionIssuer.ARN != "" {
		return roleKey(sc.SessionIssuer.ARN)
	}
	return roleKey(ui.ARN)
}

// roleSet matches sessions to tenant roles by account and role name (IAM
// role names are unique in an account and case-insensitive, so a role
// configured with or without its path matches).
type roleSet map[string][]string

func newRoleSet(roles []Role) roleSet {
	rs := roleSet{}
	for _, r := range roles {
		if k, ok := roleKey(r.ARN); ok {
			rs[k] = append(rs[k], r.Org)
		}
	}
	return rs
}

func (rs roleSet) match(ui *cloudtrail.UserIdentity) (string, bool) {
	k, ok := sessionRole(ui)
	if !ok {
		return "", false
	}
	orgs, ok := rs[k]
	return strings.Join(orgs, ", "), ok
}
