// Package assumerole is the `assume-role` backend: it calls sts:AssumeRole
// on the tenant's role in the downstream account with the task's session
// policy, session name, tags, source identity and external id, so the
// credentials it vends are short-lived and scoped. Base credentials come from
// the standard AWS chain (environment, shared config/profile, web identity /
// IRSA, ECS, IMDS), optionally through an intermediate base role.
//
// The backend itself does not cache; it advertises its cache options through
// vend.CacheConfigurable and cmd/dispenser wraps it in the generic credential
// cache. The per-tenant STS budget is applied here, directly around the STS
// call, so it holds with or without the cache.
package assumerole

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/budget"
)

// Type is the backend type name in the configuration.
const Type = "assume-role"

// Options of an assume-role backend.
type Options struct {
	// Region of the STS endpoint. Empty means the region of the standard AWS
	// configuration (AWS_REGION, profile). Regional endpoints are used: each
	// region has its own STS throttle and its tokens are valid everywhere.
	Region string `yaml:"region"`
	// Endpoint overrides the STS endpoint URL (VPC endpoint, FIPS endpoint,
	// or a local STS-compatible server). https, or http on loopback only.
	Endpoint string `yaml:"endpoint"`
	// UseFIPS selects the FIPS endpoint of Region.
	UseFIPS bool `yaml:"use_fips"`
	// Profile selects a shared-config profile for the base credentials.
	Profile string `yaml:"profile"`
	// BaseRoleARN, when set, is assumed first with the base credentials; the
	// tenant roles are then assumed with that role's credentials (role
	// chaining: sessions are limited to 1h).
	BaseRoleARN     string `yaml:"base_role_arn"`
	BaseExternalID  string `yaml:"base_external_id"`
	BaseSessionName string `yaml:"base_session_name"`
	// CallTimeout bounds one AssumeRole call including the SDK's retries
	// (default 10s).
	CallTimeout duration.Duration `yaml:"call_timeout"`
	// AttemptTimeout bounds one HTTP attempt (default 3s); a timed-out
	// attempt is retried by the SDK while CallTimeout allows.
	AttemptTimeout duration.Duration `yaml:"attempt_timeout"`
	// MaxAttempts is the SDK standard retryer's attempt count (default 3).
	MaxAttempts int `yaml:"max_attempts"`
	// MaxDuration caps DurationSeconds for this backend (default 1h, the
	// role-chaining limit; raise up to 12h only when the base credentials
	// are not role credentials and the target roles allow it).
	MaxDuration duration.Duration `yaml:"max_duration"`
	// Cache configures the credential cache wrapped around this backend.
	Cache vend.CacheOptions `yaml:"cache"`
	// Budget is the per-tenant share of STS calls.
	Budget budget.Options `yaml:"budget"`
}

var (
	nameRe   = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	regionRe = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
)

// ApplyDefaults fills unset options.
func (o *Options) ApplyDefaults() {
	if o.CallTimeout == 0 {
		o.CallTimeout = duration.Duration(10 * time.Second)
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = min(duration.Duration(3*time.Second), o.CallTimeout)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = retry.DefaultMaxAttempts
	}
	if o.MaxDuration == 0 {
		o.MaxDuration = duration.Duration(scope.DefaultMaxDuration)
	}
	if o.BaseRoleARN != "" && o.BaseSessionName == "" {
		o.BaseSessionName = "dispenser"
	}
	o.Cache.ApplyDefaults()
	o.Budget.ApplyDefaults()
}

// Validate records every problem under path.
func (o Options) Validate(p *validate.Problems, path string) {
	if o.Region != "" && !regionRe.MatchString(o.Region) {
		p.Addf(validate.Join(path, "region"), "%q is not an AWS region (for example eu-central-1)", o.Region)
	}
	if o.Endpoint != "" {
		if err := validate.ServiceURL(o.Endpoint); err != nil {
			p.Addf(validate.Join(path, "endpoint"), "%v", err)
		}
	}
	if o.BaseRoleARN != "" && !scope.ValidRoleARN(o.BaseRoleARN) {
		p.Addf(validate.Join(path, "base_role_arn"), "%q is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)", o.BaseRoleARN)
	}
	if o.BaseExternalID != "" && !scope.ValidExternalID(o.BaseExternalID) {
		p.Addf(validate.Join(path, "base_external_id"), "must be 2-1224 characters of [\\w+=,.@:/-]")
	}
	if o.BaseRoleARN == "" && (o.BaseExternalID != "" || o.BaseSessionName != "") {
		p.Addf(validate.Join(path, "base_role_arn"), "is required when base_external_id or base_session_name is set")
	}
	if o.BaseSessionName != "" && !nameRe.MatchString(o.BaseSessionName) {
		p.Addf(validate.Join(path, "base_session_name"), "must be 2-64 characters of [\\w+=,.@-]")
	}
	if o.CallTimeout.D() < 100*time.Millisecond || o.CallTimeout.D() > 2*time.Minute {
		p.Addf(validate.Join(path, "call_timeout"), "must be between 100ms and 2m, got %s", o.CallTimeout)
	}
	if o.AttemptTimeout.D() < 100*time.Millisecond || o.AttemptTimeout > o.CallTimeout {
		p.Addf(validate.Join(path, "attempt_timeout"), "must be between 100ms and call_timeout (%s), got %s", o.CallTimeout, o.AttemptTimeout)
	}
	if o.MaxAttempts < 1 || o.MaxAttempts > 10 {
		p.Addf(validate.Join(path, "max_attempts"), "must be between 1 and 10, got %d", o.MaxAttempts)
	}
	if o.MaxDuration.D() < scope.MinDuration || o.MaxDuration.D() > scope.MaxRoleDuration {
		p.Addf(validate.Join(path, "max_duration"), "must be between 15m and 12h, got %s", o.MaxDuration)
	}
	if o.BaseRoleARN != "" && o.MaxDuration.D() > scope.DefaultMaxDuration {
		p.Addf(validate.Join(path, "max_duration"), "must be at most 1h with base_role_arn (role chaining limits sessions to 1h), got %s", o.MaxDuration)
	}
	o.Cache.Validate(p, validate.Join(path, "cache"))
	o.Budget.Validate(p, validate.Join(path, "budget"))
}

func init() {
	vend.Register(Type, func(spec vend.Spec, d vend.Deps, p *validate.Problems, path string) vend.Vendor {
		var o Options
		if !spec.Decode(&o, p, path) {
			return nil
		}
		o.ApplyDefaults()
		before := len(p.List())
		o.Validate(p, path)
		if len(p.List()) > before {
			return nil
		}
		v, err := New(context.Background(), o, Deps{Name: d.Name, Logger: d.Logger, Now: d.Now, Metrics: d.Metrics})
		if err != nil {
			p.Addf(path, "%v", err)
			return nil
		}
		return v
	})
}

// Deps are the backend's collaborators.
type Deps struct {
	Name    string // the backends map key (metrics label)
	Logger  *zap.Logger
	Now     func() time.Time
	Metrics *metrics.Metrics
	// HTTPClient overrides the SDK's HTTP client (tests).
	HTTPClient aws.HTTPClient
	// Backoff overrides the standard retryer's backoff (tests use a short one).
	Backoff retry.BackoffDelayer
}

// Vendor assumes tenant roles through STS.
type Vendor struct {
	opt    Options
	deps   Deps
	client *sts.Client
	creds  aws.CredentialsProvider
	// call is the STS call behind the per-tenant budget.
	call vend.Vendor
}

var (
	_ vend.Vendor            = (*Vendor)(nil)
	_ vend.Readiness         = (*Vendor)(nil)
	_ vend.CacheConfigurable = (*Vendor)(nil)
)

// New builds the backend: it loads the AWS configuration (no network call)
// and the STS client. opt must have had ApplyDefaults.
func New(ctx context.Context, opt Options, d Deps) (*Vendor, error) {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Name == "" {
		d.Name = Type
	}
	var lo []func(*config.LoadOptions) error
	if opt.Region != "" {
		lo = append(lo, config.WithRegion(opt.Region))
	}
	if opt.Profile != "" {
		lo = append(lo, config.WithSharedConfigProfile(opt.Profile))
	}
	if opt.UseFIPS {
		lo = append(lo, config.WithUseFIPSEndpoint(aws.FIPSEndpointStateEnabled))
	}
	if d.HTTPClient != nil {
		lo = append(lo, config.WithHTTPClient(d.HTTPClient))
	} else {
		lo = append(lo, config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(opt.AttemptTimeout.D())))
	}
	lo = append(lo, config.WithRetryer(func() aws.Retryer {
		std := retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = opt.MaxAttempts
			if d.Backoff != nil {
				so.Backoff = d.Backoff
			}
		})
		return &countingRetryer{RetryerV2: std, m: d.Metrics}
	}))
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("region: no region configured (set region, or AWS_REGION in the environment)")
	}
	stsOpts := func(so *sts.Options) {
		if opt.Endpoint != "" {
			so.BaseEndpoint = aws.String(opt.Endpoint)
		}
	}
	if opt.BaseRoleARN != "" {
		base := sts.NewFromConfig(cfg, stsOpts)
		prov := stscreds.NewAssumeRoleProvider(base, opt.BaseRoleARN, func(ao *stscreds.AssumeRoleOptions) {
			ao.RoleSessionName = opt.BaseSessionName
			if opt.BaseExternalID != "" {
				ao.ExternalID = aws.String(opt.BaseExternalID)
			}
		})
		cfg.Credentials = aws.NewCredentialsCache(prov)
	}
	v := &Vendor{opt: opt, deps: d, client: sts.NewFromConfig(cfg, stsOpts), creds: cfg.Credentials}
	v.call = vend.Vendor(stsCall{v})
	if opt.Budget.On() {
		v.call = budget.New(v.call, opt.Budget, d.Now)
	}
	return v, nil
}

// ValidateTenant implements vend.TenantValidator: a tenant on this backend
// needs a role to assume, and sessions longer than the backend allows
// would be cut short silently.
func (v *Vendor) ValidateTenant(t scope.Tenant, p *validate.Problems, path string) {
	if t.RoleARN == "" {
		p.Addf(validate.Join(path, "role_arn"), "is required for the assume-role backend %q", v.deps.Name)
	}
	if t.MaxDuration.D() > v.opt.MaxDuration.D() {
		p.Addf(validate.Join(path, "max_duration"), "%s exceeds max_duration %s of backend %q (raise the backend's max_duration, up to 12h, only when its base credentials are not role credentials: role chaining allows 1h)",
			t.MaxDuration, v.opt.MaxDuration, v.deps.Name)
	}
}

// CacheOptions implements vend.CacheConfigurable.
func (v *Vendor) CacheOptions() vend.CacheOptions { return v.opt.Cache }

// Ready reports whether base credentials can be retrieved (for a base
// role, that includes assuming it).
func (v *Vendor) Ready(ctx context.Context) error {
	if v.creds == nil {
		return errors.New("no AWS base credentials found in the standard chain")
	}
	ctx, cancel := context.WithTimeout(ctx, v.opt.CallTimeout.D())
	defer cancel()
	if _, err := v.creds.Retrieve(ctx); err != nil {
		return fmt.Errorf("retrieve AWS base credentials: %w", err)
	}
	return nil
}

// Vend assumes g.RoleARN with g's session policy. It refuses a grant without
// a policy (a session without one would get the role's full permissions).
func (v *Vendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	if strings.TrimSpace(g.Policy) == "" {
		return vend.Credentials{}, fault.New(fault.InternalError, "empty_session_policy", "refusing to assume a role without a session policy")
	}
	if g.RoleARN == "" {
		return vend.Credentials{}, fault.New(fault.InternalError, "no_role_arn", "the tenant of org %s names no role_arn for the assume-role backend", g.Org)
	}
	return v.call.Vend(ctx, g)
}

// Input builds the AssumeRole input for g (exported for tests and dry runs).
func (v *Vendor) Input(g scope.Grant) *sts.AssumeRoleInput {
	d := min(max(g.Duration, scope.MinDuration), v.opt.MaxDuration.D())
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(g.RoleARN),
		RoleSessionName: aws.String(g.SessionName),
		Policy:          aws.String(g.Policy),
		DurationSeconds: aws.Int32(int32(d / time.Second)),
	}
	if g.ExternalID != "" {
		in.ExternalId = aws.String(g.ExternalID)
	}
	if g.SourceIdentity != "" {
		in.SourceIdentity = aws.String(g.SourceIdentity)
	}
	for _, t := range g.Tags {
		in.Tags = append(in.Tags, ststypes.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
	}
	in.TransitiveTagKeys = append(in.TransitiveTagKeys, g.TransitiveTagKeys...)
	return in
}

// stsCall is the bare AssumeRole call, wrapped by the budget.
type stsCall struct{ v *Vendor }

func (s stsCall) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	v := s.v
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, v.opt.CallTimeout.D())
	defer cancel()
	out, err := v.client.AssumeRole(cctx, v.Input(g))
	elapsed := time.Since(start)
	if err != nil {
		fe := mapError(err, g, cctx, ctx)
		v.deps.Metrics.Backend(v.deps.Name, Type, fe.Reason, elapsed)
		v.deps.Logger.Warn("sts:AssumeRole failed", zap.String("backend", v.deps.Name), zap.String("org", g.Org),
			zap.String("role_arn", g.RoleARN), zap.String("reason", fe.Reason), zap.Duration("elapsed", elapsed), zap.Error(err))
		return vend.Credentials{}, fe
	}
	v.deps.Metrics.Backend(v.deps.Name, Type, "", elapsed)
	c := out.Credentials
	if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
		return vend.Credentials{}, fault.New(fault.BackendUnavailable, "sts_bad_response", "STS returned an incomplete credential set").WithRetryAfter(time.Second)
	}
	creds := vend.Credentials{
		AccessKeyID:      *c.AccessKeyId,
		SecretAccessKey:  secret.Secret(*c.SecretAccessKey),
		SessionToken:     secret.Secret(*c.SessionToken),
		Expiration:       c.Expiration.UTC(),
		PackedPolicySize: -1,
		Source:           "sts",
	}
	if out.AssumedRoleUser != nil && out.AssumedRoleUser.Arn != nil {
		if p := strings.SplitN(*out.AssumedRoleUser.Arn, ":", 6); len(p) == 6 {
			creds.AccountID = p[4]
		}
	}
	creds.PackedPolicySize = sizeUtilization(out)
	lvl := v.deps.Logger.Debug
	if creds.PackedPolicySize >= 80 {
		lvl = v.deps.Logger.Warn // close to PackedPolicyTooLarge
	}
	lvl("sts:AssumeRole", zap.String("backend", v.deps.Name), zap.String("org", g.Org), zap.String("role_arn", g.RoleARN),
		zap.String("session_name", g.SessionName), zap.Int("packed_policy_size", creds.PackedPolicySize), zap.Duration("elapsed", elapsed))
	return creds, nil
}

// sizeUtilization is the session's share of STS's size limit, in percent:
// SessionTokenUtilization, which the SDK names the replacement of the
// deprecated PackedPolicySize, else PackedPolicySize from an endpoint that
// sends only that (older STS-compatible servers); -1 when neither is sent.
func sizeUtilization(out *sts.AssumeRoleOutput) int {
	if u := out.SessionTokenUtilization; u != nil {
		return int(*u)
	}
	//lint:ignore SA1019 read only when SessionTokenUtilization is absent, so endpoints that send just the old element keep the metric
	if p := out.PackedPolicySize; p != nil {
		return int(*p)
	}
	return -1
}

// mapError turns an STS failure into the dispenser's error. Messages name
// the STS error code and the role, never credentials; the SDK error is kept
// as the (logged) cause.
func mapError(err error, g scope.Grant, callCtx, parent context.Context) *fault.Error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDenied":
			return fault.Wrap(err, fault.AccessDenied, "sts_access_denied",
				"STS denied assuming %s: check the role's trust policy (dispenser principal, sts:ExternalId, sts:TagSession, sts:SetSourceIdentity)", g.RoleARN)
		case "MalformedPolicyDocument":
			return fault.Wrap(err, fault.InvalidRequest, "sts_malformed_policy", "STS rejected the session policy as malformed")
		case "PackedPolicyTooLarge":
			return fault.Wrap(err, fault.InvalidRequest, "sts_packed_policy_too_large",
				"the session policy and tags exceed STS's packed size limit; request fewer files or a shorter prefix")
		case "RegionDisabledException":
			return fault.Wrap(err, fault.BackendUnavailable, "sts_region_disabled",
				"STS is not activated in the configured region for the account of %s", g.RoleARN)
		case "ValidationError", "InvalidParameterValue":
			return parameterError(err, ae, g)
		case "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch":
			return fault.Wrap(err, fault.BackendUnavailable, "sts_base_credentials",
				"the dispenser's own AWS credentials were rejected by STS (%s)", ae.ErrorCode()).WithRetryAfter(5 * time.Second)
		}
		if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
			return fault.Wrap(err, fault.BackendUnavailable, "sts_throttled", "STS is throttling; retry shortly").WithRetryAfter(5 * time.Second)
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return fault.Wrap(err, fault.BackendUnavailable, "sts_unavailable", "STS answered %d; retry shortly", re.HTTPStatusCode()).WithRetryAfter(2 * time.Second)
	}
	if errors.Is(err, context.DeadlineExceeded) || callCtx.Err() != nil {
		if parent.Err() != nil && !errors.Is(parent.Err(), context.DeadlineExceeded) {
			return fault.Wrap(err, fault.BackendUnavailable, "canceled", "the request was canceled").WithRetryAfter(time.Second)
		}
		return fault.Wrap(err, fault.BackendUnavailable, "sts_timeout", "STS did not answer in time; retry shortly").WithRetryAfter(2 * time.Second)
	}
	var ne net.Error
	if errors.As(err, &ne) || isRetryExhausted(err) {
		return fault.Wrap(err, fault.BackendUnavailable, "sts_unreachable", "STS could not be reached; retry shortly").WithRetryAfter(2 * time.Second)
	}
	if ae != nil {
		return fault.Wrap(err, fault.BackendUnavailable, "sts_error", "STS failed with %s", ae.ErrorCode()).WithRetryAfter(2 * time.Second)
	}
	return fault.Wrap(err, fault.BackendUnavailable, "sts_error", "the STS call failed; retry shortly").WithRetryAfter(2 * time.Second)
}

// refusedParameter finds the AssumeRole parameter an STS validation
// message is about: a constraint failure names it ("Value '...' at
// 'roleSessionName' failed to satisfy constraint"), other refusals in
// their sentence ("The requested DurationSeconds exceeds ...").
var refusedParameter = regexp.MustCompile(`at '([A-Za-z]+)`)

// parameterError maps STS's refusal of one parameter to that parameter's
// problem, so the message points at what to fix. Definite refusals: no
// Retry-After (retrying cannot help). The session policy comes from the
// request (prefix and file names), so its refusal is the caller's 400; the
// rest comes from the configuration, so 502.
func parameterError(err error, ae smithy.APIError, g scope.Grant) *fault.Error {
	code, msg := ae.ErrorCode(), ae.ErrorMessage()
	param := ""
	if m := refusedParameter.FindStringSubmatch(msg); m != nil {
		param = strings.ToLower(m[1])
	} else {
		lower := strings.ToLower(msg)
		for _, kw := range []struct{ word, param string }{
			{"durationseconds", "durationseconds"}, {"maxsessionduration", "durationseconds"},
			{"rolesessionname", "rolesessionname"}, {"sourceidentity", "sourceidentity"},
			{"externalid", "externalid"}, {"tag", "tags"}, {"policy", "policy"}, {"rolearn", "rolearn"},
		} {
			if strings.Contains(lower, kw.word) {
				param = kw.param
				break
			}
		}
	}
	switch param {
	case "policy":
		return fault.Wrap(err, fault.InvalidRequest, "sts_invalid_policy",
			"STS rejected the session policy (%s): a prefix or file name may hold characters STS does not accept in a policy (only U+0020 to U+00FF), or the policy is too long; `dispenser policy` prints it", code)
	case "durationseconds":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_duration",
			"STS refused DurationSeconds for %s (%s): the role's MaxSessionDuration is below the tenant's max_duration, or role chaining limits sessions to 1h", g.RoleARN, code)
	case "rolesessionname":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_session_name",
			"STS rejected the role session name derived from the job and task ids (%s)", code)
	case "tags", "transitivetagkeys":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_session_tags",
			"STS rejected the session tags for %s (%s): check the tenant's session_tags and transitive_tag_keys (every transitive key must be a session tag) and the values they carry", g.RoleARN, code)
	case "sourceidentity":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_source_identity",
			"STS rejected the source identity for %s (%s): check the tenant's source_identity template", g.RoleARN, code)
	case "externalid":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_external_id",
			"STS rejected the external id for %s (%s): check the tenant's external_id", g.RoleARN, code)
	case "rolearn":
		return fault.Wrap(err, fault.BackendUnavailable, "sts_invalid_role_arn",
			"STS rejected the role ARN %s (%s): check the tenant's role_arn", g.RoleARN, code)
	}
	return fault.Wrap(err, fault.BackendUnavailable, "sts_validation_error",
		"STS rejected the request for %s as invalid (%s); the dispenser's log has STS's message", g.RoleARN, code)
}

func isRetryExhausted(err error) bool {
	var me *retry.MaxAttemptsError
	return errors.As(err, &me)
}

// countingRetryer counts throttling answers (every attempt, including those
// the SDK retries) for the dispenser_sts_throttles_total metric.
type countingRetryer struct {
	aws.RetryerV2
	m *metrics.Metrics
}

func (r *countingRetryer) IsErrorRetryable(err error) bool {
	if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
		r.m.STSThrottled()
	}
	return r.RetryerV2.IsErrorRetryable(err)
}
