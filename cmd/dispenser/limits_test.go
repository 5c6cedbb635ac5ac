package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/api"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
)

// TestConnectionCaps: the caps derived from the descriptor limit and the
// configuration, the per-client default (off behind a TLS proxy the
// dispenser cannot see past), the proxies it exempts (following the
// configuration in force), and explicit caps the limit cannot hold.
func TestConnectionCaps(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, c := range []struct {
		name           string
		edit           func(*config.Config)
		nofile         uint64
		max, perClient int
		err            string
		exempt, capped string // addresses the per-client cap skips / counts
	}{
		{name: "direct callers", nofile: 20000, max: 4096, perClient: 409, capped: "10.0.0.1"},
		{name: "low descriptor limit", nofile: 512, max: 192, perClient: 19},
		{name: "too low to serve", nofile: 300, err: "raise RLIMIT_NOFILE"},
		{name: "explicit caps", nofile: 20000, edit: func(c *config.Config) {
			c.Server.MaxConnections, c.Server.MaxConnectionsPerClient, c.Server.AdminMaxConnections = 1000, n(0), 8
		}, max: 1000, perClient: 0},
		{name: "explicit cap over the limit", nofile: 1024, edit: func(c *config.Config) { c.Server.MaxConnections = 1000 }, err: "exceed the descriptor limit (1024)"},
		{name: "behind an untrusted proxy", nofile: 20000, edit: func(c *config.Config) { c.Server.BehindTLSProxy = true }, max: 4096, perClient: 0},
		{name: "behind a trusted proxy", nofile: 20000, edit: func(c *config.Config) {
			c.Server.BehindTLSProxy, c.Server.TrustedProxies = true, []string{"10.0.0.0/8"}
		}, max: 4096, perClient: 409, exempt: "10.1.2.3", capped: "192.0.2.1"},
		{name: "behind a gateway", nofile: 20000, edit: func(c *config.Config) {
			c.Auth.Gateway = &auth.GatewayConfig{TrustedProxies: []string{"172.16.0.0/12"}}
		}, max: 4096, perClient: 409, exempt: "172.16.9.9", capped: "10.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{}
			cfg.ApplyDefaults()
			if c.edit != nil {
				c.edit(cfg)
			}
			apiCap, adminCap, err := connectionCaps(cfg, c.nofile, func() *config.Config { return cfg })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || apiCap.Max != c.max || apiCap.MaxPerClient != c.perClient || adminCap.Max != cfg.Server.AdminMaxConnections || adminCap.MaxPerClient != 0 {
				t.Fatalf("api %d/%d admin %d/%d (%v), want api %d/%d", apiCap.Max, apiCap.MaxPerClient, adminCap.Max, adminCap.MaxPerClient, err, c.max, c.perClient)
			}
			if c.exempt != "" && !apiCap.Exempt(netip.MustParseAddr(c.exempt)) {
				t.Errorf("%s is a trusted proxy but capped per client", c.exempt)
			}
			if c.capped != "" && apiCap.Exempt(netip.MustParseAddr(c.capped)) {
				t.Errorf("%s exempted", c.capped)
			}
		})
	}
	// A reload that changes the gateway's proxies changes the exemption.
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	current := cfg
	apiCap, _, err := connectionCaps(cfg, 20000, func() *config.Config { return current })
	if err != nil || apiCap.Exempt(netip.MustParseAddr("172.16.9.9")) {
		t.Fatalf("exempt before the reload (%v)", err)
	}
	next := *cfg
	next.Auth.Gateway = &auth.GatewayConfig{TrustedProxies: []string{"172.16.0.0/12"}}
	current = &next
	if !apiCap.Exempt(netip.MustParseAddr("172.16.9.9")) {
		t.Fatal("the gateway added by a reload is still capped per client")
	}
	// server.trusted_proxies is restart-only, like the X-Forwarded-For
	// handling that trusts the same list: a reload that changes it changes
	// neither (it is named as restart-only instead).
	moved := next
	moved.Server.TrustedProxies = []string{"10.0.0.0/8"}
	current = &moved
	if apiCap.Exempt(netip.MustParseAddr("10.1.2.3")) {
		t.Fatal("a reload half-applied server.trusted_proxies to the connection cap")
	}
	if got := restartOnly(&next, &moved); !slices.Contains(got, "server") {
		t.Fatalf("restartOnly %v, want server named", got)
	}
}

// TestRequestCapsWiring: the HTTP/2 stream cap reaches the API server, and
// the in-flight authentication caps follow the failed-auth budget's rule
// (per-client cap off behind a proxy the dispenser cannot see past) and
// are named restart-only when a reload changes them.
func TestRequestCapsWiring(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, c := range []struct {
		name             string
		edit             func(*config.Config)
		perClient, total int
	}{
		{name: "defaults", perClient: 64, total: 1024},
		{name: "behind an untrusted proxy", edit: func(c *config.Config) { c.Server.BehindTLSProxy = true }, perClient: 0, total: 1024},
		{name: "behind a trusted proxy", edit: func(c *config.Config) {
			c.Server.BehindTLSProxy, c.Server.TrustedProxies = true, []string{"10.0.0.0/8"}
		}, perClient: 64, total: 1024},
		{name: "explicit", edit: func(c *config.Config) {
			c.RateLimits.AuthInFlight.PerClient, c.RateLimits.AuthInFlight.Total = n(5), n(0)
		}, perClient: 5, total: 0},
	} {
		cfg := &config.Config{}
		if c.edit != nil {
			c.edit(cfg)
		}
		cfg.ApplyDefaults()
		if per, total := authInFlightCaps(cfg); per != c.perClient || total != c.total {
			t.Errorf("%s: caps %d/%d, want %d/%d", c.name, per, total, c.perClient, c.total)
		}
	}
	off := &config.Config{}
	off.RateLimits.AuthInFlight.PerClient, off.RateLimits.AuthInFlight.Total = n(0), n(0)
	off.ApplyDefaults()
	if authInFlight(off) != nil {
		t.Error("both caps off still built a counter")
	}
	def := &config.Config{}
	def.ApplyDefaults()
	changed := *def
	changed.RateLimits.AuthInFlight.PerClient = n(8)
	if got := restartOnly(def, &changed); !slices.Contains(got, "rate_limits.auth_in_flight") {
		t.Errorf("restartOnly %v, want rate_limits.auth_in_flight", got)
	}
	a := &app{log: zap.NewNop()}
	a.current.Store(def)
	a.server = api.New(api.Options{})
	srv, err := a.apiServer()
	if err != nil || srv.HTTP2 == nil || srv.HTTP2.MaxConcurrentStreams != 32 {
		t.Fatalf("API server HTTP/2 settings %+v (%v), want 32 streams per connection", srv.HTTP2, err)
	}
}
