package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

const okQuery = "/credentials?operation=get&location=s3://media/acme/in/&job_id=J1&task_id=T1"

// checkError asserts the contract's error shape and headers.
func checkError(t *testing.T, w *httptest.ResponseRecorder, status int, code fault.Code) ErrorBody {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want exactly application/json", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	var body ErrorBody
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("body %q is not {code,message}: %v", w.Body, err)
	}
	if body.Code != string(code) || body.Message == "" {
		t.Errorf("body %+v, want code %s and a message", body, code)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("401 without a Bearer WWW-Authenticate challenge: %q", w.Header().Get("WWW-Authenticate"))
	}
	if status != http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("WWW-Authenticate on %d", status)
	}
	if (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		t.Errorf("%d without Retry-After", status)
	}
	for k := range w.Header() {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("CORS header %s present", k)
		}
	}
	return body
}

func TestCredentialsErrors(t *testing.T) {
	type tc struct {
		name   string
		method string
		target string
		body   string
		hdr    map[string]string
		// authz: "" = a valid acme token; "-" = none; else the header value.
		authz  string
		edit   func(*Options)
		setup  func(*harness)
		status int
		code   fault.Code
		reason string // audit reason; "" = no audit record expected
		// msg, when set, must appear in the message.
		msg        string
		retryAfter string
	}
	backendErr := func(err error) func(*harness) {
		return func(h *harness) {
			h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) { return vend.Credentials{}, err }
		}
	}
	json1 := map[string]string{"Content-Type": "application/json"}
	cases := []tc{
		{name: "no token", authz: "-", target: okQuery, status: 401, code: fault.Unauthorized, reason: "missing_credentials"},
		{name: "malformed token", authz: "Bearer nope", target: okQuery, status: 401, code: fault.Unauthorized, reason: "jwt_malformed"},
		{name: "SigV4 header with no SigV4 method configured", authz: "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, SignedHeaders=host, Signature=00", target: okQuery, status: 401, code: fault.Unauthorized, reason: "missing_credentials"},
		{name: "unknown org", authz: "org:globex", target: okQuery, status: 403, code: fault.AccessDenied, reason: "unknown_org", msg: "globex"},
		{name: "operation denied outside the grant", target: "/credentials?operation=put&location=s3://media/other/&job_id=J1&task_id=T1", status: 403, code: fault.AccessDenied, reason: "no_matching_grant", msg: "operation put is not allowed on s3://media/other/ for org acme"},
		{name: "other bucket", target: "/credentials?operation=get&location=s3://private/acme/", status: 403, code: fault.AccessDenied, reason: "no_matching_grant"},
		{name: "bad location", target: "/credentials?operation=get&location=s3://media/acme/../x/", status: 400, code: fault.InvalidRequest, reason: "bad_location"},
		{name: "not s3", target: "/credentials?operation=get&location=https://media/acme/", status: 400, code: fault.InvalidRequest, reason: "bad_location"},
		{name: "missing operation", target: "/credentials?location=s3://media/acme/", status: 400, code: fault.InvalidRequest, reason: "bad_operation"},
		{name: "unknown operation", target: "/credentials?operation=delete&location=s3://media/acme/", status: 400, code: fault.InvalidRequest, reason: "bad_operation"},
		{name: "unknown query parameter", target: okQuery + "&role_arn=x", status: 400, code: fault.InvalidRequest, reason: "unknown_parameter", msg: "role_arn"},
		{name: "repeated parameter", target: okQuery + "&operation=put", status: 400, code: fault.InvalidRequest, reason: "repeated_parameter", msg: "operation"},
		// Go's query parser skips a piece it cannot read (here one with a
		// semicolon) without a word: dry_run=true; would be dropped and
		// real credentials vended, and a SigV4 signature covers the piece.
		{name: "unparseable query piece", target: okQuery + "&dry_run=true;", status: 400, code: fault.InvalidRequest, reason: "bad_query", msg: "query string"},
		{name: "unparseable unknown piece", target: okQuery + "&bogus;=1", status: 400, code: fault.InvalidRequest, reason: "bad_query", msg: "query string"},
		{name: "bad escape", target: okQuery + "&job_id=%zz", status: 400, code: fault.InvalidRequest, reason: "bad_query", msg: "query string"},
		{name: "bad duration", target: okQuery + "&duration_seconds=1h", status: 400, code: fault.InvalidRequest, reason: "bad_duration"},
		{name: "negative duration", target: okQuery + "&duration_seconds=-5", status: 400, code: fault.InvalidRequest, reason: "bad_duration"},
		{name: "duration under the floor", target: okQuery + "&duration_seconds=900", status: 400, code: fault.InvalidRequest, reason: "bad_duration", msg: "1260"},
		// Exactly the floor would be below it once served: never servable.
		{name: "duration at the floor", target: okQuery + "&duration_seconds=1200", status: 400, code: fault.InvalidRequest, reason: "bad_duration", msg: "1260"},
		{name: "bad format", target: okQuery + "&format=xml", status: 400, code: fault.InvalidRequest, reason: "bad_format"},
		{name: "bad dry_run", target: okQuery + "&dry_run=maybe", status: 400, code: fault.InvalidRequest, reason: "bad_dry_run"},
		{name: "bad job id", target: "/credentials?operation=get&location=s3://media/acme/&job_id=a%20b", status: 400, code: fault.InvalidRequest, reason: "bad_job_id"},
		{name: "file outside the location", target: okQuery + "&file=../etc/passwd", status: 400, code: fault.InvalidRequest, reason: "bad_file"},
		{name: "POST bad JSON", method: "POST", target: "/credentials", body: `{"operation":`, hdr: json1, status: 400, code: fault.InvalidRequest, reason: "bad_json"},
		{name: "POST unknown field", method: "POST", target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/","role_arn":"x"}`, hdr: json1, status: 400, code: fault.InvalidRequest, reason: "bad_json", msg: "role_arn"},
		{name: "POST wrong type", method: "POST", target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/","duration_seconds":"1h"}`, hdr: json1, status: 400, code: fault.InvalidRequest, reason: "bad_json", msg: "duration_seconds"},
		{name: "POST two objects", method: "POST", target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/"}{}`, hdr: json1, status: 400, code: fault.InvalidRequest, reason: "bad_json"},
		{name: "POST empty body", method: "POST", target: "/credentials", hdr: json1, status: 400, code: fault.InvalidRequest, reason: "bad_json"},
		{name: "POST wrong content type", method: "POST", target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/"}`, hdr: map[string]string{"Content-Type": "text/plain"}, status: 400, code: fault.InvalidRequest, reason: "bad_content_type"},
		{name: "POST with query parameters", method: "POST", target: "/credentials?operation=put", body: `{"operation":"get","location":"s3://media/acme/"}`, hdr: json1, status: 400, code: fault.InvalidRequest, reason: "unknown_parameter", msg: "JSON body"},
		{name: "POST body over the limit", method: "POST", target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/` + strings.Repeat("a", 2000) + `/"}`, hdr: json1, status: 413, code: fault.RequestTooLarge, reason: "body_too_large"},
		{name: "job binding mismatch", authz: "bound", target: "/credentials?operation=get&location=s3://media/acme/in/&job_id=J2&task_id=T1", status: 403, code: fault.AccessDenied, reason: "job_binding"},
		{name: "job binding: job missing", authz: "bound", target: "/credentials?operation=get&location=s3://media/acme/in/&task_id=T1", status: 403, code: fault.AccessDenied, reason: "job_binding"},
		{name: "task binding mismatch", authz: "bound", target: "/credentials?operation=get&location=s3://media/acme/in/&job_id=J1&task_id=T2", status: 403, code: fault.AccessDenied, reason: "task_binding"},
		{name: "task binding via POST", authz: "bound", method: "POST", hdr: json1, target: "/credentials", body: `{"operation":"get","location":"s3://media/acme/in/","job_id":"J1","task_id":"T9"}`, status: 403, code: fault.AccessDenied, reason: "task_binding"},
		{name: "not ready", target: okQuery, setup: func(h *harness) { h.srv.SetReady(false) }, status: 503, code: fault.BackendUnavailable, retryAfter: "1"},
		{name: "whoami not ready", target: "/v1/whoami", setup: func(h *harness) { h.srv.SetReady(false) }, status: 503, code: fault.BackendUnavailable, retryAfter: "1"},
		{name: "unknown path", target: "/nope", status: 404, code: fault.NotFound},
		{name: "credentials with a trailing slash", target: "/credentials/", status: 404, code: fault.NotFound},
		{name: "PUT", method: "PUT", target: okQuery, status: 405, code: fault.MethodNotAllowed},
		{name: "DELETE", method: "DELETE", target: okQuery, status: 405, code: fault.MethodNotAllowed},
		{name: "OPTIONS preflight gets no CORS", method: "OPTIONS", target: okQuery, hdr: map[string]string{"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"}, status: 405, code: fault.MethodNotAllowed},
		{name: "POST to whoami", method: "POST", target: "/v1/whoami", status: 405, code: fault.MethodNotAllowed},
		{name: "host not allowed", target: okQuery, hdr: map[string]string{"Host": "evil.test"}, edit: func(o *Options) { o.AllowedHosts = []string{"dispenser.internal"} }, status: 403, code: fault.AccessDenied},
		{name: "host not allowed on healthz", target: "/healthz", hdr: map[string]string{"Host": "127.0.0.1.nip.io:8080"}, edit: func(o *Options) { o.AllowedHosts = []string{"127.0.0.1"} }, status: 403, code: fault.AccessDenied},
		{name: "backend transient", target: okQuery, setup: backendErr(fault.New(fault.BackendUnavailable, "sts_throttled", "STS is throttling; retry").WithRetryAfter(3 * time.Second)), status: 503, code: fault.BackendUnavailable, reason: "sts_throttled", retryAfter: "3"},
		{name: "backend definite", target: okQuery, setup: backendErr(fault.New(fault.BackendUnavailable, "sts_denied", "the target role refused AssumeRole")), status: 502, code: fault.BackendUnavailable, reason: "sts_denied"},
		{name: "backend refuses the grant", target: okQuery, setup: backendErr(fault.New(fault.AccessDenied, "no_static_key", "no static credentials for org acme")), status: 403, code: fault.AccessDenied, reason: "no_static_key"},
		{name: "backend untyped error", target: okQuery, setup: backendErr(errors.New("dial tcp 10.0.0.1:443: secret-internal-detail")), status: 500, code: fault.InternalError, reason: "internal", msg: "internal error"},
		{name: "backend context error", target: okQuery, setup: backendErr(context.DeadlineExceeded), status: 500, code: fault.InternalError, reason: "internal"},
		{name: "credentials under the floor", target: okQuery, setup: func(h *harness) {
			h.vendor.fn = func(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
				c, _ := (&mock.Vendor{}).Vend(ctx, g)
				c.Expiration = time.Now().Add(10 * time.Minute)
				return c, nil
			}
		}, status: 503, code: fault.BackendUnavailable, reason: "below_floor", retryAfter: "5"},
		{name: "audit unavailable on issue", target: okQuery, setup: func(h *harness) { h.rec.err = errors.New("disk full") }, status: 503, code: fault.AuditUnavailable, reason: "", retryAfter: "2"},
		{name: "audit unavailable on denial", target: "/credentials?operation=put&location=s3://media/other/", setup: func(h *harness) { h.rec.err = errors.New("disk full") }, status: 503, code: fault.AuditUnavailable, retryAfter: "2"},
		{name: "audit unavailable on auth failure", authz: "Bearer nope", target: okQuery, setup: func(h *harness) { h.rec.err = errors.New("disk full") }, status: 503, code: fault.AuditUnavailable, retryAfter: "2"},
		{name: "panic", target: okQuery, setup: func(h *harness) {
			h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) { panic("boom") }
		}, status: 500, code: fault.InternalError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.edit)
			if c.setup != nil {
				c.setup(h)
			}
			var authz string
			switch {
			case c.authz == "":
				authz = "Bearer " + h.token("worker-1", "acme", nil)
			case c.authz == "-":
			case c.authz == "bound":
				authz = h.token("worker-1", "acme", map[string]any{"job_id": "J1", "task_id": "T1"})
			case strings.HasPrefix(c.authz, "org:"):
				authz = "Bearer " + h.token("worker-1", strings.TrimPrefix(c.authz, "org:"), nil)
			default:
				authz = c.authz
			}
			method := c.method
			if method == "" {
				method = "GET"
			}
			w := h.do(method, c.target, authz, c.body, c.hdr)
			body := checkError(t, w, c.status, c.code)
			if c.msg != "" && !strings.Contains(body.Message, c.msg) {
				t.Errorf("message %q does not mention %q", body.Message, c.msg)
			}
			if strings.Contains(body.Message, "secret-internal-detail") || strings.Contains(body.Message, "disk full") {
				t.Errorf("internal cause leaked: %q", body.Message)
			}
			if c.retryAfter != "" && w.Header().Get("Retry-After") != c.retryAfter {
				t.Errorf("Retry-After %q, want %s", w.Header().Get("Retry-After"), c.retryAfter)
			}
			for _, k := range []string{"AccessKeyId", "SecretAccessKey", "Token", "ASIA"} {
				if strings.Contains(w.Body.String(), k) {
					t.Errorf("error body carries %s: %s", k, w.Body)
				}
			}
			recs := h.rec.all()
			switch {
			case c.reason != "":
				if len(recs) != 1 {
					t.Fatalf("%d audit records, want 1: %+v", len(recs), recs)
				}
				want := audit.Denied
				if c.status >= 500 {
					want = audit.Failed
				}
				if recs[0].Outcome != want || recs[0].Reason != c.reason {
					t.Errorf("record %s/%s, want %s/%s", recs[0].Outcome, recs[0].Reason, want, c.reason)
				}
				if recs[0].RequestID == "" || recs[0].RequestID != w.Header().Get("X-Request-Id") {
					t.Errorf("record request id %q, header %q", recs[0].RequestID, w.Header().Get("X-Request-Id"))
				}
			case c.code == fault.AuditUnavailable:
				// The record was attempted (and failed): exactly one try.
				if len(recs) != 1 {
					t.Errorf("%d record attempts, want 1", len(recs))
				}
			default:
				if len(recs) != 0 {
					t.Errorf("unexpected audit records: %+v", recs)
				}
			}
		})
	}
}

var expirationRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$`)

func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func checkOK(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestCredentialsSuccess(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token("worker-1", "acme", nil)

	t.Run("container shape, raw token", func(t *testing.T) {
		w := h.do("GET", okQuery, tok, "", nil)
		checkOK(t, w)
		var c ContainerCredentials
		decodeStrict(t, w.Body.Bytes(), &c)
		if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(c.AccessKeyID) || len(c.SecretAccessKey) != 40 || c.Token == "" || c.AccountID != "111122223333" {
			t.Fatalf("credentials %+v", c)
		}
		if !expirationRe.MatchString(c.Expiration) {
			t.Fatalf("Expiration %q", c.Expiration)
		}
		exp, _ := time.Parse(ExpirationLayout, c.Expiration)
		if left := time.Until(exp); left < 55*time.Minute || left > time.Hour+time.Second {
			t.Fatalf("Expiration %s is %s away, want the tenant's 1h", c.Expiration, left)
		}
	})
	t.Run("process shape, Bearer token", func(t *testing.T) {
		w := h.do("GET", okQuery+"&format=process", "Bearer "+tok, "", nil)
		checkOK(t, w)
		var c ProcessCredentials
		decodeStrict(t, w.Body.Bytes(), &c)
		if c.Version != 1 || c.SessionToken == "" || !expirationRe.MatchString(c.Expiration) {
			t.Fatalf("process credentials %+v", c)
		}
	})
	t.Run("POST JSON with files and a charset", func(t *testing.T) {
		w := h.do("POST", "/credentials", "Bearer "+tok,
			`{"operation":"storage:put","location":"s3://media/acme/out/","files":["a.mp4","b.mp4"],"job_id":"J1","task_id":"T1","duration_seconds":1800}`,
			map[string]string{"Content-Type": "application/json; charset=utf-8"})
		checkOK(t, w)
		var c ContainerCredentials
		decodeStrict(t, w.Body.Bytes(), &c)
		exp, _ := time.Parse(ExpirationLayout, c.Expiration)
		if left := time.Until(exp); left > 31*time.Minute || left < 29*time.Minute {
			t.Fatalf("duration_seconds=1800 gave %s", left)
		}
	})
	t.Run("duration above max is clamped", func(t *testing.T) {
		w := h.do("GET", okQuery+"&duration_seconds=43200", tok, "", nil)
		checkOK(t, w)
		var c ContainerCredentials
		decodeStrict(t, w.Body.Bytes(), &c)
		exp, _ := time.Parse(ExpirationLayout, c.Expiration)
		if time.Until(exp) > time.Hour+time.Second {
			t.Fatalf("not clamped: %s", c.Expiration)
		}
	})
	t.Run("absurd duration is clamped, not overflowed", func(t *testing.T) {
		w := h.do("GET", okQuery+"&duration_seconds=9223372036854775807", tok, "", nil)
		checkOK(t, w)
	})
	t.Run("userinfo location is stripped", func(t *testing.T) {
		w := h.do("GET", "/credentials?operation=get&location=s3://AKIDUSERINFO:SuperSecretUserinfo@media/acme/in/", tok, "", nil)
		checkOK(t, w)
	})

	recs := h.rec.all()
	if len(recs) != 6 {
		t.Fatalf("%d records, want 6", len(recs))
	}
	for _, r := range recs {
		if r.Outcome != audit.Issued || r.Reason != "" || r.Principal != "worker-1" || r.Org != "acme" || r.AuthMethod != "jwt" ||
			r.Bucket != "media" || r.Backend != "default" || r.AccessKeyID == "" || r.Expiration.IsZero() || r.Policy == "" ||
			r.PolicySHA256 == "" || r.SessionName == "" || r.RoleARN == "" || r.ReplicaID != "test-1" {
			t.Errorf("incomplete issuance record %+v", r)
		}
	}
	if recs[0].JobID != "J1" || recs[0].TaskID != "T1" || recs[0].Operation != "get" || recs[0].Prefix != "acme/in/" {
		t.Errorf("record %+v", recs[0])
	}
	if recs[2].Operation != "put" || recs[2].FileCount != 2 {
		t.Errorf("POST record %+v", recs[2])
	}
}

func TestJobBindingMatch(t *testing.T) {
	h := newHarness(t, nil)
	w := h.do("GET", okQuery, h.token("w", "acme", map[string]any{"job_id": "J1", "task_id": "T1"}), "", nil)
	checkOK(t, w)
}

func TestDryRun(t *testing.T) {
	h := newHarness(t, nil)
	w := h.do("GET", okQuery+"&dry_run=true&file=x.mp4", "Bearer "+h.token("worker-1", "acme", nil), "", nil)
	checkOK(t, w)
	if n := h.vendor.callCount(); n != 0 {
		t.Fatalf("dry run called the vendor %d times", n)
	}
	var d struct {
		DryRun          bool           `json:"dry_run"`
		Identity        map[string]any `json:"identity"`
		Grant           scope.Grant    `json:"grant"`
		DurationSeconds int            `json:"duration_seconds"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if !d.DryRun || d.Identity["principal"] != "worker-1" || d.Grant.RoleARN != testTenants[0].RoleARN ||
		d.Grant.Bucket != "media" || d.Grant.Prefix != "acme/in/" || len(d.Grant.Keys) != 1 || d.DurationSeconds != 3600 ||
		!strings.Contains(d.Grant.Policy, "arn:aws:s3:::media/acme/in/x.mp4") {
		t.Fatalf("dry run %s", w.Body)
	}
	for _, k := range []string{"SecretAccessKey", "acme-vtk" /* external id */} {
		if strings.Contains(w.Body.String(), k) {
			t.Errorf("dry run renders %s", k)
		}
	}
	// A denied dry run is a denial like any other.
	w = h.do("GET", "/credentials?operation=get&location=s3://media/other/&dry_run=true", "Bearer "+h.token("worker-1", "acme", nil), "", nil)
	checkError(t, w, 403, fault.AccessDenied)
	if recs := h.rec.all(); len(recs) != 1 || recs[0].Reason != "no_matching_grant" {
		t.Fatalf("records %+v", recs)
	}
}

func TestWhoAmI(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []struct {
		org    string
		tenant bool
	}{{"acme", true}, {"globex", false}} {
		w := h.do("GET", "/v1/whoami", h.token("worker-1", c.org, map[string]any{"job_id": "J1"}), "", nil)
		checkOK(t, w)
		var got WhoAmI
		decodeStrict(t, w.Body.Bytes(), &got)
		if got.Identity.Principal != "worker-1" || got.Identity.Org != c.org || got.Identity.Method != "jwt" || got.Identity.JobID != "J1" || got.Identity.Details["kid"] != "k1" {
			t.Fatalf("identity %+v", got.Identity)
		}
		if (got.Tenant != nil) != c.tenant || (c.tenant && (got.Tenant.RoleARN != testTenants[0].RoleARN || got.Tenant.MaxDurationSeconds != 3600)) {
			t.Fatalf("tenant %+v", got.Tenant)
		}
	}
}

func TestHealthReadyOpenAPI(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AllowedHosts = []string{"dispenser.internal"} })
	host := map[string]string{"Host": "dispenser.internal:8443"}
	if w := h.do("GET", "/healthz", "", "", host); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
	if w := h.do("GET", "/readyz", "", "", host); w.Code != 200 {
		t.Fatalf("readyz %d", w.Code)
	}
	h.srv.SetReady(false)
	w := h.do("GET", "/readyz", "", "", host)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("readyz not ready: %d %v", w.Code, w.Header())
	}
	w = h.do("GET", "/openapi.yaml", "", "", host)
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/yaml" || !strings.HasPrefix(w.Body.String(), "openapi:") {
		t.Fatalf("openapi %d %q", w.Code, w.Body)
	}
}

func TestRequestID(t *testing.T) {
	h := newHarness(t, nil)
	w := h.do("GET", "/healthz", "", "", map[string]string{"X-Request-Id": "abc-123"})
	if got := w.Header().Get("X-Request-Id"); got != "abc-123" {
		t.Fatalf("request id %q", got)
	}
	w = h.do("GET", "/healthz", "", "", map[string]string{"X-Request-Id": "bad id\nwith newline"})
	if got := w.Header().Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(got) {
		t.Fatalf("unsafe request id kept: %q", got)
	}
}

func TestAllowedHosts(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AllowedHosts = []string{"dispenser.internal", "[::1]", "127.0.0.1:8080"} })
	for host, ok := range map[string]bool{
		"dispenser.internal": true, "DISPENSER.internal:443": true, "[::1]": true, "[::1]:8080": true,
		"127.0.0.1:8080": true, "127.0.0.1": false, "dispenser.internal.evil.test": false, "": false,
	} {
		w := h.do("GET", "/healthz", "", "", map[string]string{"Host": host})
		if (w.Code == 200) != ok {
			t.Errorf("Host %q: status %d", host, w.Code)
		}
	}
}

// anchorMissing is a Gate holding the replica as the audit trail does when
// its log has no anchored checkpoint.
func anchorMissing() *fault.Error {
	return fault.New(fault.AuditUnavailable, "audit_anchor_missing", "no anchor holds a checkpoint of the audit log; an operator must run dispenser audit adopt").WithRetryAfter(30 * time.Second)
}

// TestGateHoldsTheReplica: while the Gate holds, /credentials and
// /v1/whoami answer its fault in the contract's shape (no decision is
// made, so nothing is recorded) and /readyz is 503 with its reason; once
// it opens, the replica serves.
func TestGateHoldsTheReplica(t *testing.T) {
	var held atomic.Bool
	held.Store(true)
	h := newHarness(t, func(o *Options) {
		o.Gate = func() *fault.Error {
			if held.Load() {
				return anchorMissing()
			}
			return nil
		}
	})
	authz := "Bearer " + h.token("worker-1", "acme", nil)
	for _, target := range []string{okQuery, "/v1/whoami"} {
		w := h.do("GET", target, authz, "", nil)
		body := checkError(t, w, 503, fault.AuditUnavailable)
		if !strings.Contains(body.Message, "audit adopt") || w.Header().Get("Retry-After") != "30" {
			t.Errorf("%s while held: %q, Retry-After %q", target, body.Message, w.Header().Get("Retry-After"))
		}
	}
	if recs := h.rec.all(); len(recs) != 0 {
		t.Errorf("records while held: %+v", recs)
	}
	if w := h.do("GET", "/readyz", "", "", nil); w.Code != 503 || !strings.Contains(w.Body.String(), `"status":"audit_anchor_missing"`) {
		t.Errorf("/readyz while held: %d %s", w.Code, w.Body)
	}
	if st := h.srv.ReadyState(); st != "audit_anchor_missing" {
		t.Errorf("ReadyState while held = %q", st)
	}
	if w := h.do("GET", "/healthz", "", "", nil); w.Code != 200 {
		t.Errorf("/healthz while held: %d", w.Code)
	}
	held.Store(false)
	if w := h.do("GET", okQuery, authz, "", nil); w.Code != 200 {
		t.Errorf("/credentials once the gate opened: %d %s", w.Code, w.Body)
	}
	if w := h.do("GET", "/readyz", "", "", nil); w.Code != 200 {
		t.Errorf("/readyz once the gate opened: %d", w.Code)
	}
}
