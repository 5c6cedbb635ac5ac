package main

import (
	"slices"
	"testing"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/ratelimit"
)

// TestRestartOnlyNamesIgnoredChanges: a reload must say which changed
// settings it did not apply, instead of reporting a plain success.
func TestRestartOnlyNamesIgnoredChanges(t *testing.T) {
	base := func() *config.Config {
		c, err := config.Parse([]byte(`
server: {listen: "127.0.0.1:8080", tls: {cert_file: "", key_file: ""}}
auth: {jwt: {issuer: i, audience: a, jwks_url: "https://idp.example/jwks"}}
backends:
  sts: {type: assume-role, region: us-east-1}
tenants:
  - org: acme
    backend: sts
    role_arn: arn:aws:iam::111122223333:role/r
    grants: [{bucket: media, prefixes: ["acme/"], operations: [get]}]
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := base()
	if got := restartOnly(old, base()); len(got) != 0 {
		t.Fatalf("identical configs: %v", got)
	}
	cur := base()
	cur.Server.MinRemaining *= 2
	cur.Log.Level = "debug"
	cur.Server.TLS = config.TLSConfig{CertFile: "new.pem", KeyFile: "new.key"} // applied by reload
	got := restartOnly(old, cur)
	for _, want := range []string{"server", "log"} {
		if !slices.Contains(got, want) {
			t.Errorf("restartOnly = %v, missing %q", got, want)
		}
	}
	cur = base()
	cur.Server.TLS = config.TLSConfig{CertFile: "new.pem", KeyFile: "new.key"}
	if got := restartOnly(old, cur); len(got) != 0 {
		t.Errorf("a certificate change is applied by reload, got %v", got)
	}
	cur = base()
	if err := cur.Backends["sts"].Options.Content[3].Encode("eu-west-1"); err != nil {
		t.Fatal(err)
	}
	if got := restartOnly(old, cur); !slices.Contains(got, "backends.sts") {
		t.Errorf("backend option change not named: %v", got)
	}
	// Adding a gateway turns the unset failed-auth budget off, which only
	// a restart applies: the reload must say so.
	cur = base()
	cur.Auth.Gateway = &auth.GatewayConfig{}
	if got := restartOnly(old, cur); !slices.Contains(got, "rate_limits.auth_failures_per_client") {
		t.Errorf("a gateway added by reload leaves the budget on unannounced: %v", got)
	}
}

// TestAuthFailureGuardDefault: on by default for direct callers, off by
// default behind a proxy or gateway, explicit settings win.
func TestAuthFailureGuardDefault(t *testing.T) {
	direct := &config.Config{}
	if authFailureGuard(direct) == nil {
		t.Error("direct callers: want the default guard")
	}
	proxied := &config.Config{}
	proxied.Server.BehindTLSProxy = true
	if authFailureGuard(proxied) != nil {
		t.Error("behind a proxy: the guard must be off by default")
	}
	proxied.RateLimits.AuthFailuresPerClient = &ratelimit.Limit{Rate: 1, Burst: 5}
	if authFailureGuard(proxied) == nil {
		t.Error("an explicit setting must win")
	}
	direct.RateLimits.AuthFailuresPerClient = &ratelimit.Limit{}
	if authFailureGuard(direct) != nil {
		t.Error("rate 0 must turn it off")
	}
}
