package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/vend/assumerole"
	"github.com/vtk/dispenser/internal/vend/cache"
)

// TestAssumeRoleExampleAndItsChecks runs check-config's loader on
// examples/assume-role.yaml and on broken variants of it.
func TestAssumeRoleExampleAndItsChecks(t *testing.T) {
	t.Chdir("../..")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	b, err := os.ReadFile("examples/assume-role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig("examples/assume-role.yaml"); err != nil {
		t.Fatalf("the example is invalid: %v", err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"tenant without role", "    role_arn: arn:aws:iam::222222222222:role/vtk-dispenser-target\n", "", "tenants[0].role_arn: is required"},
		{"bad role ARN", "arn:aws:iam::222222222222:role/vtk-dispenser-target", "arn:aws:iam::2222:role/x", "tenants[0].role_arn"},
		{"bad external id", "external_id: acme-vtk-api-name", "external_id: 'a b c'", "tenants[0].external_id"},
		{"tenant longer than backend", "    max_duration: 1h\n    default_duration: 1h", "    max_duration: 2h\n    default_duration: 1h", "tenants[0].max_duration"},
		{"backend duration", "max_duration: 1h      # role", "max_duration: 20h      # role", "backends.default.max_duration"},
		{"backend region", "region: eu-central-1", "region: europe", "backends.default.region"},
		{"cache floor", "min_remaining: 20m  # never", "min_remaining: 1m  # never", "backends.default.cache.min_remaining"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(b), tc.old) {
				t.Fatalf("example no longer contains %q", tc.old)
			}
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), tc.old, tc.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a problem at %s, got %v", tc.want, err)
			}
		})
	}
}

// TestNewAppWrapsAssumeRoleInTheCache: serve's wiring puts the credential
// cache (with the server floor) in front of an assume-role backend.
func TestNewAppWrapsAssumeRoleInTheCache(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	// A copy beside its key: newApp opens the audit database the example
	// names beside itself, which must not land in examples/.
	dir := t.TempDir()
	copyDevKeys(t, dir)
	b, err := os.ReadFile("../../examples/assume-role.yaml")
	must(t, err)
	path := filepath.Join(dir, "assume-role.yaml")
	must(t, os.WriteFile(path, b, 0o600))
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	c, ok := a.vendor["default"].(*cache.Cache)
	if !ok {
		t.Fatalf("assume-role backend not cached: %T", a.vendor["default"])
	}
	if _, ok := c.Unwrap().(*assumerole.Vendor); !ok || c.Floor() != 20*time.Minute {
		t.Fatalf("cache wraps %T with floor %s", c.Unwrap(), c.Floor())
	}
}
