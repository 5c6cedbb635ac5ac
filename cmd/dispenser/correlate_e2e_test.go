package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/ststest"
)

// The tenant role carries a path: CloudTrail's sessionIssuer.arn does too,
// the assumed-role ARN does not.
const correlateRole = "arn:aws:iam::222222222222:role/dispenser/vtk-target"

// correlateApp starts the real server with the assume-role backend
// pointed at a fake STS speaking the wire protocol, a JWT issuer and an
// admin token, and returns the config path and the server.
func correlateApp(t *testing.T) (string, *httptest.Server) {
	t.Helper()
	isolateSDK(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIADISPENSERBASE001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dispenser-base-secret-0123456789abcdefgh")
	sts := ststest.New(t)
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubFile, privFile := filepath.Join(dir, "verify.pem"), filepath.Join(dir, "sign.pem")
	must(t, os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600))
	must(t, os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600))
	sum := sha256.Sum256([]byte(devAdminToken))
	path := filepath.Join(dir, "dispenser.yaml")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
log: {level: error}
auth:
  jwt:
    issuer: https://dispenser.test/correlate
    audience: dispenser
    keys: [{kid: c-1, public_key_file: %s, algorithms: [EdDSA]}]
    org_claim: org
    signing_key_file: %s
    signing_key_id: c-1
admin:
  tokens: [{name: ops, sha256: %s}]
backends:
  default:
    type: assume-role
    region: us-east-1
    endpoint: %s
tenants:
  - org: acme
    role_arn: %s
    external_id: acme-vtk
    max_duration: 1h
    grants:
      - {bucket: media, prefixes: ["acme/in/"], operations: [get]}
      - {bucket: media, prefixes: ["acme/out/"], operations: [put]}
audit:
  type: sqlite
  path: %s
correlate:
  clock_skew: 1m
`, pubFile, privFile, hex.EncodeToString(sum[:]), sts.URL, correlateRole, filepath.Join(dir, "audit.db"))), 0o600))
	return path, startApp(t, path)
}

// fetch vends credentials through the server with the AWS SDK's HTTP
// credential provider, as a worker does.
func fetch(t *testing.T, srv *httptest.Server, path, op, location, job, task string) aws.Credentials {
	t.Helper()
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme", "--job-id", job, "--task-id", task)
	q := url.Values{"operation": {op}, "location": {location}, "job_id": {job}, "task_id": {task}}
	p := endpointcreds.New(srv.URL+"/credentials?"+q.Encode(), func(o *endpointcreds.Options) { o.AuthorizationToken = tok })
	c, err := p.Retrieve(context.Background())
	if err != nil || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
		t.Fatalf("vend %s %s: %+v %v", op, location, c, err)
	}
	return c
}

type correlateReport struct {
	Events  []correlate.Event `json:"events"`
	Tasks   []correlate.Task  `json:"tasks"`
	Summary correlate.Summary `json:"summary"`
}

// TestCorrelateEndToEnd issues real credentials through the server, builds
// CloudTrail S3 data events for them as AWS documents and delivers them,
// correlates with the CLI and the admin API, and follows one finding to a
// verified receipt.
func TestCorrelateEndToEnd(t *testing.T) {
	path, srv := correlateApp(t)
	get := fetch(t, srv, path, "get", "s3://media/acme/in/", "job-1", "task-1")
	again := fetch(t, srv, path, "get", "s3://media/acme/in/", "job-1", "task-1") // served from the credential cache
	put := fetch(t, srv, path, "put", "s3://media/acme/out/", "job-1", "task-2")
	if again.AccessKeyID != get.AccessKeyID || put.AccessKeyID == get.AccessKeyID {
		t.Fatalf("keys %s %s %s", get.AccessKeyID, again.AccessKeyID, put.AccessKeyID)
	}
	now := time.Now().UTC().Truncate(time.Second)
	session := func(key string) cloudtrailtest.Session {
		return cloudtrailtest.Session{AccessKeyID: key, RoleARN: correlateRole, SessionName: "dispenser-job-1", SourceIdentity: "worker-1"}
	}
	type want struct {
		verdict correlate.Verdict
		task    string
	}
	var recs []map[string]any
	var wants []want
	add := func(w want, e cloudtrailtest.Event) {
		if e.Time.IsZero() {
			e.Time = now.Add(time.Duration(len(recs)) * time.Second)
		}
		e.Bucket = "media"
		recs = append(recs, e.Record())
		wants = append(wants, w)
	}
	g, p := session(get.AccessKeyID), session(put.AccessKeyID)
	add(want{correlate.OK, "task-1"}, cloudtrailtest.Event{Name: "GetObject", Key: "acme/in/secret.mp4", Session: g, BytesOut: 1 << 20})
	add(want{correlate.OK, "task-1"}, cloudtrailtest.Event{Name: "HeadObject", Key: "acme/in/secret.mp4", Session: g})
	add(want{correlate.OK, "task-1"}, cloudtrailtest.Event{Name: "ListObjects", ListV2: true, Prefix: cloudtrailtest.Ptr("acme/in/"), Session: g})
	add(want{correlate.DeniedAsExpected, "task-1"}, cloudtrailtest.Event{Name: "ListObjects", Prefix: cloudtrailtest.Ptr("acme/"), Session: g, ErrorCode: "AccessDenied"})
	add(want{correlate.DeniedAsExpected, "task-1"}, cloudtrailtest.Event{Name: "GetObject", Key: "acme/out/r.mp4", Session: g, ErrorCode: "AccessDenied"})
	add(want{correlate.OutsideGrant, "task-1"}, cloudtrailtest.Event{Name: "GetObject", Key: "acme/private/leaked.mp4", Session: g, BytesOut: 4096})
	add(want{correlate.AfterExpiry, "task-1"}, cloudtrailtest.Event{Name: "GetObject", Key: "acme/in/secret.mp4", Session: g, Time: get.Expires.Add(10 * time.Minute), ErrorCode: "AccessDenied"})
	add(want{correlate.OK, "task-2"}, cloudtrailtest.Event{Name: "CreateMultipartUpload", Key: "acme/out/r.mp4", Session: p})
	add(want{correlate.OK, "task-2"}, cloudtrailtest.Event{Name: "UploadPart", Key: "acme/out/r.mp4", Session: p, BytesIn: 5 << 20})
	add(want{correlate.OK, "task-2"}, cloudtrailtest.Event{Name: "CompleteMultipartUpload", Key: "acme/out/r.mp4", Session: p})
	add(want{correlate.OK, "task-2"}, cloudtrailtest.Event{Name: "PutObject", Key: "acme/out/s.mp4", Session: p, BytesIn: 700})
	add(want{correlate.Unverifiable, "task-2"}, cloudtrailtest.Event{Name: "DeleteObjects", Session: p})
	add(want{correlate.UnknownKey, ""}, cloudtrailtest.Event{Name: "GetObject", Key: "acme/in/secret.mp4", Session: session("ASIAROLEASSUMEDBYHAND")})

	root := filepath.Join(t.TempDir(), "trail-bucket")
	clean, err := cloudtrailtest.Deliver(root, "222222222222", "us-east-1", now, recs...)
	must(t, err)
	// Other principals' calls in the same log: counted, not listed.
	_, err = cloudtrailtest.Deliver(root, "222222222222", "us-east-1", now.Add(5*time.Minute),
		cloudtrailtest.Event{Time: now, Name: "GetObject", Bucket: "media", Key: "acme/in/x", Identity: cloudtrailtest.IAMUser("222222222222", "backup", "AKIAIOSFODNN7EXAMPLE")}.Record())
	must(t, err)

	code, out, stderr := runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", root, "--format", "json")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (critical findings)\n%s\n%s", code, stderr, out)
	}
	var rep correlateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Events) != len(wants) {
		t.Fatalf("%d events, want %d\n%s", len(rep.Events), len(wants), out)
	}
	byID := map[string]correlate.Event{}
	for _, e := range rep.Events {
		byID[e.EventID] = e
	}
	var leak correlate.Event
	for i, r := range recs {
		e, ok := byID[r["eventID"].(string)]
		if !ok {
			t.Fatalf("event %d missing", i)
		}
		task := ""
		if e.Record != nil {
			task = e.Record.TaskID
		}
		if e.Verdict != wants[i].verdict || task != wants[i].task {
			t.Errorf("%s %s: verdict %s task %q, want %s %q (%s)", e.EventName, e.Object, e.Verdict, task, wants[i].verdict, wants[i].task, e.Reason)
		}
		if e.Verdict == correlate.OutsideGrant {
			leak = e
		}
	}
	s := rep.Summary
	if s.Files != 2 || s.Critical != 3 || s.Verdicts[correlate.NotDispenser] != 1 || s.ProblemCount != 0 || !strings.Contains(stderr, "3 critical finding") {
		t.Fatalf("summary %+v\n%s", s, stderr)
	}
	// The served-again key was held by two records of task-1.
	if first := byID[recs[0]["eventID"].(string)]; len(first.AlsoIssued) != 1 || first.Record.Principal != "worker-1" || first.Record.JobID != "job-1" ||
		first.Record.Operation != "get" || first.Record.Location != "s3://media/acme/in/" || first.RoleARN != correlateRole {
		t.Errorf("first event %+v %+v", first, first.Record)
	}

	// From "object leaked" to a verified receipt: the record names the
	// task, the receipt proves the record is in the signed log.
	code, out, stderr = runCLI(t, "audit", "query", "--config", path, "--access-key-id", leak.AccessKeyID, "--format", "json")
	if code != 0 || !strings.Contains(out, `"task_id": "task-1"`) || !strings.Contains(out, leak.Record.PolicySHA256) {
		t.Fatalf("audit query: %d %s %s", code, out, stderr)
	}
	status, body, _ := call(t, "GET", srv.URL+"/v1/audit/"+leak.Record.RecordID+"/proof", devAdminToken)
	if status != 200 {
		t.Fatalf("proof: %d %s", status, body)
	}
	receipt := filepath.Join(t.TempDir(), "receipt.json")
	must(t, os.WriteFile(receipt, body, 0o600))
	if code, out, stderr := runCLI(t, "audit", "verify-receipt", receipt, "--config", path); code != 0 || !strings.Contains(out, "receipt valid: "+leak.Record.RecordID) {
		t.Fatalf("verify-receipt: %d %s %s", code, out, stderr)
	}

	// The admin API answers the same JSON for the delivered file.
	gz, err := os.ReadFile(clean)
	must(t, err)
	req, _ := http.NewRequest("POST", srv.URL+"/v1/audit/correlate", bytes.NewReader(gz))
	req.Header.Set("Authorization", "Bearer "+devAdminToken)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	apiBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var apiRep correlateReport
	if resp.StatusCode != 200 || json.Unmarshal(apiBody, &apiRep) != nil || len(apiRep.Events) != len(wants) || apiRep.Summary.Critical != 3 {
		t.Fatalf("API: %d %s", resp.StatusCode, apiBody)
	}
	for _, e := range apiRep.Events {
		if cli := byID[e.EventID]; cli.Verdict != e.Verdict || cli.Reason != e.Reason {
			t.Errorf("API and CLI disagree on %s: %s / %s", e.EventID, e.Verdict, cli.Verdict)
		}
	}

	// The per-task timeline.
	code, out, _ = runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", clean, "--by", "task", "--format", "json")
	rep = correlateReport{}
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Tasks) != 2 {
		t.Fatalf("by task: %d %s", code, out)
	}
	for _, k := range rep.Tasks {
		switch k.TaskID {
		case "task-1":
			if strings.Join(k.ObjectsRead, ",") != "s3://media/acme/in/secret.mp4,s3://media/acme/private/leaked.mp4" || k.BytesOut != 1<<20+4096 || k.Critical != 1 || len(k.Records) != 1 {
				t.Errorf("task-1 %+v", k)
			}
		case "task-2":
			if strings.Join(k.ObjectsWritten, ",") != "s3://media/acme/out/r.mp4,s3://media/acme/out/s.mp4" || k.BytesIn != 5<<20+700 || k.Critical != 1 {
				t.Errorf("task-2 %+v", k)
			}
		default:
			t.Errorf("task %+v", k)
		}
	}
	// The table, by event and by task.
	code, out, _ = runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", clean)
	if code != 1 || !strings.Contains(out, "OUTSIDE_GRANT") || !strings.Contains(out, "UNKNOWN_KEY") || !strings.Contains(out, "task-2") ||
		!strings.Contains(out, "CRITICAL: 3 event(s) (outside_grant 1, unknown_key 1, successful unverifiable 1)") {
		t.Fatalf("table: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", clean, "--by", "task")
	if code != 1 || !strings.HasPrefix(out, "ORG") || !strings.Contains(out, "task-1") {
		t.Fatalf("task table: %d\n%s", code, out)
	}

	// Only the good events, read from standard input as NDJSON: exit 0.
	var okRecs []map[string]any
	for i, r := range recs {
		if wants[i].verdict == correlate.OK {
			okRecs = append(okRecs, r)
		}
	}
	stdin := filepath.Join(t.TempDir(), "lake-export.ndjson")
	must(t, os.WriteFile(stdin, cloudtrailtest.NDJSON(okRecs...), 0o600))
	f, err := os.Open(stdin)
	must(t, err)
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	code, out, stderr = runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", "-", "--format", "ndjson")
	os.Stdin = old
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != len(okRecs)+1 || !strings.HasPrefix(lines[len(lines)-1], `{"summary":`) || stderr != "" {
		t.Fatalf("stdin: %d\n%s\n%s", code, out, stderr)
	}
}

// TestCorrelateBadInput: malformed input is reported with its file and
// record index, skipped, and gives exit 2 when nothing is critical.
func TestCorrelateBadInput(t *testing.T) {
	path, srv := correlateApp(t)
	get := fetch(t, srv, path, "get", "s3://media/acme/in/", "job-1", "task-1")
	now := time.Now().UTC()
	good := cloudtrailtest.Event{Time: now, Name: "GetObject", Bucket: "media", Key: "acme/in/a.mp4",
		Session: cloudtrailtest.Session{AccessKeyID: get.AccessKeyID, RoleARN: correlateRole, SessionName: "s"}}.Record()
	noIdentity := cloudtrailtest.Event{Time: now, Name: "GetObject", Bucket: "media", Key: "acme/in/a.mp4", NoIdentity: true}.Record()
	dir := t.TempDir()
	mixed := filepath.Join(dir, "mixed.json")
	must(t, os.WriteFile(mixed, cloudtrailtest.Document(noIdentity, good), 0o600))
	full := cloudtrailtest.Gzip(cloudtrailtest.Document(good, good, good))
	truncated := filepath.Join(dir, "truncated.json.gz")
	must(t, os.WriteFile(truncated, full[:len(full)-40], 0o600))
	garbage := filepath.Join(dir, "garbage.json")
	must(t, os.WriteFile(garbage, []byte(`{"Records": [{"eventVersion": "1.10",,]}`), 0o600))

	code, out, stderr := runCLI(t, "audit", "correlate", "--config", path, "--cloudtrail", mixed, "--cloudtrail", truncated, garbage, "--format", "json")
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{mixed + ": record 0: malformed record: S3 event without userIdentity", ": truncated: unexpected end of input", garbage + ": record 0: invalid character ','"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stderr, truncated+": record ") {
		t.Errorf("the truncated file's problem names no record:\n%s", stderr)
	}
	var rep correlateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Summary.ProblemCount != 3 || rep.Summary.Verdicts[correlate.OK] < 2 || len(rep.Summary.Problems) != 3 {
		t.Fatalf("%v %s", err, out)
	}

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--config", path}, 2, "give --cloudtrail"},
		{[]string{"--config", path, "--cloudtrail", mixed, "--format", "xml"}, 2, "--format"},
		{[]string{"--config", path, "--cloudtrail", mixed, "--by", "job"}, 2, "--by must be event or task"},
		{[]string{"--config", path, "--cloudtrail", mixed, "--since", "yesterday"}, 2, "--since must be an RFC 3339 time"},
		{[]string{"--config", path, "--cloudtrail", mixed, "--since", "2026-03-02T00:00:00Z", "--until", "2026-03-01T00:00:00Z"}, 2, "--until must be after --since"},
		{[]string{"--config", path, "--cloudtrail", mixed, "--skew", "2d"}, 2, "--skew"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml"), "--cloudtrail", mixed}, 3, "missing.yaml"},
		{[]string{"--config", path, "--cloudtrail", filepath.Join(dir, "nope")}, 2, "nope: stat: no such file or directory"},
	} {
		code, _, stderr := runCLI(t, append([]string{"audit", "correlate"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}

// TestCorrelateSettingsNeedRestart: the API's body limit and skew are read
// at start, so a reload that changes them says so.
func TestCorrelateSettingsNeedRestart(t *testing.T) {
	path, _ := correlateApp(t)
	old, err := loadConfig(path)
	must(t, err)
	cur, err := loadConfig(path)
	must(t, err)
	cur.Correlate.MaxBodyBytes *= 2
	if got := restartOnly(old, cur); len(got) != 1 || got[0] != "correlate" {
		t.Fatalf("restartOnly = %v, want [correlate]", got)
	}
}
