package main

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/connlimit"
	"github.com/vtk/dispenser/internal/ratelimit"
)

// behindUntrustedProxy reports whether every caller reaches the dispenser
// through a TLS proxy it cannot see past (no trusted_proxies, no
// gateway): client addresses are all the proxy's.
func behindUntrustedProxy(cfg *config.Config) bool {
	return cfg.Server.BehindTLSProxy && len(cfg.Server.TrustedProxies) == 0 && cfg.Auth.Gateway == nil
}

// trustedProxies are server.trusted_proxies, validated by the loader.
func trustedProxies(cfg *config.Config) clientip.Trusted {
	t, _ := clientip.Parse(cfg.Server.TrustedProxies)
	return t
}

// adminReserve is the descriptors kept for everything but the listeners'
// connections when max_connections is set explicitly.
const adminReserve = 64

// connectionCaps are the caps of the API and admin listeners for a
// process allowed nofile descriptors. current is read per connection: a
// reload that changes the gateway's trusted proxies changes who the
// per-client cap exempts.
func connectionCaps(cfg *config.Config, nofile uint64, current func() *config.Config) (apiCap, adminCap connlimit.Options, err error) {
	s := cfg.Server
	adminCap = connlimit.Options{Name: "admin", Max: s.AdminMaxConnections}
	apiCap = connlimit.Options{Name: "api", Max: s.MaxConnections}
	if apiCap.Max == 0 {
		if apiCap.Max, err = connlimit.DefaultMax(nofile, s.AdminMaxConnections); err != nil {
			return apiCap, adminCap, err
		}
	} else if need := uint64(apiCap.Max + adminCap.Max + adminReserve); need > nofile {
		return apiCap, adminCap, fmt.Errorf("server.max_connections (%d) plus server.admin_max_connections (%d) and %d descriptors for the stores and anchors exceed the descriptor limit (%d): lower them or raise RLIMIT_NOFILE",
			apiCap.Max, adminCap.Max, adminReserve, nofile)
	}
	switch {
	case s.MaxConnectionsPerClient != nil:
		apiCap.MaxPerClient = *s.MaxConnectionsPerClient
	case behindUntrustedProxy(cfg):
		// Every connection is the proxy's: a per-address cap would be a
		// cap on everyone.
	default:
		apiCap.MaxPerClient = connlimit.DefaultMaxPerClient(apiCap.Max)
	}
	apiCap.Exempt = proxyExemption(cfg, current)
	return apiCap, adminCap, nil
}

// proxyExemption reports whether a peer is a proxy, whose connections
// carry many clients and are not capped per client: one in
// server.trusted_proxies as the dispenser started (restart-only, like the
// X-Forwarded-For handling that trusts the same list), or in
// auth.gateway.trusted_proxies of the configuration in force (the gateway
// is reloadable).
func proxyExemption(start *config.Config, current func() *config.Config) func(netip.Addr) bool {
	proxies := trustedProxies(start)
	type cached struct {
		gw  *auth.GatewayConfig
		set clientip.Trusted
	}
	var cache atomic.Pointer[cached]
	return func(a netip.Addr) bool {
		if proxies.Contains(a) {
			return true
		}
		gw := current().Auth.Gateway
		c := cache.Load()
		if c == nil || c.gw != gw {
			c = &cached{gw: gw}
			if gw != nil {
				c.set, _ = clientip.Parse(gw.TrustedProxies)
			}
			cache.Store(c)
		}
		return c.set.Contains(a)
	}
}

// capListeners wraps the API and admin listeners in their connection caps.
func (a *app) capListeners(ln, adminLn net.Listener) (*connlimit.Listener, *connlimit.Listener, error) {
	cfg := a.current.Load()
	nofile, err := connlimit.DescriptorLimit()
	if err != nil {
		return nil, nil, err
	}
	apiCap, adminCap, err := connectionCaps(cfg, nofile, a.current.Load)
	if err != nil {
		return nil, nil, err
	}
	apiCap.Metrics, adminCap.Metrics = a.metrics, a.metrics
	apiCap.Logger, adminCap.Logger = a.log.Named("http"), a.log.Named("admin-http")
	a.log.Info("connection caps", zap.Uint64("descriptor_limit", nofile), zap.Int("max_connections", apiCap.Max),
		zap.Int("max_connections_per_client", apiCap.MaxPerClient), zap.Int("admin_max_connections", adminCap.Max))
	return connlimit.Wrap(ln, apiCap), connlimit.Wrap(adminLn, adminCap), nil
}

// authFailureGuard builds the per-client budget of failed authentications,
// or returns nil (no guard) when it is turned off.
//
// Unset, it is on by default, keyed on the TCP peer, the address a trusted
// proxy forwards or the caller a trusted gateway asserts. Only behind a
// TLS proxy the dispenser does not trust to forward addresses is it off:
// every caller would have the proxy's address, and one misbehaving worker
// would get every worker refused.
func authFailureGuard(cfg *config.Config) api.AuthFailureGuard {
	l := authFailureLimit(cfg)
	if l == nil {
		return nil
	}
	return ratelimit.NewFailureGuard(*l, 100000, nil)
}

// authInFlight builds the caps on requests in authentication at once, or
// returns nil when both are off. The per-client cap follows the
// failed-authentication budget's rule: unset, it is off only behind a TLS
// proxy not trusted to forward addresses (every caller shares its address).
func authInFlight(cfg *config.Config) api.AuthInFlight {
	perClient, total := authInFlightCaps(cfg)
	if f := ratelimit.NewInFlight(perClient, total); f != nil {
		return f
	}
	return nil
}

// authInFlightCaps are the in-flight caps in effect (0: off).
func authInFlightCaps(cfg *config.Config) (perClient, total int) {
	l := cfg.RateLimits.AuthInFlight
	switch {
	case l.PerClient != nil:
		perClient = *l.PerClient
	case !behindUntrustedProxy(cfg):
		perClient = ratelimit.DefaultAuthInFlightPerClient
	}
	if l.Total != nil {
		total = *l.Total
	}
	return perClient, total
}

// authFailureLimit is the failed-authentication budget in effect, nil
// when there is none.
func authFailureLimit(cfg *config.Config) *ratelimit.Limit {
	l := cfg.RateLimits.AuthFailuresPerClient
	if l == nil {
		if behindUntrustedProxy(cfg) {
			return nil
		}
		d := ratelimit.DefaultAuthFailures()
		l = &d
	}
	if !l.Enabled() {
		return nil
	}
	return l
}
