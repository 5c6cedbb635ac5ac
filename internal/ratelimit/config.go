// Package ratelimit throttles credential issuance with token buckets per
// principal and per organization. Every issuance spends a token, one the
// credential cache serves included: each is a durable audit record. With
// Redis configured the buckets are shared by every replica; when Redis is
// unreachable each replica falls back to its own buckets rather than
// refusing to vend.
package ratelimit

import (
	"math"
	"sort"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// Limit is one token bucket: Rate tokens per second, holding at most Burst.
// A zero Rate means unlimited.
type Limit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Enabled reports whether the limit restricts anything.
func (l Limit) Enabled() bool { return l.Rate > 0 }

// Overrides replace the default limits for one organization.
type Overrides struct {
	PerPrincipal *Limit `yaml:"per_principal"`
	PerOrg       *Limit `yaml:"per_org"`
}

// RedisConfig selects the shared limiter.
type RedisConfig struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	// PasswordEnv names an environment variable holding the password, so the
	// configuration never holds it.
	PasswordEnv string `yaml:"password_env"`
	DB          int    `yaml:"db"`
	TLS         bool   `yaml:"tls"`
	// Cluster treats Addr as one node of a Redis Cluster: the client learns
	// the other nodes from it. An org's buckets share one hash slot (the
	// keys carry a hash tag derived from the org), so the script that takes
	// from both runs on one node and orgs spread over the cluster.
	Cluster bool `yaml:"cluster"`
	// KeyPrefix namespaces the bucket keys (default "dispenser:ratelimit:").
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds one limiter call; past it the local limiter decides.
	Timeout duration.Duration `yaml:"timeout"`
	// RetryAfter is how long the limiter stays on the local fallback after
	// a Redis failure before trying Redis again.
	RetryAfter duration.Duration `yaml:"retry_after"`
}

// Config is the rate_limits section.
type Config struct {
	PerPrincipal Limit                `yaml:"per_principal"`
	PerOrg       Limit                `yaml:"per_org"`
	Tenants      map[string]Overrides `yaml:"tenants"`
	Redis        *RedisConfig         `yaml:"redis"`
	// AuthFailuresPerClient is a bucket per client charged by failed
	// authentications (a dependency being down included); rate 0 turns it
	// off. A client over it is refused before authentication, so a flood
	// of bad credentials cannot crowd out issuance. The client is the TCP
	// peer, the caller a trusted gateway asserts, or the address a trusted
	// proxy forwards. Unset, it is DefaultAuthFailures, except behind a
	// TLS proxy that is not trusted to forward addresses (every caller
	// would share its address; see docs/limits.md).
	AuthFailuresPerClient *Limit `yaml:"auth_failures_per_client"`
	// AuthInFlight bounds the requests being authenticated at once, per
	// client and in all (see InFlightLimit).
	AuthInFlight InFlightLimit `yaml:"auth_in_flight"`
	// DenialRecords is the budget of refusal records (records per second):
	// one shared by every unauthenticated caller and one per authenticated
	// principal. Past it refusals are folded into one summary record per
	// reason, principal and interval. Unset: DefaultDenialRecords; rate 0
	// records every refusal on its own.
	DenialRecords *Limit `yaml:"denial_records"`
	// DenialSummaryInterval is how often summaries are written (default
	// 10s).
	DenialSummaryInterval duration.Duration `yaml:"denial_summary_interval"`
}

// DefaultAuthFailures is the failed-authentication budget per client when
// none is configured. A function, not a variable: nothing may change it.
func DefaultAuthFailures() Limit { return Limit{Rate: 5, Burst: 50} }

// DefaultDenialRecords is the budget of individual refusal records when
// none is configured.
func DefaultDenialRecords() Limit { return Limit{Rate: 10, Burst: 100} }

// Enabled reports whether any limit is configured.
func (c *Config) Enabled() bool {
	if c.PerPrincipal.Enabled() || c.PerOrg.Enabled() {
		return true
	}
	for _, o := range c.Tenants {
		if (o.PerPrincipal != nil && o.PerPrincipal.Enabled()) || (o.PerOrg != nil && o.PerOrg.Enabled()) {
			return true
		}
	}
	return false
}

func defBurst(l *Limit) {
	if l != nil && l.Rate > 0 && l.Burst == 0 {
		l.Burst = int(math.Max(1, math.Ceil(l.Rate)))
	}
}

// ApplyDefaults fills unset fields: a burst defaults to one second of rate.
func (c *Config) ApplyDefaults() {
	defBurst(c.AuthFailuresPerClient)
	if c.DenialRecords == nil {
		l := DefaultDenialRecords()
		c.DenialRecords = &l
	}
	defBurst(c.DenialRecords)
	if c.AuthInFlight.Total == nil {
		n := DefaultAuthInFlightTotal
		c.AuthInFlight.Total = &n
	}
	if c.DenialSummaryInterval == 0 {
		c.DenialSummaryInterval = duration.Duration(10 * time.Second)
	}
	defBurst(&c.PerPrincipal)
	defBurst(&c.PerOrg)
	for org, o := range c.Tenants {
		defBurst(o.PerPrincipal)
		defBurst(o.PerOrg)
		c.Tenants[org] = o
	}
	if r := c.Redis; r != nil {
		if r.KeyPrefix == "" {
			r.KeyPrefix = "dispenser:ratelimit:"
		}
		if r.Timeout == 0 {
			r.Timeout = duration.Duration(100 * time.Millisecond)
		}
		if r.RetryAfter == 0 {
			r.RetryAfter = duration.Duration(5 * time.Second)
		}
	}
}

func checkLimit(p *validate.Problems, path string, l *Limit) {
	if l == nil {
		return
	}
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		p.Addf(validate.Join(path, "rate"), "must be a finite number >= 0 (tokens per second; 0 = unlimited)")
	}
	if l.Burst < 0 || (l.Rate > 0 && l.Burst < 1) {
		p.Addf(validate.Join(path, "burst"), "must be at least 1 when rate is set")
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	checkLimit(p, validate.Join(path, "per_principal"), &c.PerPrincipal)
	checkLimit(p, validate.Join(path, "per_org"), &c.PerOrg)
	checkLimit(p, validate.Join(path, "auth_failures_per_client"), c.AuthFailuresPerClient)
	checkLimit(p, validate.Join(path, "denial_records"), c.DenialRecords)
	for _, f := range []struct {
		key string
		v   *int
	}{{"per_client", c.AuthInFlight.PerClient}, {"total", c.AuthInFlight.Total}} {
		if f.v != nil && (*f.v < 0 || *f.v > 1_000_000) {
			p.Addf(validate.Join(path, "auth_in_flight", f.key), "must be between 0 (no cap) and 1000000, got %d", *f.v)
		}
	}
	if d := c.DenialSummaryInterval.D(); d < time.Second || d > 5*time.Minute {
		p.Addf(validate.Join(path, "denial_summary_interval"), "must be between 1s and 5m, got %s", c.DenialSummaryInterval)
	}
	orgs := make([]string, 0, len(c.Tenants))
	for org := range c.Tenants {
		orgs = append(orgs, org)
	}
	sort.Strings(orgs)
	for _, org := range orgs {
		o := c.Tenants[org]
		tp := validate.Join(path, "tenants", org)
		checkLimit(p, validate.Join(tp, "per_principal"), o.PerPrincipal)
		checkLimit(p, validate.Join(tp, "per_org"), o.PerOrg)
	}
	if r := c.Redis; r != nil {
		if r.Addr == "" {
			p.Addf(validate.Join(path, "redis", "addr"), "is required when redis is configured")
		}
		if r.Cluster && r.DB != 0 {
			p.Addf(validate.Join(path, "redis", "db"), "must be 0 with cluster: true (Redis Cluster has one database)")
		}
		if strings.ContainsAny(r.KeyPrefix, "{}") {
			p.Addf(validate.Join(path, "redis", "key_prefix"), "must not contain '{' or '}' (the keys' hash tags are the dispenser's)")
		}
		if r.Timeout.D() <= 0 || r.Timeout.D() > 5*time.Second {
			p.Addf(validate.Join(path, "redis", "timeout"), "must be in (0, 5s]")
		}
	}
}

// limitsFor returns the principal and org limits that apply to org.
func (c *Config) limitsFor(org string) (principal, orgLimit Limit) {
	principal, orgLimit = c.PerPrincipal, c.PerOrg
	if o, ok := c.Tenants[org]; ok {
		if o.PerPrincipal != nil {
			principal = *o.PerPrincipal
		}
		if o.PerOrg != nil {
			orgLimit = *o.PerOrg
		}
	}
	return principal, orgLimit
}
