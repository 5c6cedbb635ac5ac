package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// CredentialRequest is the task a caller asks credentials for, from the
// query string (GET) or a JSON body (POST).
type CredentialRequest struct {
	Operation       string   `json:"operation"`
	Location        string   `json:"location"`
	Files           []string `json:"files"`
	JobID           string   `json:"job_id"`
	TaskID          string   `json:"task_id"`
	DurationSeconds int      `json:"duration_seconds"`
	Format          string   `json:"format"`
	DryRun          bool     `json:"dry_run"`
}

// ContainerCredentials is the container/HTTP provider shape.
type ContainerCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
	AccountID       string `json:"AccountId,omitempty"`
}

// ProcessCredentials is the credential_process shape.
type ProcessCredentials struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken"`
	Expiration      string `json:"Expiration"`
	AccountID       string `json:"AccountId,omitempty"`
}

// DryRun is the answer to dry_run=true: the grant without credentials.
type DryRun struct {
	DryRun          bool          `json:"dry_run"`
	Identity        auth.Identity `json:"identity"`
	Grant           scope.Grant   `json:"grant"`
	DurationSeconds int           `json:"duration_seconds"`
}

// maxDurationSeconds is STS's longest session (12h); longer requests are
// clamped like any request above a tenant's max_duration.
const maxDurationSeconds = 12 * 60 * 60

// ExpirationLayout is the exact timestamp form SDKs parse.
const ExpirationLayout = "2006-01-02T15:04:05Z"

var queryParams = map[string]bool{
	"operation": true, "location": true, "file": true, "job_id": true, "task_id": true,
	"duration_seconds": true, "format": true, "dry_run": true,
}

// parseQuery reads the query string, refusing one it cannot read in full:
// url.Values skips a piece it cannot parse (a semicolon, a bad escape)
// without a word, so `dry_run=true;` would be dropped and real credentials
// vended, while a SigV4 signature covers every byte of it.
func parseQuery(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fault.Wrap(err, fault.InvalidRequest, "bad_query", "the query string cannot be read in full (a semicolon or a bad %%-escape); percent-encode the values")
	}
	return q, nil
}

func (s *Server) decodeRequest(r *http.Request) (CredentialRequest, error) {
	var req CredentialRequest
	q, err := parseQuery(r)
	if err != nil {
		return req, err
	}
	if r.Method == http.MethodPost {
		// The JSON body is the whole request: a query parameter beside it
		// would be silently ignored, so it is refused instead.
		for k := range q {
			if !strings.HasPrefix(k, "X-Amz-") {
				return req, fault.New(fault.InvalidRequest, "unknown_parameter", "POST /credentials takes its fields in the JSON body, not the query string (got %q)", truncate(k, 40))
			}
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, err := mime.ParseMediaType(ct)
			if err != nil || mt != "application/json" {
				return req, fault.New(fault.InvalidRequest, "bad_content_type", "POST /credentials takes Content-Type application/json")
			}
		}
		body := http.MaxBytesReader(nil, r.Body, s.opt.MaxBodyBytes)
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return req, fault.New(fault.RequestTooLarge, "body_too_large", "request body is larger than %d bytes", s.opt.MaxBodyBytes)
			}
			return req, fault.Wrap(err, fault.InvalidRequest, "bad_json", "request body is not a valid credential request: %s", jsonProblem(err))
		}
		if _, err := dec.Token(); err != io.EOF {
			return req, fault.New(fault.InvalidRequest, "bad_json", "request body must hold exactly one JSON object")
		}
		return req, nil
	}
	for k := range q {
		if !queryParams[k] && !strings.HasPrefix(k, "X-Amz-") {
			return req, fault.New(fault.InvalidRequest, "unknown_parameter", "unknown query parameter %q", truncate(k, 40))
		}
	}
	for k, v := range q {
		if len(v) > 1 && k != "file" && !strings.HasPrefix(k, "X-Amz-") {
			return req, fault.New(fault.InvalidRequest, "repeated_parameter", "query parameter %q is given more than once", k)
		}
	}
	req.Operation = q.Get("operation")
	req.Location = q.Get("location")
	req.Files = q["file"]
	req.JobID = q.Get("job_id")
	req.TaskID = q.Get("task_id")
	req.Format = q.Get("format")
	if v := q.Get("duration_seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return req, fault.New(fault.InvalidRequest, "bad_duration", "duration_seconds must be an integer")
		}
		req.DurationSeconds = n
	}
	if v := q.Get("dry_run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return req, fault.New(fault.InvalidRequest, "bad_dry_run", "dry_run must be true or false")
		}
		req.DryRun = b
	}
	return req, nil
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at offset " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return truncate(strings.TrimPrefix(err.Error(), "json: "), 80)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return "malformed JSON"
}

// Validate checks what scope does not: format, duration floor, bindings.
func (s *Server) validate(req *CredentialRequest, id auth.Identity) error {
	// Clamp before converting to a time.Duration, which would overflow for
	// absurd values; scope clamps further to the tenant's max_duration.
	if req.DurationSeconds > maxDurationSeconds {
		req.DurationSeconds = maxDurationSeconds
	}
	switch req.Format {
	case "", "container", "process":
	default:
		return fault.New(fault.InvalidRequest, "bad_format", "format must be container or process")
	}
	if least := s.opt.MinRemaining + scope.FloorMargin; req.DurationSeconds < 0 || (req.DurationSeconds > 0 && time.Duration(req.DurationSeconds)*time.Second < least) {
		return fault.New(fault.InvalidRequest, "bad_duration", "duration_seconds must be at least %d (the credential lifetime floor plus %d)", int(least.Seconds()), int(scope.FloorMargin.Seconds()))
	}
	if id.JobID != "" && req.JobID != id.JobID {
		return fault.New(fault.AccessDenied, "job_binding", "this credential is bound to another job_id")
	}
	if id.TaskID != "" && req.TaskID != id.TaskID {
		return fault.New(fault.AccessDenied, "task_binding", "this credential is bound to another task_id")
	}
	return nil
}

// credentials serves /credentials in two steps: decide (what the answer
// is) and respond (record it, log it, count it, then answer).
func (s *Server) credentials(w http.ResponseWriter, r *http.Request) {
	// The record is on its way to the recorder: announced now, ended on
	// every exit (recorded, dry run, panic, client gone) by the deferred
	// Cancel, so a batching recorder never waits for this request in vain.
	announced := s.expect()
	if announced != nil {
		defer announced.Cancel()
	}
	s.respond(w, r, s.decide(r), announced)
}

// decision is what the credential handler decided for one request: the
// audit record so far and either the credentials, a dry run's grant, or
// the refusal.
type decision struct {
	start  time.Time
	id     auth.Identity
	req    CredentialRequest
	rec    audit.Record
	grant  scope.Grant
	dryRun bool
	creds  vend.Credentials
	// err refuses the request (a *fault.Error or what fault.From maps).
	err error
}

// decide decodes and validates the request, checks revocations, asks the
// rules for a grant, applies the rate limits and vends. It records,
// logs and answers nothing: respond does.
func (s *Server) decide(r *http.Request) decision {
	d := decision{start: s.opt.Now()}
	d.id, _ = IdentityFrom(r.Context())
	d.rec = s.baseRecord(r, d.start)
	// Identity claims come from trusted issuers, but one the audit store
	// cannot hold would fail every request in its group commit.
	d.rec.Principal, d.rec.Org, d.rec.AuthMethod = auditText(d.id.Principal, 1024), auditText(d.id.Org, 1024), string(d.id.Method)
	if d.req, d.err = s.decodeRequest(r); d.err != nil {
		return d
	}
	d.rec.JobID, d.rec.TaskID, d.rec.FileCount = auditText(d.req.JobID, 128), auditText(d.req.TaskID, 128), len(d.req.Files)
	if op, err := scope.ParseOperation(d.req.Operation); err == nil {
		d.rec.Operation = string(op)
	}
	if d.err = s.validate(&d.req, d.id); d.err != nil {
		return d
	}
	if d.err = s.checkRevoked(revoke.Subject{Org: d.id.Org, Principal: d.id.Principal, JobID: d.req.JobID, TaskID: d.req.TaskID}); d.err != nil {
		return d
	}
	d.grant, d.err = s.rules.Load().Decide(scope.Subject{Principal: d.id.Principal, Org: d.id.Org}, scope.Request{
		Operation: d.req.Operation, Location: d.req.Location, Files: d.req.Files,
		JobID: d.req.JobID, TaskID: d.req.TaskID, Duration: time.Duration(d.req.DurationSeconds) * time.Second,
	})
	if loc, lerr := scope.ParseLocation(d.req.Location); lerr == nil {
		d.rec.Bucket, d.rec.Prefix = loc.Bucket, loc.Prefix
	}
	if d.err != nil {
		return d
	}
	fillGrant(&d.rec, d.grant)
	if d.dryRun = d.req.DryRun; d.dryRun {
		return d
	}
	if d.err = s.limit(r.Context(), d.id); d.err != nil {
		return d
	}
	if d.creds, d.err = s.vend(r.Context(), d.grant); d.err != nil {
		d.rec.AccessKeyID = d.creds.AccessKeyID // a revoked key is worth recording
		return d
	}
	d.rec.AccessKeyID, d.rec.Expiration, d.rec.PackedPolicySize = d.creds.AccessKeyID, d.creds.Expiration, d.creds.PackedPolicySize
	if left := d.creds.Expiration.Sub(s.opt.Now()); left < s.opt.MinRemaining {
		d.err = fault.New(fault.BackendUnavailable, "below_floor", "the backend returned credentials with %s left, under the %s floor", left.Truncate(time.Second), s.opt.MinRemaining).WithRetryAfter(5 * time.Second)
	}
	return d
}

// respond records the decision (through the announcement when there is
// one), logs it, counts it and answers. Credentials leave only after their
// record is durable: fail closed.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, d decision, announced Expectation) {
	switch {
	case d.dryRun:
		if announced != nil {
			announced.Cancel() // no record for a dry run
		}
		s.log(r).Info("dry run", zap.String("principal", d.id.Principal), zap.String("org", d.id.Org),
			zap.String("operation", string(d.grant.Operation)), zap.String("bucket", d.grant.Bucket), zap.String("prefix", d.grant.Prefix))
		writeJSON(w, http.StatusOK, DryRun{DryRun: true, Identity: d.id, Grant: d.grant, DurationSeconds: int(d.grant.Duration.Seconds())})
	case d.err != nil:
		s.refuse(w, r, d, announced)
	default:
		s.issue(w, r, d, announced)
	}
}

// refuse records, logs and counts a refusal, then answers with its error
// (or audit_unavailable when the refusal cannot be recorded).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, d decision, announced Expectation) {
	fe := fault.From(d.err)
	rec := d.rec
	rec.Outcome, rec.Reason = audit.Denied, fe.Reason
	if statusOf(fe) >= 500 {
		rec.Outcome = audit.Failed
	}
	rec.Latency = s.opt.Now().Sub(d.start)
	err := d.err
	if aerr := s.record(r.Context(), announced, rec); aerr != nil {
		err = auditUnavailable(aerr)
	}
	s.logDecision(r, rec, fe)
	outcome := string(rec.Outcome)
	if rec.Outcome == audit.Failed {
		outcome = "error"
	}
	s.opt.Metrics.Decision(s.tenantLabel(rec.Org), rec.Operation, rec.Backend, outcome, rec.Reason, rec.Latency)
	s.writeError(w, r, err)
}

// issue records an issuance and, once the record is durable, answers with
// the credentials in the requested format.
func (s *Server) issue(w http.ResponseWriter, r *http.Request, d decision, announced Expectation) {
	rec, creds := d.rec, d.creds
	rec.Outcome = audit.Issued
	rec.Latency = s.opt.Now().Sub(d.start)
	if err := s.record(r.Context(), announced, rec); err != nil {
		s.opt.Metrics.AuditFailure("vended_unrecorded")
		s.log(r).Error("credentials vended but not recorded; withheld from caller",
			zap.String("access_key_id", creds.AccessKeyID), zap.String("org", d.id.Org), zap.Error(err))
		s.writeError(w, r, auditUnavailable(err))
		return
	}
	s.logDecision(r, rec, nil)
	s.opt.Metrics.Decision(rec.Org, rec.Operation, rec.Backend, "issued", "", rec.Latency)
	s.opt.Metrics.Served(creds.Expiration.Sub(s.opt.Now()), creds.PackedPolicySize)
	exp := creds.Expiration.UTC().Format(ExpirationLayout)
	if d.req.Format == "process" {
		writeJSON(w, http.StatusOK, ProcessCredentials{Version: 1, AccessKeyID: creds.AccessKeyID,
			SecretAccessKey: creds.SecretAccessKey.Reveal(), SessionToken: creds.SessionToken.Reveal(),
			Expiration: exp, AccountID: creds.AccountID})
		return
	}
	writeJSON(w, http.StatusOK, ContainerCredentials{AccessKeyID: creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey.Reveal(), Token: creds.SessionToken.Reveal(),
		Expiration: exp, AccountID: creds.AccountID})
}

// record makes rec durable through the request's announcement, or the
// recorder when it does not batch.
func (s *Server) record(ctx context.Context, announced Expectation, rec audit.Record) error {
	if announced != nil {
		return announced.Record(ctx, rec)
	}
	return s.opt.Recorder.Record(ctx, rec)
}

// limit applies the rate limits to every issuance, a grant the vendor
// serves from its cache included: each answer is a durable audit record,
// so a cached grant repeated in a loop would otherwise grow the trail at
// the writer's speed. SDK refreshes (one per credential lifetime) spend
// the same tokens and fit any sane budget.
func (s *Server) limit(ctx context.Context, id auth.Identity) error {
	if s.opt.Limiter == nil {
		return nil
	}
	err := s.opt.Limiter.Allow(ctx, id.Principal, id.Org)
	if fe := fault.From(err); fe != nil && fe.Code == fault.Throttled {
		s.opt.Metrics.Limited(strings.TrimPrefix(fe.Reason, "rate_limited_"))
	}
	return err
}

// vend mints credentials and refuses a revoked access key id. When the
// vendor caches and can forget a grant (vend.Forgetter; a vend.Router asks
// the grant's backend), a revoked cached key is dropped and the grant
// vended afresh once; otherwise the request is refused.
func (s *Server) vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	creds, err := s.opt.Vendor.Vend(ctx, g)
	if err != nil || s.opt.Revocations == nil {
		return creds, err
	}
	rv, revoked := s.opt.Revocations.CheckAccessKey(creds.AccessKeyID)
	if !revoked {
		return creds, nil
	}
	if f, ok := s.opt.Vendor.(vend.Forgetter); !ok || !f.Forget(g) {
		return vend.Credentials{AccessKeyID: creds.AccessKeyID, PackedPolicySize: -1}, revokedFault(rv)
	}
	creds, err = s.opt.Vendor.Vend(ctx, g)
	if err != nil {
		return creds, err
	}
	if rv, revoked := s.opt.Revocations.CheckAccessKey(creds.AccessKeyID); revoked {
		return vend.Credentials{AccessKeyID: creds.AccessKeyID, PackedPolicySize: -1}, revokedFault(rv)
	}
	return creds, nil
}

// tenantLabel bounds the tenant metric label to configured tenants: the org
// of a refused caller comes from its credential and could be anything.
func (s *Server) tenantLabel(org string) string {
	if _, ok := s.rules.Load().Tenant(org); ok {
		return org
	}
	return "unknown"
}

func (s *Server) baseRecord(r *http.Request, start time.Time) audit.Record {
	return audit.Record{
		Time: start.UTC(), RequestID: RequestID(r.Context()), ClientAddr: s.clientAddr(r),
		UserAgent: truncate(r.UserAgent(), 256), ReplicaID: s.opt.ReplicaID, PackedPolicySize: -1,
		Latency: s.opt.Now().Sub(start),
	}
}

func fillGrant(rec *audit.Record, g scope.Grant) {
	rec.Operation, rec.Bucket, rec.Prefix = string(g.Operation), g.Bucket, g.Prefix
	rec.RoleARN, rec.Backend, rec.SessionName, rec.SourceIdentity = g.RoleARN, g.Backend, g.SessionName, g.SourceIdentity
	rec.Duration = g.Duration
	rec.Policy, rec.PolicySHA256 = g.Policy, g.PolicySHA256
	if rec.PolicySHA256 == "" {
		sum := sha256.Sum256([]byte(g.Policy))
		rec.PolicySHA256 = hex.EncodeToString(sum[:])
	}
}

// logDecision writes the one structured event per issuance or denial. The
// entry is checked before its fields are built, so a line the level or the
// sampler drops costs nothing.
func (s *Server) logDecision(r *http.Request, rec audit.Record, fe *fault.Error) {
	msg := "credentials refused"
	if rec.Outcome == audit.Issued {
		msg = "credentials issued"
	}
	ce := s.opt.Logger.Check(zap.InfoLevel, msg)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 20)
	fields = append(fields, zap.String("request_id", RequestID(r.Context())),
		zap.String("outcome", string(rec.Outcome)), zap.String("principal", rec.Principal), zap.String("org", rec.Org),
		zap.String("auth_method", rec.AuthMethod), zap.String("job_id", rec.JobID), zap.String("task_id", rec.TaskID),
		zap.String("operation", rec.Operation), zap.String("bucket", rec.Bucket), zap.String("prefix", rec.Prefix),
		zap.String("backend", rec.Backend), zap.Duration("latency", rec.Latency))
	if rec.Outcome == audit.Issued {
		fields = append(fields, zap.String("access_key_id", rec.AccessKeyID), zap.Time("expiration", rec.Expiration),
			zap.String("session_name", rec.SessionName), zap.String("policy_sha256", rec.PolicySHA256))
		if rec.PackedPolicySize >= 0 {
			fields = append(fields, zap.Int("packed_policy_size", rec.PackedPolicySize))
		}
		ce.Write(fields...)
		return
	}
	fields = append(fields, zap.String("code", string(fe.Code)), zap.String("reason", rec.Reason), zap.String("message", fe.Message))
	if fe.Err != nil && statusOf(fe) >= 500 {
		fields = append(fields, zap.Error(fe.Err))
	}
	ce.Write(fields...)
}

// auditText bounds a request-supplied string for the audit record: invalid
// UTF-8 and NUL replaced, at most n bytes cut on a character boundary.
// PostgreSQL text columns refuse both, and one record that cannot be
// written fails its whole group commit, other callers' requests included.
func auditText(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
