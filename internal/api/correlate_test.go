package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
)

// correlateHarness serves the admin routes over a real SQLite trail
// holding one issued get record for key ASIACORRELATEAPI0001.
func correlateHarness(t *testing.T, maxBody int64, trail AuditLog) (*harness, string) {
	t.Helper()
	token := strings.Repeat("c", 40)
	t.Setenv("TEST_CORRELATE_ADMIN", token)
	ac := auth.AdminConfig{Tokens: []auth.AdminToken{{Name: "ops", TokenEnv: "TEST_CORRELATE_ADMIN"}}}
	ac.ApplyDefaults()
	admin, err := ac.Build()
	if err != nil {
		t.Fatal(err)
	}
	if trail == nil {
		s, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "audit.db")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		pol, _, _ := scope.BuildPolicy(scope.OpGet, scope.Location{Bucket: "media", Prefix: "acme/in/"}, nil, scope.PolicyOptions{})
		sum := sha256.Sum256([]byte(pol))
		if _, err := s.Append(context.Background(), []audit.Record{{Time: apiT0, Outcome: audit.Issued, Principal: "worker-1", Org: "acme",
			JobID: "job-1", TaskID: "task-1", Operation: "get", Bucket: "media", Prefix: "acme/in/", RoleARN: testTenants[0].RoleARN,
			AccessKeyID: "ASIACORRELATEAPI0001", Expiration: apiT0.Add(time.Hour), Policy: pol, PolicySHA256: hex.EncodeToString(sum[:]),
			PackedPolicySize: -1}}); err != nil {
			t.Fatal(err)
		}
		trail = &audit.Service{Trail: struct {
			audit.Querier
			audit.CheckpointSource
		}{s, s}}
	}
	h := newHarness(t, func(o *Options) {
		o.AdminAuthenticator = admin
		o.Audit = trail
		o.Correlate = CorrelateSettings{MaxBodyBytes: maxBody, ClockSkew: time.Minute}
	})
	return h, "Bearer " + token
}

var apiT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ctEvent(at time.Duration, key, akid string, mod ...func(*cloudtrailtest.Event)) map[string]any {
	e := cloudtrailtest.Event{Time: apiT0.Add(at), Name: "GetObject", Bucket: "media", Key: key,
		Session: cloudtrailtest.Session{AccessKeyID: akid, RoleARN: testTenants[0].RoleARN, SessionName: "s"}}
	for _, m := range mod {
		m(&e)
	}
	return e.Record()
}

// validateAgainstSpec checks a response (and an accepted request) against
// openapi.yaml.
func validateAgainstSpec(t *testing.T, method, target, body string, hdr map[string]string, w *httptest.ResponseRecorder) {
	t.Helper()
	doc := loadSpec(t)
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	item := doc.Paths.Value("/v1/audit/correlate")
	if item == nil || item.GetOperation(method) == nil {
		t.Fatalf("%s /v1/audit/correlate is not documented", method)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		ExcludeRequestBody: hdr["Content-Type"] != "application/json"}
	in := &openapi3filter.RequestValidationInput{Request: req, Options: opts,
		Route: &routers.Route{Spec: doc, Path: "/v1/audit/correlate", PathItem: item, Method: method, Operation: item.GetOperation(method)}}
	if w.Code < 300 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("request does not match openapi.yaml: %v", err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(), Options: opts}
	out.SetBodyBytes(w.Body.Bytes())
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("response does not match openapi.yaml: %v\nbody: %s", err, w.Body)
	}
}

type correlateAnswer struct {
	Events  []correlate.Event `json:"events"`
	Tasks   []correlate.Task  `json:"tasks"`
	Summary correlate.Summary `json:"summary"`
}

func TestCorrelateAPI(t *testing.T) {
	h, admin := correlateHarness(t, 64<<10, nil)
	doc := cloudtrailtest.Document(
		ctEvent(time.Minute, "acme/in/a.mp4", "ASIACORRELATEAPI0001"),
		ctEvent(2*time.Minute, "acme/secret.mp4", "ASIACORRELATEAPI0001"),
		ctEvent(3*time.Minute, "acme/in/a.mp4", "ASIANEVERISSUED00001"),
		ctEvent(4*time.Minute, "x", "AKIAFOREIGN000000001", func(e *cloudtrailtest.Event) {
			e.Identity = cloudtrailtest.IAMUser("999999999999", "u", "AKIAFOREIGN000000001")
		}),
	)
	json1 := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		name, target, body string
		hdr                map[string]string
	}{
		{"plain JSON", "/v1/audit/correlate", string(doc), json1},
		{"gzip by Content-Encoding", "/v1/audit/correlate", string(cloudtrailtest.Gzip(doc)), map[string]string{"Content-Type": "application/gzip", "Content-Encoding": "gzip"}},
		{"gzip by magic bytes", "/v1/audit/correlate", string(cloudtrailtest.Gzip(doc)), map[string]string{"Content-Type": "application/gzip"}},
		{"NDJSON", "/v1/audit/correlate", string(cloudtrailtest.NDJSON(
			ctEvent(time.Minute, "acme/in/a.mp4", "ASIACORRELATEAPI0001"), ctEvent(2*time.Minute, "acme/secret.mp4", "ASIACORRELATEAPI0001"),
			ctEvent(3*time.Minute, "acme/in/a.mp4", "ASIANEVERISSUED00001"))), map[string]string{"Content-Type": "application/x-ndjson"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := h.do("POST", c.target, admin, c.body, c.hdr)
			if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
			}
			validateAgainstSpec(t, "POST", c.target, c.body, c.hdr, w)
			var a correlateAnswer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
				t.Fatal(err)
			}
			if len(a.Events) != 3 || a.Events[0].Verdict != correlate.OK || a.Events[0].Record.TaskID != "task-1" ||
				a.Events[1].Verdict != correlate.OutsideGrant || a.Events[2].Verdict != correlate.UnknownKey ||
				a.Summary.Critical != 2 || a.Summary.ProblemCount != 0 {
				t.Fatalf("%s", w.Body)
			}
		})
	}

	// by=task and all=true; since/until select.
	w := h.do("POST", "/v1/audit/correlate?by=task", admin, string(doc), json1)
	var a correlateAnswer
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &a) != nil || len(a.Tasks) != 1 || a.Tasks[0].TaskID != "task-1" || a.Tasks[0].Events != 2 || a.Events != nil {
		t.Fatalf("by task: %d %s", w.Code, w.Body)
	}
	validateAgainstSpec(t, "POST", "/v1/audit/correlate?by=task", string(doc), json1, w)
	w = h.do("POST", "/v1/audit/correlate?all=true&since=2026-03-01T12:02:00Z&until=2026-03-01T12:05:00Z", admin, string(doc), json1)
	a = correlateAnswer{}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &a) != nil || len(a.Events) != 3 || a.Summary.OutsideWindow != 1 || a.Events[2].Verdict != correlate.NotDispenser {
		t.Fatalf("all+window: %d %s", w.Code, w.Body)
	}

	// Damaged input is reported, not refused: the CLI does the same.
	full := cloudtrailtest.Gzip(doc)
	w = h.do("POST", "/v1/audit/correlate", admin, string(full[:len(full)-30]), map[string]string{"Content-Type": "application/gzip"})
	a = correlateAnswer{}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &a) != nil || a.Summary.ProblemCount == 0 ||
		!strings.Contains(a.Summary.Problems[0].Message, "truncated gzip stream") || a.Summary.Problems[0].Source != "request body" {
		t.Fatalf("truncated gzip: %d %s", w.Code, w.Body)
	}
	w = h.do("POST", "/v1/audit/correlate", admin, `{"Records":[{"eventTime":"2026-03-01T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"}]}`, json1)
	a = correlateAnswer{}
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &a) != nil || a.Summary.ProblemCount != 1 || !strings.Contains(a.Summary.Problems[0].Message, "without userIdentity") {
		t.Fatalf("record without userIdentity: %d %s", w.Code, w.Body)
	}
}

// TestCorrelateAPIErrors: every refusal has the contract's error shape and
// is documented.
func TestCorrelateAPIErrors(t *testing.T) {
	storeDown := errors.New("connection refused to 10.0.0.9")
	down := &fakeAuditLog{query: func(context.Context, audit.Filter) (audit.Page, error) { return audit.Page{}, storeDown }}
	doc := string(cloudtrailtest.Document(ctEvent(time.Minute, "acme/in/a.mp4", "ASIACORRELATEAPI0001")))
	big := strings.Repeat(" ", 5000) + doc
	// A small gzip body that inflates past the limit.
	bomb := string(cloudtrailtest.Gzip([]byte(strings.Repeat(" ", 50000) + doc)))
	// A gzip stream inside a gzip stream: each layer is under the limit,
	// the document is not (the body limit counts the decompressed document).
	nested := string(cloudtrailtest.Gzip(cloudtrailtest.Gzip([]byte(strings.Repeat(" ", 50000) + doc))))
	json1 := map[string]string{"Content-Type": "application/json"}
	for _, c := range []struct {
		name, method, target, body string
		hdr                        map[string]string
		anonymous                  bool
		trail                      AuditLog
		status                     int
		code                       fault.Code
	}{
		{name: "no token", target: "/v1/audit/correlate", body: doc, hdr: json1, anonymous: true, status: 401, code: fault.Unauthorized},
		{name: "unknown parameter", target: "/v1/audit/correlate?org=acme", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "repeated parameter", target: "/v1/audit/correlate?by=task&by=event", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "bad by", target: "/v1/audit/correlate?by=job", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "bad all", target: "/v1/audit/correlate?all=maybe", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "bad since", target: "/v1/audit/correlate?since=yesterday", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "until before since", target: "/v1/audit/correlate?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", body: doc, hdr: json1, status: 400, code: fault.InvalidRequest},
		{name: "body too large", target: "/v1/audit/correlate", body: big, hdr: json1, status: 413, code: fault.RequestTooLarge},
		{name: "inflates too large", target: "/v1/audit/correlate", body: bomb, hdr: map[string]string{"Content-Type": "application/gzip"}, status: 413, code: fault.RequestTooLarge},
		{name: "nested gzip inflates too large", target: "/v1/audit/correlate", body: nested, hdr: map[string]string{"Content-Type": "application/gzip"}, status: 413, code: fault.RequestTooLarge},
		{name: "trail down", target: "/v1/audit/correlate", body: doc, hdr: json1, trail: down, status: 503, code: fault.AuditUnavailable},
		{name: "GET", method: "GET", target: "/v1/audit/correlate", status: 405, code: fault.MethodNotAllowed},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, admin := correlateHarness(t, 4096, c.trail)
			method := c.method
			if method == "" {
				method = "POST"
			}
			if c.anonymous {
				admin = ""
			}
			w := h.do(method, c.target, admin, c.body, c.hdr)
			checkError(t, w, c.status, c.code)
			if strings.Contains(w.Body.String(), "10.0.0.9") {
				t.Errorf("internal cause leaked: %s", w.Body)
			}
			if method == "POST" {
				validateAgainstSpec(t, method, c.target, c.body, c.hdr, w)
			}
		})
	}
}
