package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestRequestTextReachesPostgresAuditSafely: job and task ids come from the
// request and are copied into the audit record (and its PostgreSQL text
// index columns) even when refused. Bytes PostgreSQL cannot store as text
// (invalid UTF-8, NUL, or a multi-byte character cut by truncation) must
// not fail the audit write: that answered 503 and, with group commit,
// failed every other request in the same batch.
func TestRequestTextReachesPostgresAuditSafely(t *testing.T) {
	dsn := testenv.PostgresSchema(t, "dispenser_audittext_")
	dir := t.TempDir()
	key := dir + "/checkpoint.key"
	if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
		t.Fatal(err)
	}
	auditYAML := "audit:\n  type: postgres\n  dsn: " + dsn +
		"\n  anchor_dir: " + dir + "/anchors\n  checkpoint:\n    signing_key_file: " + key + "\n"
	_, srv := startOpsApp(t, opsTestConfig(t, dir, auditYAML, ""))
	tok := token(t, "worker-1", "acme")
	base := "/credentials?operation=get&location=s3://media/acme/in/"
	cut := "a" + strings.Repeat("é", 64) // 129 bytes: truncation at 128 splits the last é
	for name, call := range map[string]struct{ method, path, body string }{
		"invalid UTF-8 job_id": {"GET", base + "&job_id=%FF%FE", ""},
		"NUL task_id":          {"GET", base + "&task_id=t%00", ""},
		"truncated job_id":     {"GET", base + "&job_id=" + url.QueryEscape(cut), ""},
		"NUL in JSON":          {"POST", "/credentials", `{"operation":"get","location":"s3://media/acme/in/","job_id":"j\u0000"}`},
	} {
		if code, body := opsCall(t, srv, call.method, call.path, tok, call.body); code != 400 {
			t.Errorf("%s: %d %s, want 400 (refused and recorded)", name, code, body)
		}
	}
	if code, body := opsCall(t, srv, "GET", base+"&job_id=job-1", tok, ""); code != 200 {
		t.Fatalf("valid request: %d %s", code, body)
	}
	// Identity claims are the issuer's, but a NUL in one must not fail the
	// audit write either: the principal is served, the unknown org refused.
	if code, body := opsCall(t, srv, "GET", base, token(t, "worker\x00-2", "acme"), ""); code != 200 {
		t.Errorf("NUL in the principal: %d %s, want 200", code, body)
	}
	if code, body := opsCall(t, srv, "GET", base, token(t, "worker-1", "ac\x00me"), ""); code != 403 {
		t.Errorf("NUL in the org: %d %s, want 403 (no such tenant, recorded)", code, body)
	}
}
