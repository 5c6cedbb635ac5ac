package main

import (
	"strings"
	"testing"
)

// TestRevokeListSaysWhenEmpty: an empty list is said so (on stderr, so
// stdout stays one revocation per line for scripts), with and without
// --all, instead of printing nothing.
func TestRevokeListSaysWhenEmpty(t *testing.T) {
	path := opsTestConfig(t, t.TempDir(), "", "")
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	for args, want := range map[string]string{
		"--all": "no revocations\n",
		"":      "no active revocations (--all also lists expired ones)\n",
	} {
		argv := []string{"revoke", "list", "--config", path}
		if args != "" {
			argv = append(argv, args)
		}
		code, out, errs := runCmd(argv...)
		if code != 0 || out != "" || errs != want {
			t.Errorf("revoke list %s: exit %d stdout %q stderr %q, want stderr %q", args, code, out, errs, want)
		}
	}
}

// TestTokenRefusesNonPositiveAndAbsurdTTL: `dispenser token --ttl -1h`
// minted an already expired token without a word.
func TestTokenRefusesNonPositiveAndAbsurdTTL(t *testing.T) {
	path := testConfig(t, true)
	for _, ttl := range []string{"-1h", "0s", "-1s", "25h", "8760h"} {
		code, out, errs := runCmd("token", "--config", path, "--subject", "w", "--org", "acme", "--ttl", ttl)
		if code != 2 || out != "" || !strings.Contains(errs, "--ttl must be between 1s and 24h") {
			t.Errorf("--ttl %s: exit %d stdout %q stderr %q", ttl, code, out, errs)
		}
	}
	for _, ttl := range []string{"1s", "15m", "24h"} {
		if code, out, errs := runCmd("token", "--config", path, "--subject", "w", "--org", "acme", "--ttl", ttl); code != 0 || strings.Count(out, ".") != 2 {
			t.Errorf("--ttl %s: exit %d %q %s", ttl, code, out, errs)
		}
	}
}

// TestAuditQueryTextShowsNoEmptyLocation: a record without a bucket (a
// refused authentication) shows "-" in the LOCATION column, not "s3:///".
func TestAuditQueryTextShowsNoEmptyLocation(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	a, srv := startAuditApp(t, path)
	if code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", "not-a-token"); code != 401 {
		t.Fatalf("bad token: %d %s", code, body)
	}
	srv.Close()
	a.close()
	code, out, errs := runCLI(t, "audit", "query", "--config", path)
	if code != 0 {
		t.Fatalf("audit query: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "denied") {
		t.Fatalf("output:\n%s", out)
	}
	if strings.Contains(out, "s3:///") {
		t.Errorf("an empty location is shown as s3:///:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 11 || f[9] != "-" {
		t.Errorf("LOCATION column %q, want -:\n%s", f, out)
	}
}

// TestRevokeCLILogsOnlyWarnings: the revoke command talks to a person. Its
// warnings (a generated checkpoint key, a checkpoint not anchored) go to
// the command's stderr as plain lines; the JSON info lines of the server's
// logger ("audit log resumed", "revocation changed") do not appear at all.
func TestRevokeCLILogsOnlyWarnings(t *testing.T) {
	// No checkpoint key configured: one is generated beside the
	// database, with the warning an operator must see.
	path := testConfig(t, true)
	code, out, errs := runCmd("revoke", "add", "--config", path, "--kind", "job", "--value", "J1", "--reason", "test")
	if code != 0 || !strings.Contains(out, "J1") {
		t.Fatalf("revoke add: exit %d stdout %q stderr %q", code, out, errs)
	}
	if !strings.Contains(errs, "generated an audit checkpoint signing key") {
		t.Errorf("the generated-key warning did not reach the command's stderr: %q", errs)
	}
	if strings.Contains(errs, `"level"`) || strings.Contains(errs, "revocation changed") || strings.Contains(errs, "audit log resumed") {
		t.Errorf("info or JSON log lines on the command's stderr: %q", errs)
	}
}
