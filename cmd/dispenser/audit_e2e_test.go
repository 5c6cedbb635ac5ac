package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
)

// devAdminToken is the DEV-ONLY admin token of examples/local.yaml.
const devAdminToken = "dispenser-dev-admin-token-DEV-ONLY-do-not-deploy"

// localConfig writes examples/local.yaml into dir beside the development
// keys it names and with the audit trail in dir, and returns its path.
func localConfig(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/local.yaml")
	if err != nil {
		t.Fatal(err)
	}
	copyDevKeys(t, dir)
	s := string(b)
	s = strings.Replace(s, "path: dispenser-audit.db", "path: "+filepath.Join(dir, "audit.db"), 1)
	s = strings.Replace(s, "level: info", "level: error", 1)
	// Tests never take the fixed admin port (other test binaries may run).
	s = strings.Replace(s, "admin_listen: 127.0.0.1:9090", "admin_listen: 127.0.0.1:0", 1)
	s = strings.Replace(s, "path: dispenser-keys.json", "path: "+filepath.Join(dir, "keys.json"), 1)
	path := filepath.Join(dir, "dispenser.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startApp wires the dispenser from path and serves it with httptest.
func startAuditApp(t *testing.T, path string) (*app, *httptest.Server) {
	t.Helper()
	a := testApp(t, path)
	return a, httptest.NewServer(a.server.Handler())
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func call(t *testing.T, method, url, token string, hdr ...string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// TestAuditEndToEnd issues credentials through the real wiring, finds the
// task by the returned AccessKeyId through the API and the CLI, checks a
// receipt offline, verifies the trail, and scans every byte the audit
// trail wrote for the secrets and tokens of the run.
func TestAuditEndToEnd(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	mirror := filepath.Join(dir, "mirror.jsonl")
	addToAudit(t, path, "  mirror: "+mirror+"\n")
	a, srv := startAuditApp(t, path)
	closed := false
	defer func() {
		srv.Close()
		if !closed {
			a.close()
		}
	}()
	code, tok, stderr := runCLI(t, "token", "--config", path, "--subject", "worker-1", "--org", "acme", "--job-id", "job-9", "--task-id", "task-42")
	if code != 0 {
		t.Fatalf("token: %s", stderr)
	}
	tok = strings.TrimSpace(tok)
	secrets := []string{tok, devAdminToken}

	var keys []string
	for i := 0; i < 3; i++ {
		code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/&job_id=job-9&task_id=task-42", tok)
		if code != 200 {
			t.Fatalf("credentials: %d %s", code, body)
		}
		var c struct{ AccessKeyId, SecretAccessKey, Token string }
		if err := json.Unmarshal(body, &c); err != nil || c.AccessKeyId == "" || c.SecretAccessKey == "" {
			t.Fatalf("credentials body %s: %v", body, err)
		}
		keys = append(keys, c.AccessKeyId)
		secrets = append(secrets, c.SecretAccessKey, c.Token)
	}
	if code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/other/&job_id=job-9&task_id=task-42", tok); code != 403 {
		t.Fatalf("out-of-scope request: %d %s", code, body)
	}

	// The API finds the task by the access key id CloudTrail shows.
	code, body, _ := call(t, "GET", srv.URL+"/v1/audit?access_key_id="+keys[1], devAdminToken)
	if code != 200 {
		t.Fatalf("/v1/audit: %d %s", code, body)
	}
	var page audit.Page
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 {
		t.Fatalf("query by access key: %d records", len(page.Records))
	}
	r := page.Records[0]
	if r.TaskID != "task-42" || r.JobID != "job-9" || r.Principal != "worker-1" || r.Org != "acme" || r.Outcome != audit.Issued ||
		r.AccessKeyID != keys[1] || !strings.Contains(r.Policy, "media") || r.PolicySHA256 == "" || r.Bucket != "media" {
		t.Fatalf("record %+v", r)
	}
	// Every filter narrows; the denial is recorded too.
	code, body, _ = call(t, "GET", srv.URL+"/v1/audit?task_id=task-42&outcome=denied", devAdminToken)
	if code != 200 || !strings.Contains(string(body), `"reason":"`) || strings.Count(string(body), `"request_id"`) != 1 {
		t.Fatalf("denied records: %d %s", code, body)
	}
	// NDJSON export streams every match, paging internally.
	code, body, hdr := call(t, "GET", srv.URL+"/v1/audit?org=acme&limit=1", devAdminToken, "Accept", "application/x-ndjson")
	if code != 200 || hdr.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("ndjson: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	lines := 0
	for sc := bufio.NewScanner(bytes.NewReader(body)); sc.Scan(); lines++ {
		var rec audit.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("ndjson line %d: %v", lines, err)
		}
	}
	if lines != 4 {
		t.Fatalf("ndjson export has %d lines, want 4 (3 issued, 1 denied)", lines)
	}
	// Admin authentication: none → 401, a worker token → 403, bad input → 400.
	if code, _, _ := call(t, "GET", srv.URL+"/v1/audit", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/v1/audit", tok); code != 403 {
		t.Fatalf("worker token on the admin API: %d, want 403", code)
	}
	for _, q := range []string{"limit=1001", "limit=0", "cursor=zzz", "outcome=maybe", "since=yesterday", "colour=red", "org=a&org=b"} {
		if code, body, _ := call(t, "GET", srv.URL+"/v1/audit?"+q, devAdminToken); code != 400 {
			t.Fatalf("%s: %d %s, want 400", q, code, body)
		}
	}

	// The CLI finds it the same way.
	code, out, stderr := runCLI(t, "audit", "query", "--config", path, "--access-key-id", keys[2], "--format", "json")
	if code != 0 || !strings.Contains(out, `"task_id": "task-42"`) || !strings.Contains(out, keys[2]) {
		t.Fatalf("audit query: %d %s %s", code, out, stderr)
	}
	code, out, _ = runCLI(t, "audit", "query", "--config", path, "--job-id", "job-9", "--outcome", "issued")
	if code != 0 || strings.Count(out, "task-42") != 3 {
		t.Fatalf("audit query table: %d\n%s", code, out)
	}

	// A receipt verifies offline, and fails once the record is altered.
	code, body, _ = call(t, "GET", srv.URL+"/v1/audit/"+r.ID+"/proof", devAdminToken)
	if code != 200 {
		t.Fatalf("proof: %d %s", code, body)
	}
	rcpt := filepath.Join(dir, "receipt.json")
	_ = os.WriteFile(rcpt, body, 0o600)
	if code, out, stderr := runCLI(t, "audit", "verify-receipt", rcpt, "--config", path); code != 0 {
		t.Fatalf("verify-receipt: %d %s %s", code, out, stderr)
	}
	// "-" reads the receipt from stdin, as the command's own hint says, in
	// the documented position (FILE first) as well as after the flags.
	for _, args := range [][]string{
		{"audit", "verify-receipt", "-", "--config", path},
		{"audit", "verify-receipt", "--config", path, "-"},
	} {
		f, err := os.Open(rcpt)
		must(t, err)
		old := os.Stdin
		os.Stdin = f
		code, out, stderr := runCLI(t, args...)
		os.Stdin = old
		f.Close()
		if code != 0 || !strings.Contains(out, "receipt valid") {
			t.Fatalf("%v: %d %s %s", args, code, out, stderr)
		}
	}
	altered := bytes.Replace(body, []byte(`"task_id":"task-42"`), []byte(`"task_id":"task-43"`), 1)
	_ = os.WriteFile(rcpt, altered, 0o600)
	if code, _, _ := runCLI(t, "audit", "verify-receipt", rcpt, "--config", path); code != 1 {
		t.Fatalf("altered receipt: exit %d, want 1", code)
	}
	if code, body, _ := call(t, "GET", srv.URL+"/v1/audit/main:999/proof", devAdminToken); code != 404 {
		t.Fatalf("proof of a missing record: %d %s", code, body)
	}

	// Shutdown signs and anchors a last checkpoint: verify passes (0).
	srv.Close()
	a.close()
	closed = true
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, stderr)
	}

	// The mirror has every record, as JSON lines.
	mb, err := os.ReadFile(mirror)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(mb, []byte("\n")); n != 4 || !bytes.Contains(mb, []byte(keys[0])) {
		t.Fatalf("mirror has %d lines:\n%s", n, mb)
	}

	// No secret reached any file the audit trail wrote.
	files, _ := filepath.Glob(filepath.Join(dir, "audit.db*"))
	files = append(files, mirror)
	anchors, _ := filepath.Glob(filepath.Join(dir, "audit.db.anchors", "*"))
	files = append(files, anchors...)
	if len(files) < 3 {
		t.Fatalf("audit files: %v", files)
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.IsDir() {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if len(s) < 20 {
				t.Fatalf("secret too short to scan for: %q", s)
			}
			if bytes.Contains(b, []byte(s)) || bytes.Contains(b, []byte(s[:20])) {
				t.Fatalf("%s contains a secret or token of this run", f)
			}
		}
	}
}

// addToAudit adds a line to the audit section of the configuration file.
func addToAudit(t *testing.T, path, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "\naudit:\n", "\naudit:\n"+line, 1)
	if s == string(b) {
		t.Fatal("no audit section")
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
