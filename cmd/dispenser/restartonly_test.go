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
	// Putting the dispenser behind a TLS proxy it does not trust turns the
	// unset failed-auth budget off, which only a restart applies: the
	// reload must say so.
	cur = base()
	cur.Server.BehindTLSProxy = true
	if got := restartOnly(old, cur); !slices.Contains(got, "rate_limits.auth_failures_per_client") {
		t.Errorf("behind_tls_proxy added by reload leaves the budget on unannounced: %v", got)
	}
	cur = base()
	cur.RateLimits.DenialRecords = &ratelimit.Limit{Rate: 1, Burst: 1}
	cur.RateLimits.DenialSummaryInterval *= 2
	got = restartOnly(old, cur)
	for _, want := range []string{"rate_limits.denial_records", "rate_limits.denial_summary_interval"} {
		if !slices.Contains(got, want) {
			t.Errorf("restartOnly = %v, missing %q", got, want)
		}
	}
	cur = base()
	cur.Server.MaxConnections = 100
	cur.Server.TrustedProxies = []string{"10.0.0.0/8"}
	if got := restartOnly(old, cur); !slices.Contains(got, "server") {
		t.Errorf("connection caps and trusted proxies are read at start: %v", got)
	}
}

// TestAuthFailureGuardDefault: on by default for direct callers, behind a
// gateway and behind a trusted proxy (the budget keys on what they
// assert); off by default only behind a TLS proxy the dispenser cannot see
// past; explicit settings win.
func TestAuthFailureGuardDefault(t *testing.T) {
	direct := &config.Config{}
	if authFailureGuard(direct) == nil {
		t.Error("direct callers: want the default guard")
	}
	gateway := &config.Config{}
	gateway.Server.BehindTLSProxy = true
	gateway.Auth.Gateway = &auth.GatewayConfig{}
	if authFailureGuard(gateway) == nil {
		t.Error("behind a gateway: want the default guard (keyed on the asserted caller)")
	}
	trusted := &config.Config{}
	trusted.Server.BehindTLSProxy = true
	trusted.Server.TrustedProxies = []string{"10.0.0.0/8"}
	if authFailureGuard(trusted) == nil {
		t.Error("behind a trusted proxy: want the default guard (keyed on the forwarded address)")
	}
	proxied := &config.Config{}
	proxied.Server.BehindTLSProxy = true
	if authFailureGuard(proxied) != nil {
		t.Error("behind an untrusted proxy: the guard must be off by default")
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
