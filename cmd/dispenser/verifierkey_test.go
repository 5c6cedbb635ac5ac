package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/vtk/dispenser/internal/audit"
)

// verifierKeyConfig writes a minimal configuration in a temporary
// directory whose audit section is auditYAML, and returns its path.
func verifierKeyConfig(t *testing.T, auditYAML string) string {
	t.Helper()
	pub, err := filepath.Abs("../../examples/dev-jwt-verify.DEV-ONLY.pub.pem")
	must(t, err)
	yml := `auth:
  jwt:
    issuer: https://dispenser.test/vk
    audience: dispenser
    keys:
      - kid: k1
        public_key_file: ` + pub + `
        algorithms: [EdDSA]
backends:
  default: {type: mock}
tenants:
  - org: acme
    grants:
      - {bucket: media, prefixes: ["acme/"], operations: [get]}
audit:
` + auditYAML
	p := filepath.Join(t.TempDir(), "dispenser.yaml")
	must(t, os.WriteFile(p, []byte(yml), 0o600))
	return p
}

func TestAuditVerifierKey(t *testing.T) {
	t.Run("configured key", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "checkpoint.key")
		var keygen, errb bytes.Buffer
		if code := run([]string{"audit", "keygen", "--out", keyFile, "--name", "acme-audit"}, &keygen, &errb); code != 0 {
			t.Fatalf("keygen exited %d: %s", code, errb.String())
		}
		path := verifierKeyConfig(t, "  type: sqlite\n  path: audit.db\n  checkpoint:\n    signing_key_file: "+keyFile+"\n")
		var out bytes.Buffer
		if code := run([]string{"audit", "verifier-key", "--config", path}, &out, &errb); code != 0 {
			t.Fatalf("verifier-key exited %d: %s", code, errb.String())
		}
		vkey := strings.TrimSpace(out.String())
		if !strings.Contains(keygen.String(), "\n"+vkey+"\n") {
			t.Errorf("verifier-key printed %q; keygen printed the verifier key in %q", vkey, keygen.String())
		}
		v, err := note.NewVerifier(vkey)
		if err != nil || v.Name() != "acme-audit" {
			t.Fatalf("the printed key is not the verifier key of acme-audit: %v %v", v, err)
		}
		skey, err := os.ReadFile(keyFile)
		must(t, err)
		if strings.Contains(out.String(), strings.TrimSpace(string(skey))) || strings.Contains(out.String(), "PRIVATE") {
			t.Fatalf("verifier-key printed the signing key: %q", out.String())
		}
		// The key verifies what the configured signer signs.
		signer, _, err := audit.LoadSigner(keyFile)
		must(t, err)
		msg, err := note.Sign(&note.Note{Text: "checkpoint\n"}, signer)
		must(t, err)
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
			t.Fatalf("the printed key does not verify the signing key's signature: %v", err)
		}
	})

	t.Run("SQLite default key, before and after the first start", func(t *testing.T) {
		path := verifierKeyConfig(t, "  type: sqlite\n  path: audit.db\n")
		keyFile := filepath.Join(filepath.Dir(path), "audit.db.checkpoint-key")
		var out, errb bytes.Buffer
		if code := run([]string{"audit", "verifier-key", "--config", path}, &out, &errb); code != 1 {
			t.Fatalf("before the key exists: exit %d, want 1 (stdout %q)", code, out.String())
		}
		if !strings.Contains(errb.String(), keyFile) || !strings.Contains(errb.String(), "first start") {
			t.Errorf("before the key exists, stderr should name %s and say the first start makes it: %q", keyFile, errb.String())
		}
		if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
			t.Fatalf("verifier-key created the signing key (it must only read): %v", err)
		}
		// What the first start does (the serve path generates this key).
		want, err := audit.GenerateKey(keyFile, "dispenser-audit")
		must(t, err)
		out.Reset()
		errb.Reset()
		// Run from another directory: the key is found beside the database.
		t.Chdir(t.TempDir())
		if code := run([]string{"audit", "verifier-key", "--config", path}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if got := strings.TrimSpace(out.String()); got != want {
			t.Fatalf("printed %q, want the generated key's verifier key %q", got, want)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		unreadable := verifierKeyConfig(t, "  type: sqlite\n  path: audit.db\n  checkpoint:\n    signing_key_file: missing.key\n")
		garbage := verifierKeyConfig(t, "  type: sqlite\n  path: audit.db\n  checkpoint:\n    signing_key_file: bad.key\n")
		must(t, os.WriteFile(filepath.Join(filepath.Dir(garbage), "bad.key"), []byte("not a key\n"), 0o600))
		badConfig := verifierKeyConfig(t, "  type: sqlit\n")
		for _, tc := range []struct {
			name   string
			args   []string
			code   int
			stderr string
		}{
			{"no --config", nil, 2, "--config is required"},
			{"extra argument", []string{"--config", unreadable, "extra"}, 2, `unexpected argument "extra"`},
			{"unknown flag", []string{"--key", "x"}, 2, "flag provided but not defined"},
			{"configured key missing", []string{"--config", unreadable}, 1, "missing.key"},
			{"not a signing key", []string{"--config", garbage}, 1, "bad.key"},
			{"invalid configuration", []string{"--config", badConfig}, 1, "audit.type"},
		} {
			var out, errb bytes.Buffer
			code := run(append([]string{"audit", "verifier-key"}, tc.args...), &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.stderr) || out.Len() != 0 {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and stderr containing %q", tc.name, code, out.String(), errb.String(), tc.code, tc.stderr)
			}
		}
	})
}
