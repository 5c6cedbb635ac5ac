package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestAdminInputNULAndInvalidUTF8 sends NUL and invalid UTF-8 in every
// admin input (revocation value, reason, id; audit filters; receipt id) to
// a dispenser on SQLite and on PostgreSQL: each is a 400 in the contract's
// shape on both, never a store error (PostgreSQL refuses NUL in text, so
// the same request was a 503 there and a 400 or 404 on SQLite).
func TestAdminInputNULAndInvalidUTF8(t *testing.T) {
	stores := map[string]func(t *testing.T, dir string) string{
		"sqlite": func(t *testing.T, dir string) string { return "" },
		"postgres": func(t *testing.T, dir string) string {
			dsn := testenv.PostgresSchema(t, "dispenser_admininput_")
			key := filepath.Join(dir, "checkpoint.key")
			if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
				t.Fatal(err)
			}
			return "audit:\n  type: postgres\n  dsn: " + dsn + "\n  anchor_dir: " + dir + "/anchors\n  checkpoint:\n    signing_key_file: " + key + "\n"
		},
	}
	calls := []struct{ name, method, path, body string }{
		{"revocation value with NUL", "POST", "/v1/revocations", `{"kind":"job","value":"job\u0000-1","reason":"r"}`},
		{"revocation reason with NUL", "POST", "/v1/revocations", `{"kind":"job","value":"job-1","reason":"because\u0000"}`},
		{"revocation value with invalid UTF-8", "POST", "/v1/revocations", "{\"kind\":\"job\",\"value\":\"job-\xff\",\"reason\":\"r\"}"},
		{"revocation reason with invalid UTF-8", "POST", "/v1/revocations", "{\"kind\":\"job\",\"value\":\"job-1\",\"reason\":\"\xfe\xff\"}"},
		{"revocation kind with NUL", "POST", "/v1/revocations", `{"kind":"job\u0000","value":"job-1","reason":"r"}`},
		{"delete id with NUL", "DELETE", "/v1/revocations/rev_1%00", ""},
		{"delete id with invalid UTF-8", "DELETE", "/v1/revocations/rev_%FF", ""},
		{"audit filter with NUL", "GET", "/v1/audit?job_id=a%00", ""},
		{"audit filter with invalid UTF-8", "GET", "/v1/audit?principal=%FF", ""},
		{"audit cursor with NUL", "GET", "/v1/audit?cursor=%00", ""},
		{"receipt id with NUL", "GET", "/v1/audit/main:1%00/proof", ""},
		{"receipt id with invalid UTF-8", "GET", "/v1/audit/main:%FF/proof", ""},
	}
	for name, auditYAML := range stores {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, srv := startOpsApp(t, opsTestConfig(t, dir, auditYAML(t, dir), ""))
			for _, c := range calls {
				code, body := opsCall(t, srv, c.method, c.path, adminToken, c.body)
				if code != 400 || !strings.Contains(body, `"code":"InvalidRequest"`) {
					t.Errorf("%s: %d %s, want 400 InvalidRequest", c.name, code, body)
				}
			}
			// Nothing was stored, and the stores still answer.
			if code, body := opsCall(t, srv, "GET", "/v1/revocations", adminToken, ""); code != 200 || strings.Contains(body, `"id"`) {
				t.Fatalf("revocations after the refusals: %d %s, want an empty list", code, body)
			}
			if code, body := opsCall(t, srv, "POST", "/v1/revocations", adminToken, `{"kind":"job","value":"job-1","reason":"r"}`); code != 201 {
				t.Fatalf("a valid revocation: %d %s", code, body)
			}
		})
	}
}
