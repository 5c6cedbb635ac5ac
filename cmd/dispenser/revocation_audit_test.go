package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/revoke"
)

func adminJSON(t *testing.T, method, url, body string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+devAdminToken)
	req.Header.Set("X-Request-Id", "req-"+strings.ToLower(method)+"-1")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// auditRecords queries /v1/audit and decodes the page.
func auditRecords(t *testing.T, base, query string) []audit.Record {
	t.Helper()
	code, body, _ := call(t, "GET", base+"/v1/audit?"+query, devAdminToken)
	if code != 200 {
		t.Fatalf("/v1/audit?%s: %d %s", query, code, body)
	}
	var p audit.Page
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	return p.Records
}

// TestRevocationsInAuditTrail adds and deletes a revocation through the
// admin API of the fully wired app, finds both changes in the audit trail by
// outcome (API and CLI), and verifies the trail afterwards.
func TestRevocationsInAuditTrail(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	a, srv := startAuditApp(t, path)
	closed := false
	defer func() {
		srv.Close()
		if !closed {
			a.close()
		}
	}()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	code, body, hdr := adminJSON(t, "POST", srv.URL+"/v1/revocations",
		`{"kind":"job","value":"job-9","reason":"runaway job","expires_at":"`+exp.Format(time.RFC3339)+`"}`)
	if code != 201 || hdr.Get("X-Dispenser-Warning") != "" {
		t.Fatalf("add: %d %v %s", code, hdr, body)
	}
	var rev api.RevocationView
	if err := json.Unmarshal(body, &rev); err != nil || rev.ID == "" || len(rev.Warnings) != 0 {
		t.Fatalf("add body %s: %v", body, err)
	}

	recs := auditRecords(t, srv.URL, "outcome=revoked")
	if len(recs) != 1 {
		t.Fatalf("revoked records: %+v", recs)
	}
	r := recs[0]
	if r.Principal != "dev-admin" || r.Operation != revoke.OpAdd || r.Reason != "job" || r.JobID != "job-9" ||
		!r.Expiration.Equal(exp) || r.RequestID != "req-post-1" || r.ReplicaID == "" || r.PolicySHA256 == "" {
		t.Fatalf("revocation record %+v", r)
	}
	var doc revoke.Revocation
	if err := json.Unmarshal([]byte(r.Policy), &doc); err != nil || doc.ID != rev.ID || doc.Reason != "runaway job" ||
		doc.Value != "job-9" || doc.CreatedBy != "dev-admin" || doc.ExpiresAt == nil || !doc.ExpiresAt.Equal(exp) {
		t.Fatalf("revocation document %q: %v", r.Policy, err)
	}
	// The job's own filter finds the cut-off next to its decisions.
	if recs := auditRecords(t, srv.URL, "job_id=job-9"); len(recs) != 1 || recs[0].Outcome != audit.Revoked {
		t.Fatalf("job_id filter: %+v", recs)
	}
	if recs := auditRecords(t, srv.URL, "outcome=unrevoked"); len(recs) != 0 {
		t.Fatalf("unrevoked before delete: %+v", recs)
	}

	if code, body, _ := adminJSON(t, "DELETE", srv.URL+"/v1/revocations/"+rev.ID, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	recs = auditRecords(t, srv.URL, "outcome=unrevoked")
	if len(recs) != 1 || recs[0].Operation != revoke.OpDelete || recs[0].Principal != "dev-admin" || recs[0].JobID != "job-9" ||
		!strings.Contains(recs[0].Policy, rev.ID) || recs[0].RequestID != "req-delete-1" {
		t.Fatalf("unrevoked records: %+v", recs)
	}
	// An unknown id is refused before anything is recorded.
	if code, _, _ := adminJSON(t, "DELETE", srv.URL+"/v1/revocations/rev_nope", ""); code != 404 {
		t.Fatalf("delete unknown: %d", code)
	}
	if n := len(auditRecords(t, srv.URL, "")); n != 2 {
		t.Fatalf("trail holds %d records, want 2", n)
	}

	code, out, stderr := runCLI(t, "audit", "query", "--config", path, "--outcome", "revoked")
	if code != 0 || !strings.Contains(out, "revocation.add") || !strings.Contains(out, "job-9") || !strings.Contains(out, "dev-admin") {
		t.Fatalf("audit query --outcome revoked: %d\n%s%s", code, out, stderr)
	}

	srv.Close()
	a.close()
	closed = true
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, stderr)
	}
}

// TestRevocationsWhenTheAuditTrailFails: an added revocation stays in force
// but the answer says it is unrecorded; a deletion is refused (503
// AuditUnavailable) and the revocation stays.
func TestRevocationsWhenTheAuditTrailFails(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	a, srv := startAuditApp(t, path)
	defer func() { srv.Close(); a.close() }()

	code, body, _ := adminJSON(t, "POST", srv.URL+"/v1/revocations", `{"kind":"org","value":"acme","reason":"incident"}`)
	if code != 201 {
		t.Fatalf("add: %d %s", code, body)
	}
	var kept api.RevocationView
	_ = json.Unmarshal(body, &kept)

	// The audit store goes away (the revocation table is a separate
	// connection and keeps working).
	if err := a.trail.Close(); err != nil {
		t.Fatal(err)
	}
	code, body, hdr := adminJSON(t, "POST", srv.URL+"/v1/revocations", `{"kind":"job","value":"job-1","reason":"incident"}`)
	var rev api.RevocationView
	if err := json.Unmarshal(body, &rev); err != nil {
		t.Fatal(err)
	}
	if code != 201 || hdr.Get("X-Dispenser-Warning") != "audit_unrecorded" || len(rev.Warnings) != 1 || rev.Warnings[0] != "audit_unrecorded" || !rev.Active {
		t.Fatalf("add with the trail down: %d %v %s", code, hdr, body)
	}
	if _, ok := a.revocations.Check(revoke.Subject{JobID: "job-1"}); !ok {
		t.Fatal("an unrecorded revocation is not in force")
	}

	code, body, hdr = adminJSON(t, "DELETE", srv.URL+"/v1/revocations/"+kept.ID, "")
	if code != 503 || !strings.Contains(string(body), `"AuditUnavailable"`) || hdr.Get("Retry-After") == "" {
		t.Fatalf("delete with the trail down: %d %s", code, body)
	}
	if _, ok := a.revocations.Check(revoke.Subject{Org: "acme"}); !ok {
		t.Fatal("a revocation was lifted without an audit record")
	}
	code, body, _ = adminJSON(t, "GET", srv.URL+"/v1/revocations", "")
	if code != 200 || !strings.Contains(string(body), kept.ID) {
		t.Fatalf("list: %d %s", code, body)
	}
}

// TestRevokeCLIRecordsInAuditTrail: the break-glass CLI records its changes
// in its own audit log (revoke-cli), anchored, so they are queryable and
// `audit verify` passes.
func TestRevokeCLIRecordsInAuditTrail(t *testing.T) {
	dir := t.TempDir()
	path := opsTestConfig(t, dir, "", "")
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	code, out, stderr := runCLI(t, "revoke", "add", "--config", path, "--kind", "access_key_id", "--value", "ASIALEAKED0000000001", "--reason", "leaked in a log")
	if code != 0 {
		t.Fatalf("revoke add: %d %s", code, stderr)
	}
	id := strings.Fields(out)[0]
	if code, _, stderr := runCLI(t, "revoke", "delete", "--config", path, "--id", id); code != 0 {
		t.Fatalf("revoke delete: %d %s", code, stderr)
	}
	for _, q := range []struct {
		outcome audit.Outcome
		op      string
	}{{audit.Revoked, revoke.OpAdd}, {audit.Unrevoked, revoke.OpDelete}} {
		code, out, stderr := runCLI(t, "audit", "query", "--config", path, "--outcome", string(q.outcome), "--format", "json")
		var p audit.Page
		if code != 0 || json.Unmarshal([]byte(out), &p) != nil || len(p.Records) != 1 {
			t.Fatalf("audit query --outcome %s: %d %s %s", q.outcome, code, out, stderr)
		}
		r := p.Records[0]
		if !strings.HasPrefix(r.ID, cliLog+":") || r.Operation != q.op || !strings.HasPrefix(r.Principal, "cli") ||
			r.AccessKeyID != "ASIALEAKED0000000001" || r.RequestID != id {
			t.Fatalf("%s record %+v", q.outcome, r)
		}
	}
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 || !strings.Contains(out, "log "+cliLog+": ok") {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, stderr)
	}
}
