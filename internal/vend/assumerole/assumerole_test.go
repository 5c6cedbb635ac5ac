package assumerole_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/ststest"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/assumerole"
)

const (
	baseKeyID  = "AKIDBASEEXAMPLE00001"
	baseSecret = "base/secret/EXAMPLEKEY+do-not-leak"
)

// awsEnv gives the SDK static base credentials and isolates it from the
// machine's AWS configuration.
func awsEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", baseKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", baseSecret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "eu-central-1")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CA_BUNDLE", "") // the test HTTP client takes no custom CA
}

var fastBackoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return time.Millisecond, nil })

func newVendor(t *testing.T, fake *ststest.Server, mod func(*assumerole.Options), m *metrics.Metrics) *assumerole.Vendor {
	t.Helper()
	awsEnv(t)
	o := assumerole.Options{Endpoint: fake.URL}
	if mod != nil {
		mod(&o)
	}
	o.ApplyDefaults()
	var p validate.Problems
	o.Validate(&p, "backends.sts")
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	v, err := assumerole.New(context.Background(), o, assumerole.Deps{Name: "sts", Metrics: m, Backoff: fastBackoff})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func grant() scope.Grant {
	return scope.Grant{
		Org: "acme", Principal: "worker-1", Backend: "sts",
		RoleARN:           "arn:aws:iam::222222222222:role/vtk-target",
		ExternalID:        "acme-vtk-api-name",
		Policy:            `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::media/acme/in/*"}]}`,
		Duration:          time.Hour,
		SessionName:       "job-1.task-7-0123456789ab",
		Tags:              []scope.Tag{{Key: "job-id", Value: "job-1"}, {Key: "org", Value: "acme"}, {Key: "task-id", Value: "task-7"}},
		TransitiveTagKeys: []string{"org"},
		SourceIdentity:    "worker-1",
		JobID:             "job-1", TaskID: "task-7",
	}
}

func TestAssumeRoleSendsEveryField(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, nil, nil)
	g := grant()
	g.Duration = 3 * time.Hour // above the backend's 1h default: clamped
	before := time.Now()
	c, err := v.Vend(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("want 1 STS request, got %d", len(reqs))
	}
	f := reqs[0].Form
	want := map[string]string{
		"Action": "AssumeRole", "Version": "2011-06-15",
		"RoleArn": g.RoleARN, "RoleSessionName": g.SessionName, "Policy": g.Policy,
		"DurationSeconds": "3600", "ExternalId": g.ExternalID, "SourceIdentity": "worker-1",
		"Tags.member.1.Key": "job-id", "Tags.member.1.Value": "job-1",
		"Tags.member.2.Key": "org", "Tags.member.2.Value": "acme",
		"Tags.member.3.Key": "task-id", "Tags.member.3.Value": "task-7",
		"TransitiveTagKeys.member.1": "org",
	}
	for k, w := range want {
		if got := f.Get(k); got != w {
			t.Errorf("form %s = %q, want %q", k, got, w)
		}
	}
	for k := range f {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected form field %s=%q", k, f.Get(k))
		}
	}
	in := fake.AssumeRoleInputs()[0]
	if in.AccessKeyID != baseKeyID {
		t.Errorf("signed with %q, want the base key %q", in.AccessKeyID, baseKeyID)
	}
	if !strings.Contains(reqs[0].Header.Get("Authorization"), "/eu-central-1/sts/aws4_request") {
		t.Errorf("not signed for regional STS: %s", reqs[0].Header.Get("Authorization"))
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SecretAccessKey.Empty() || c.SessionToken.Empty() {
		t.Errorf("incomplete credentials: %+v", c)
	}
	if c.AccountID != "222222222222" || c.Source != "sts" {
		t.Errorf("account %q source %q", c.AccountID, c.Source)
	}
	if c.PackedPolicySize < 0 {
		t.Errorf("PackedPolicySize not read: %d", c.PackedPolicySize)
	}
	if left := c.Expiration.Sub(before); left < 59*time.Minute || left > 61*time.Minute {
		t.Errorf("expiration %s is not ~1h ahead", c.Expiration)
	}
}

func TestAssumeRoleOmitsOptionalFields(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, nil, nil)
	g := grant()
	g.ExternalID, g.SourceIdentity, g.Tags, g.TransitiveTagKeys = "", "", nil, nil
	g.Duration = 10 * time.Minute // below STS's minimum: raised to 900
	if _, err := v.Vend(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	f := fake.Requests()[0].Form
	for _, k := range []string{"ExternalId", "SourceIdentity", "Tags.member.1.Key", "TransitiveTagKeys.member.1"} {
		if _, ok := f[k]; ok {
			t.Errorf("%s sent although empty", k)
		}
	}
	if f.Get("DurationSeconds") != "900" {
		t.Errorf("DurationSeconds = %s", f.Get("DurationSeconds"))
	}
}

func TestEmptyPolicyIsRefusedWithoutCallingSTS(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, nil, nil)
	g := grant()
	g.Policy = " "
	_, err := v.Vend(context.Background(), g)
	if fe := fault.From(err); fe.Reason != "empty_session_policy" {
		t.Fatalf("want empty_session_policy, got %v", err)
	}
	if n := fake.Count("AssumeRole"); n != 0 {
		t.Fatalf("STS was called %d times", n)
	}
}

func TestThrottlingIsRetriedThenSucceeds(t *testing.T) {
	fake := ststest.New(t)
	fake.AssumeRole = ststest.Sequence(ststest.Fail(ststest.Throttling), ststest.Fail(ststest.Throttling), ststest.Answer{})
	m := metrics.New("test")
	v := newVendor(t, fake, nil, m)
	if _, err := v.Vend(context.Background(), grant()); err != nil {
		t.Fatal(err)
	}
	if n := fake.Count("AssumeRole"); n != 3 {
		t.Fatalf("want 3 attempts, got %d", n)
	}
	var d dto.Metric
	_ = m.STSThrottles.Write(&d)
	if n := d.GetCounter().GetValue(); n != 2 {
		t.Fatalf("sts throttles metric = %v, want 2", n)
	}
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fault     ststest.Fault
		code      fault.Code
		reason    string
		attempts  int
		retryable bool
	}{
		{"access denied", ststest.AccessDenied, fault.AccessDenied, "sts_access_denied", 1, false},
		{"malformed policy", ststest.MalformedPolicyDocument, fault.InvalidRequest, "sts_malformed_policy", 1, false},
		{"packed policy too large", ststest.PackedPolicyTooLarge, fault.InvalidRequest, "sts_packed_policy_too_large", 1, false},
		{"region disabled", ststest.RegionDisabled, fault.BackendUnavailable, "sts_region_disabled", 1, false},
		{"transitive tag key", ststest.InvalidTransitiveTagKey, fault.BackendUnavailable, "sts_invalid_session_tags", 1, false},
		{"policy characters", ststest.PolicyOutsideCharset, fault.InvalidRequest, "sts_invalid_policy", 1, false},
		{"policy, InvalidParameterValue", ststest.Fault{Status: 400, Type: "Sender", Code: "InvalidParameterValue", Message: ststest.PolicyOutsideCharset.Message},
			fault.InvalidRequest, "sts_invalid_policy", 1, false},
		{"duration above the role's maximum", ststest.DurationAboveRoleMaximum, fault.BackendUnavailable, "sts_invalid_duration", 1, false},
		{"session name", ststest.SessionNameTooLong, fault.BackendUnavailable, "sts_invalid_session_name", 1, false},
		{"unknown parameter", ststest.Fault{Status: 400, Type: "Sender", Code: "InvalidParameterValue", Message: "Something else is wrong."},
			fault.BackendUnavailable, "sts_validation_error", 1, false},
		{"throttled throughout", ststest.Throttling, fault.BackendUnavailable, "sts_throttled", 3, true},
		{"internal failure", ststest.InternalFailure, fault.BackendUnavailable, "sts_unavailable", 3, true},
		{"service unavailable", ststest.ServiceUnavailable, fault.BackendUnavailable, "sts_unavailable", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := ststest.New(t)
			fake.AssumeRole = ststest.Sequence(ststest.Fail(tc.fault))
			v := newVendor(t, fake, nil, nil)
			_, err := v.Vend(context.Background(), grant())
			var fe *fault.Error
			if !errors.As(err, &fe) {
				t.Fatalf("want *fault.Error, got %T %v", err, err)
			}
			if fe.Code != tc.code || fe.Reason != tc.reason {
				t.Errorf("got %s/%s, want %s/%s (%v)", fe.Code, fe.Reason, tc.code, tc.reason, err)
			}
			if (fe.RetryAfter > 0) != tc.retryable {
				t.Errorf("RetryAfter = %s, retryable want %v", fe.RetryAfter, tc.retryable)
			}
			if n := fake.Count("AssumeRole"); n != tc.attempts {
				t.Errorf("attempts = %d, want %d", n, tc.attempts)
			}
			if strings.Contains(fe.Message, baseSecret) || strings.Contains(fe.Message, baseKeyID) {
				t.Errorf("message leaks base credentials: %s", fe.Message)
			}
		})
	}
}

func TestSlowSTSHitsThePerCallTimeout(t *testing.T) {
	fake := ststest.New(t)
	fake.AssumeRole = ststest.Sequence(ststest.Answer{Delay: 5 * time.Second})
	v := newVendor(t, fake, func(o *assumerole.Options) {
		o.CallTimeout = duration.Duration(200 * time.Millisecond)
	}, nil)
	_, err := v.Vend(context.Background(), grant())
	fe := fault.From(err)
	if fe.Code != fault.BackendUnavailable || fe.RetryAfter == 0 || fe.Reason != "sts_timeout" {
		t.Fatalf("want 503 sts_timeout, got %v (retry after %s)", err, fe.RetryAfter)
	}
}

func TestSlowAttemptIsRetried(t *testing.T) {
	fake := ststest.New(t)
	fake.AssumeRole = ststest.Sequence(ststest.Answer{Delay: 3 * time.Second}, ststest.Answer{})
	v := newVendor(t, fake, func(o *assumerole.Options) {
		o.AttemptTimeout = duration.Duration(200 * time.Millisecond)
	}, nil)
	if _, err := v.Vend(context.Background(), grant()); err != nil {
		t.Fatalf("a timed-out attempt was not retried: %v", err)
	}
	if n := fake.Count("AssumeRole"); n != 2 {
		t.Fatalf("attempts = %d, want 2", n)
	}
}

func TestBaseRoleChain(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, func(o *assumerole.Options) {
		o.BaseRoleARN = "arn:aws:iam::111111111111:role/dispenser-base"
		o.BaseExternalID = "base-external"
	}, nil)
	if err := v.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Vend(context.Background(), grant()); err != nil {
		t.Fatal(err)
	}
	in := fake.AssumeRoleInputs()
	if len(in) != 2 {
		t.Fatalf("want base + target AssumeRole, got %d calls", len(in))
	}
	if in[0].RoleArn != "arn:aws:iam::111111111111:role/dispenser-base" || in[0].ExternalId != "base-external" ||
		in[0].RoleSessionName != "dispenser" || in[0].AccessKeyID != baseKeyID {
		t.Errorf("base call: %+v", in[0])
	}
	if in[1].RoleArn != grant().RoleARN || in[1].AccessKeyID == baseKeyID || !strings.HasPrefix(in[1].AccessKeyID, "ASIA") {
		t.Errorf("target call not signed with the base role's session: %+v", in[1])
	}
}

func TestReadyWithEnvironmentCredentials(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, nil, nil)
	if err := v.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestBudgetRefusesABurstingTenantOnly(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, func(o *assumerole.Options) {
		o.Budget.Rate, o.Budget.Burst = 0.001, 2
		zero := duration.Duration(0)
		o.Budget.MaxWait = &zero
	}, nil)
	g := grant()
	for i := range 2 {
		if _, err := v.Vend(context.Background(), g); err != nil {
			t.Fatalf("call %d within burst: %v", i, err)
		}
	}
	_, err := v.Vend(context.Background(), g)
	if fe := fault.From(err); fe.Reason != "sts_budget_exhausted" || fe.RetryAfter == 0 {
		t.Fatalf("want sts_budget_exhausted, got %v", err)
	}
	other := grant()
	other.Org = "globex"
	if _, err := v.Vend(context.Background(), other); err != nil {
		t.Fatalf("another tenant was affected: %v", err)
	}
	if n := fake.Count("AssumeRole"); n != 3 {
		t.Fatalf("STS calls = %d, want 3", n)
	}
}

func TestOptionValidation(t *testing.T) {
	awsEnv(t)
	for _, tc := range []struct {
		name, yaml, path string
	}{
		{"bad region", "region: Frankfurt", "backends.sts.region"},
		{"http endpoint off loopback", "endpoint: http://sts.example.com", "backends.sts.endpoint"},
		{"endpoint with userinfo", "endpoint: https://user:pw@sts.example.com", "backends.sts.endpoint"},
		{"bad base role", "base_role_arn: arn:aws:iam::12:role/x", "backends.sts.base_role_arn"},
		{"external id without base role", "base_external_id: abc", "backends.sts.base_role_arn"},
		{"bad base external id", "{base_role_arn: 'arn:aws:iam::111111111111:role/b', base_external_id: 'a b'}", "backends.sts.base_external_id"},
		{"chained above 1h", "{base_role_arn: 'arn:aws:iam::111111111111:role/b', max_duration: 2h}", "backends.sts.max_duration"},
		{"max duration above 12h", "max_duration: 13h", "backends.sts.max_duration"},
		{"call timeout", "call_timeout: 10ms", "backends.sts.call_timeout"},
		{"attempts", "max_attempts: 50", "backends.sts.max_attempts"},
		{"attempt above call timeout", "{call_timeout: 1s, attempt_timeout: 2s}", "backends.sts.attempt_timeout"},
		{"cache floor", "cache: {min_remaining: 1m}", "backends.sts.cache.min_remaining"},
		{"cache size", "cache: {max_entries: -1}", "backends.sts.cache.max_entries"},
		{"budget concurrency", "budget: {concurrency: -2}", "backends.sts.budget.concurrency"},
		{"unknown key", "regoin: eu-west-1", "backends.sts.regoin"},
		{"wrong type", "max_attempts: many", "backends.sts.max_attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var spec vend.Spec
			if err := yaml.Unmarshal([]byte("type: assume-role\n"+flow(tc.yaml)), &spec); err != nil {
				t.Fatal(err)
			}
			var p validate.Problems
			out := vend.Build(map[string]vend.Spec{"sts": spec}, vend.Deps{}, &p)
			if out["sts"] != nil {
				t.Errorf("backend built despite invalid options")
			}
			found := false
			for _, pr := range p.List() {
				if pr.Path == tc.path {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem at %s: %v", tc.path, p.List())
			}
		})
	}
	var spec vend.Spec
	if err := yaml.Unmarshal([]byte("type: assume-role\nregion: eu-west-1\nendpoint: https://sts.eu-west-1.amazonaws.com\ncache: {max_entries: 100}\nbudget: {rate: 2, burst: 4}\n"), &spec); err != nil {
		t.Fatal(err)
	}
	var p validate.Problems
	if out := vend.Build(map[string]vend.Spec{"sts": spec}, vend.Deps{}, &p); out["sts"] == nil || p.Err() != nil {
		t.Fatalf("valid options rejected: %v", p.Err())
	}
}

// flow turns "k: v" or "{...}" into a YAML mapping body.
func flow(s string) string {
	if strings.HasPrefix(s, "{") {
		return strings.NewReplacer("{", "", "}", "", ", ", "\n").Replace(s) + "\n"
	}
	return s + "\n"
}

// hostRecorder is an aws.HTTPClient that records the host each request
// goes to and answers like STS, without any network.
type hostRecorder struct {
	mu    sync.Mutex
	hosts []string
}

func (h *hostRecorder) Do(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hosts = append(h.hosts, r.URL.Host)
	h.mu.Unlock()
	rec := httptest.NewRecorder()
	ststest.WriteAssumeRole(rec, ststest.Credentials{
		AccessKeyID: "ASIAHOSTTEST", SecretAccessKey: "s", SessionToken: "t",
		Expiration: time.Now().Add(time.Hour), AssumedRoleArn: "arn:aws:sts::222222222222:assumed-role/r/s", PackedPolicySize: 3,
	})
	return rec.Result(), nil
}

func TestEndpointSelection(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  assumerole.Options
		host string
	}{
		{"regional by default", assumerole.Options{Region: "eu-west-1"}, "sts.eu-west-1.amazonaws.com"},
		{"fips", assumerole.Options{Region: "us-east-1", UseFIPS: true}, "sts-fips.us-east-1.amazonaws.com"},
		{"custom endpoint", assumerole.Options{Region: "eu-west-1", Endpoint: "https://vpce-1.sts.eu-west-1.vpce.amazonaws.com"}, "vpce-1.sts.eu-west-1.vpce.amazonaws.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			awsEnv(t)
			rec := &hostRecorder{}
			o := tc.opt
			o.ApplyDefaults()
			v, err := assumerole.New(context.Background(), o, assumerole.Deps{HTTPClient: rec})
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Vend(context.Background(), grant())
			if err != nil {
				t.Fatal(err)
			}
			if c.AccessKeyID != "ASIAHOSTTEST" || c.PackedPolicySize != 3 {
				t.Errorf("credentials %+v", c)
			}
			if len(rec.hosts) != 1 || rec.hosts[0] != tc.host {
				t.Errorf("hosts %v, want %s", rec.hosts, tc.host)
			}
		})
	}
}

// A transitive tag key whose tag is not sent is refused by STS; the
// refusal is definite (502, no Retry-After), not a transient 503 that SDKs
// would retry for ever.
func TestTransitiveKeyWithoutTagIsADefiniteRefusal(t *testing.T) {
	fake := ststest.New(t)
	v := newVendor(t, fake, nil, nil)
	g := grant()
	g.TransitiveTagKeys = []string{"org", "session"}
	_, err := v.Vend(context.Background(), g)
	fe := fault.From(err)
	if fe == nil || fe.Reason != "sts_invalid_session_tags" || fe.RetryAfter != 0 {
		t.Fatalf("got %v (%+v)", err, fe)
	}
	if n := fake.Count("AssumeRole"); n != 1 {
		t.Errorf("attempts = %d, want 1", n)
	}
}

// TestParameterRefusalsNameTheParameter: STS's refusal of one parameter is
// reported as that parameter's problem; only a refused DurationSeconds
// mentions the duration (a policy refusal used to suggest it).
func TestParameterRefusalsNameTheParameter(t *testing.T) {
	for _, tc := range []struct {
		fault       ststest.Fault
		want, never string
	}{
		{ststest.PolicyOutsideCharset, "session policy", "DurationSeconds"},
		{ststest.Fault{Status: 400, Type: "Sender", Code: "InvalidParameterValue", Message: ststest.PolicyOutsideCharset.Message}, "session policy", "DurationSeconds"},
		{ststest.DurationAboveRoleMaximum, "MaxSessionDuration", "policy"},
		{ststest.SessionNameTooLong, "session name", "DurationSeconds"},
		{ststest.InvalidTransitiveTagKey, "transitive_tag_keys", "DurationSeconds"},
	} {
		fake := ststest.New(t)
		fake.AssumeRole = ststest.Sequence(ststest.Fail(tc.fault))
		v := newVendor(t, fake, nil, nil)
		_, err := v.Vend(context.Background(), grant())
		fe := fault.From(err)
		if !strings.Contains(fe.Message, tc.want) || strings.Contains(fe.Message, tc.never) {
			t.Errorf("%s %q: message %q, want %q and never %q", tc.fault.Code, tc.fault.Message, fe.Message, tc.want, tc.never)
		}
	}
}

// TestSessionSizeUtilization: the session's share of STS's size limit is
// read from SessionTokenUtilization (the SDK's replacement of the
// deprecated PackedPolicySize), and from PackedPolicySize only when an
// endpoint sends nothing else; -1 when neither is sent.
func TestSessionSizeUtilization(t *testing.T) {
	pct := func(n int) *int { return &n }
	for _, tc := range []struct {
		name        string
		packed      int
		utilization *int
		want        int
	}{
		{"both", 30, pct(55), 55},
		{"utilization only", -1, pct(42), 42},
		{"packed only", 17, nil, 17},
		{"neither", -1, nil, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := ststest.New(t)
			fake.AssumeRole = func(in ststest.AssumeRoleInput) ststest.Answer {
				return ststest.Answer{Creds: &ststest.Credentials{AccessKeyID: "ASIAUTILTEST", SecretAccessKey: "s", SessionToken: "t",
					Expiration: time.Now().Add(time.Hour), AssumedRoleArn: "arn:aws:sts::222222222222:assumed-role/r/s",
					PackedPolicySize: tc.packed, SessionTokenUtilization: tc.utilization}}
			}
			c, err := newVendor(t, fake, nil, nil).Vend(context.Background(), grant())
			if err != nil {
				t.Fatal(err)
			}
			if c.PackedPolicySize != tc.want {
				t.Errorf("got %d, want %d", c.PackedPolicySize, tc.want)
			}
		})
	}
}
