package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckConfig(t *testing.T) {
	good := testConfig(t, true)
	if code, out, errs := runCmd("check-config", "--config", good); code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("valid config: %d %q %q", code, out, errs)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	must(t, os.WriteFile(bad, []byte(`server:
  listen: 0.0.0.0:8080
  min_remaining: 1m
log:
  level: loud
auth:
  jwt:
    audience: dispenser
    keys:
      - public_key_file: /nonexistent/key.pem
backends:
  default:
    type: mock
  extra:
    type: teleporter
tenants:
  - org: acme
    role_arn: not-an-arn
    backend: missing
    grants:
      - bucket: Bad_Bucket
        prefixes: ["acme"]
        operations: [get, delete]
`), 0o600))
	code, _, errs := runCmd("check-config", "--config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, path := range []string{
		"server.listen", "server.min_remaining", "log.level", "auth.jwt.issuer", "auth.jwt.keys[0]",
		"backends.extra.type", "tenants[0].role_arn", "tenants[0].backend",
		"tenants[0].grants[0].bucket", "tenants[0].grants[0].prefixes[0]", "tenants[0].grants[0].operations[1]",
	} {
		if !strings.Contains(errs, path+":") {
			t.Errorf("no problem reported at %s", path)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", errs)
	}

	if code, _, errs := runCmd("check-config"); code != 2 || !strings.Contains(errs, "--config is required") {
		t.Fatalf("no --config: %d %q", code, errs)
	}
	syntax := filepath.Join(t.TempDir(), "syntax.yaml")
	must(t, os.WriteFile(syntax, []byte("server: [\n"), 0o600))
	if code, _, _ := runCmd("check-config", "--config", syntax); code != 1 {
		t.Fatalf("YAML syntax error exit %d", code)
	}
	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	must(t, os.WriteFile(unknown, []byte("srever: {}\n"), 0o600))
	if code, _, errs := runCmd("check-config", "--config", unknown); code != 1 || !strings.Contains(errs, "srever") {
		t.Fatalf("unknown key: %d %q", code, errs)
	}
}

func TestTokenCommand(t *testing.T) {
	withKey := testConfig(t, true)
	tok := mintToken(t, withKey, "--subject", "worker-1", "--org", "acme", "--job-id", "J1", "--ttl", "10m")
	claims := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, claims)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["kid"] != "e2e-1" || parsed.Method.Alg() != "EdDSA" || claims["sub"] != "worker-1" || claims["org"] != "acme" ||
		claims["job_id"] != "J1" || claims["iss"] != "https://dispenser.test/e2e" || claims["aud"] != "dispenser" {
		t.Fatalf("token header %v claims %v", parsed.Header, claims)
	}
	if _, ok := claims["task_id"]; ok {
		t.Fatal("task_id set without --task-id")
	}

	noKey := testConfig(t, false)
	code, out, errs := runCmd("token", "--config", noKey, "--subject", "w", "--org", "acme")
	if code != 1 || out != "" || !strings.Contains(errs, "signing_key_file") {
		t.Fatalf("without signing key: %d %q %q", code, out, errs)
	}
	if code, _, _ := runCmd("token", "--config", withKey, "--org", "acme"); code != 2 {
		t.Fatalf("missing --subject: exit %d", code)
	}
}

func TestPolicyCommand(t *testing.T) {
	path := testConfig(t, false)
	code, out, errs := runCmd("policy", "--config", path, "--org", "acme", "--location", "s3://media/acme/in/", "--operation", "get")
	if code != 0 || !strings.Contains(out, `"arn:aws:s3:::media/acme/in/*"`) {
		t.Fatalf("policy: %d %q %q", code, out, errs)
	}
	code, _, errs = runCmd("policy", "--config", path, "--org", "acme", "--location", "s3://media/other/", "--operation", "put")
	if code != 1 || !strings.Contains(errs, "AccessDenied") {
		t.Fatalf("denied policy: %d %q", code, errs)
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := runCmd(); code != 2 {
		t.Fatal("no args")
	}
	if code, _, errs := runCmd("frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatal("unknown command")
	}
	if code, out, _ := runCmd("version"); code != 0 || strings.TrimSpace(out) == "" {
		t.Fatal("version")
	}
}

func TestListenOverrideIsValidatedInsteadOfTheFile(t *testing.T) {
	path := testConfig(t, false)
	b, err := os.ReadFile(path)
	must(t, err)
	public := filepath.Join(t.TempDir(), "public.yaml")
	must(t, os.WriteFile(public, []byte(strings.Replace(string(b), "listen: 127.0.0.1:0", "listen: 0.0.0.0:8080", 1)), 0o600))
	if _, err := loadConfigWithListen(public, ""); err == nil || !strings.Contains(err.Error(), "server.listen") {
		t.Fatalf("public plain-HTTP listener accepted: %v", err)
	}
	c, err := loadConfigWithListen(public, "127.0.0.1:9")
	if err != nil || c.Server.Listen != "127.0.0.1:9" {
		t.Fatalf("--listen 127.0.0.1:9: %v", err)
	}
	if _, err := loadConfigWithListen(path, "0.0.0.0:9"); err == nil {
		t.Fatal("--listen 0.0.0.0 without TLS accepted")
	}
}

func TestReloadKeepsRunningConfigOnBadFile(t *testing.T) {
	path := testConfig(t, false)
	cfg, err := loadConfig(path)
	must(t, err)
	a, err := newApp(cfg, zap.NewNop())
	must(t, err)
	before := a.server.Rules()
	b, _ := os.ReadFile(path)
	must(t, os.WriteFile(path, []byte(strings.Replace(string(b), "prefixes: [\"acme/\"]", "prefixes: [\"acme\"]", 1)), 0o600))
	if err := a.reload(); err == nil || a.server.Rules() != before {
		t.Fatalf("bad reload: %v", err)
	}
	must(t, os.WriteFile(path, []byte(strings.Replace(string(b), "prefixes: [\"acme/\"]", "prefixes: [\"acme/\", \"shared/\"]", 1)), 0o600))
	must(t, a.reload())
	if a.server.Rules() == before {
		t.Fatal("good reload did not swap the rules")
	}
}

// TestAdminListenOverrideIsValidated: --admin-listen goes through the same
// validation as the file's server.admin_listen.
func TestAdminListenOverrideIsValidated(t *testing.T) {
	path := testConfig(t, false)
	if _, err := loadConfigWithListen(path, "", "not-an-address"); err == nil || !strings.Contains(err.Error(), "server.admin_listen") {
		t.Fatalf("--admin-listen not-an-address: %v", err)
	}
	c, err := loadConfigWithListen(path, "", "127.0.0.1:19")
	if err != nil || c.Server.AdminListen != "127.0.0.1:19" {
		t.Fatalf("--admin-listen 127.0.0.1:19: %v %v", c, err)
	}
}
