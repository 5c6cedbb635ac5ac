package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/validate"
)

// minimal is a valid configuration with a HMAC key from the environment.
const minimal = `
auth:
  jwt:
    issuer: https://issuer.test
    audience: dispenser
    keys:
      - hmac_secret_env: CONFIG_TEST_HMAC
backends:
  default: {type: mock}
tenants:
  - org: acme
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get]
`

func TestParseDefaults(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if s.Listen != "127.0.0.1:8080" || s.MinRemaining.D() != 20*time.Minute || s.MaxBodyBytes != 64<<10 ||
		s.ReadHeaderTimeout.D() != 5*time.Second || s.ShutdownTimeout.D() != 20*time.Second || s.ReplicaID == "" {
		t.Fatalf("server defaults %+v", s)
	}
	if c.Log.Level != "info" || c.Log.Format != "json" {
		t.Fatalf("log defaults %+v", c.Log)
	}
	j := c.Auth.JWT
	if j.Leeway.D() != 30*time.Second || j.PrincipalClaim != "sub" || j.OrgClaim != "org" || j.JobIDClaim != "job_id" ||
		j.JWKSRefresh.D() != 5*time.Minute || j.JWKSMinInterval.D() != time.Minute || j.JWKSTimeout.D() != 5*time.Second {
		t.Fatalf("jwt defaults %+v", j)
	}
	if c.Tenants[0].Backend != "default" || c.Tenants[0].MaxDuration.D() != time.Hour {
		t.Fatalf("tenant defaults %+v", c.Tenants[0])
	}
	if c.Audit.Type != "sqlite" || c.Audit.MinFreeSpace == nil || *c.Audit.MinFreeSpace != 256<<20 {
		t.Fatalf("audit defaults %+v", c.Audit)
	}
	if s.MaxConnections != 0 || s.MaxConnectionsPerClient != nil || s.AdminMaxConnections != 64 || len(s.TrustedProxies) != 0 {
		t.Fatalf("connection defaults %+v", s)
	}
}

func TestParseProblems(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", "short")
	cases := []struct {
		name  string
		yaml  string
		paths []string
	}{
		{"empty file", "", []string{"auth", "tenants", "backends"}},
		{"plain HTTP on a public address", minimal + "server: {listen: 0.0.0.0:8080}\n", []string{"server.listen", "auth.jwt.keys[0]"}},
		{"server limits", minimal + "server: {listen: nope, min_remaining: 1m, max_body_bytes: 10, shutdown_delay: -1s}\nlog: {level: loud, format: xml}\n",
			[]string{"server.listen", "server.min_remaining", "server.max_body_bytes", "server.shutdown_delay", "log.level", "log.format"}},
		{"half TLS", minimal + "server: {tls: {cert_file: /nonexistent.pem}}\n", []string{"server.tls", "server.tls.cert_file"}},
		{"tenant default under the floor", strings.Replace(minimal, "  - org: acme\n", "  - org: acme\n    max_duration: 15m\n", 1),
			[]string{"tenants[0].default_duration"}},
		// A session exactly as long as the floor (or a few seconds longer)
		// has less than the floor left once STS (or the mock) answers and
		// its Expiration is cut to whole seconds: every request would fail.
		{"tenant default equal to the floor", strings.Replace(minimal, "  - org: acme\n", "  - org: acme\n    default_duration: 20m\n", 1),
			[]string{"tenants[0].default_duration"}},
		{"tenant default seconds above the floor", strings.Replace(minimal, "  - org: acme\n", "  - org: acme\n    default_duration: 20m5s\n", 1),
			[]string{"tenants[0].default_duration"}},
		{"duplicate org", minimal + "  - org: acme\n    grants: [{bucket: media, prefixes: [\"x/\"], operations: [get]}]\n", []string{"tenants[1].org"}},
		{"admin audience equals worker audience", minimal + "admin:\n  jwt: {issuer: i, audience: dispenser, keys: [{hmac_secret_env: CONFIG_TEST_HMAC}]}\n",
			[]string{"admin.jwt.audience"}},
		{"audit postgres without dsn", minimal + "audit: {type: postgres}\n", []string{"audit.dsn"}},
		{"connection and proxy limits", minimal + "server: {trusted_proxies: [0.0.0.0/0], max_connections: 3, max_connections_per_client: -1, admin_max_connections: 2}\n",
			[]string{"server.trusted_proxies", "server.max_connections", "server.max_connections_per_client", "server.admin_max_connections"}},
		{"free-space floor on postgres", minimal + "audit: {type: postgres, dsn: postgres://x, min_free_space: 1GiB}\n", []string{"audit.min_free_space"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			var ve *validate.Error
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a validation error", err)
			}
			if c == nil {
				t.Fatal("no config returned with validation problems")
			}
			got := map[string]bool{}
			for _, p := range ve.Problems {
				got[p.Path] = true
			}
			for _, p := range tc.paths {
				if !got[p] {
					t.Errorf("no problem at %s; got %v", p, ve.Problems)
				}
			}
		})
	}
}

func TestParseTenantDefaultAboveTheFloor(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	if _, err := Parse([]byte(strings.Replace(minimal, "  - org: acme\n", "  - org: acme\n    default_duration: 21m\n", 1))); err != nil {
		t.Fatal(err)
	}
}

func TestParseBehindProxy(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	if _, err := Parse([]byte(minimal + "server: {listen: 0.0.0.0:8080, behind_tls_proxy: true}\n")); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejectsUnknownKeysAndBadYAML(t *testing.T) {
	// A syntax error leaves nothing to check.
	if c, err := Parse([]byte("server: [\n")); err == nil || c != nil {
		t.Errorf("got %v, %v", c, err)
	}
	// Unknown keys and undecodable values are problems like any other.
	for y, path := range map[string]string{minimal + "srever: {}\n": "srever", minimal + "server: {listen: 1, min_remaining: forever}\n": "server.min_remaining"} {
		c, err := Parse([]byte(y))
		var ve *validate.Error
		if !errors.As(err, &ve) || c == nil || !strings.Contains(err.Error(), path+":") {
			t.Errorf("%q: got %v, %v", y, c, err)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Path != p {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
	// A file with problems still returns the config (for check-config).
	if err := os.WriteFile(p, []byte(minimal+"log: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(p)
	if err == nil || c == nil || c.Path != p || !strings.Contains(err.Error(), p) {
		t.Fatalf("%v %v", c, err)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	// The README's first command, from the repository root.
	wd, _ := os.Getwd()
	t.Chdir(filepath.Join(wd, "..", ".."))
	if _, err := Load("examples/local.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestIsLoopback(t *testing.T) {
	for h, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, "127.1.2.3": true, "0.0.0.0": false, "10.0.0.1": false, "example.com": false, "": false} {
		if IsLoopback(h) != want {
			t.Errorf("IsLoopback(%q) != %v", h, want)
		}
	}
}
