// Package config loads the dispenser's YAML configuration: load → defaults →
// validate, with every problem reported with its field path before anything
// starts. Each section's type lives in the package that owns the idea; this
// package only assembles them.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/ratelimit"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/strictyaml"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

// Config is the whole configuration file.
type Config struct {
	Server   ServerConfig         `yaml:"server"`
	Log      LogConfig            `yaml:"log"`
	Auth     auth.Config          `yaml:"auth"`
	Admin    auth.AdminConfig     `yaml:"admin"`
	Tenants  []scope.Tenant       `yaml:"tenants"`
	Backends map[string]vend.Spec `yaml:"backends"`
	Audit    audit.Config         `yaml:"audit"`
	// RateLimits throttle issuance (optional; unlimited when unset).
	RateLimits ratelimit.Config `yaml:"rate_limits"`
	// Revocation configures polling of the revocation list (stored in the
	// audit database) and the optional AWS kill switch.
	Revocation revoke.Config `yaml:"revocation"`
	// Correlate tunes the CloudTrail correlation (audit correlate and
	// POST /v1/audit/correlate).
	Correlate correlate.Config `yaml:"correlate"`

	// Path is the file the configuration was read from.
	Path string `yaml:"-"`

	// lines maps YAML paths to their lines in the file.
	lines map[string]int
}

// ServerConfig configures the HTTP listener.
type ServerConfig struct {
	Listen string    `yaml:"listen"`
	TLS    TLSConfig `yaml:"tls"`
	// BehindTLSProxy allows a non-loopback plain-HTTP listener because a
	// TLS-terminating proxy sits in front.
	BehindTLSProxy    bool              `yaml:"behind_tls_proxy"`
	AllowedHosts      []string          `yaml:"allowed_hosts"`
	ReadHeaderTimeout duration.Duration `yaml:"read_header_timeout"`
	ReadTimeout       duration.Duration `yaml:"read_timeout"`
	WriteTimeout      duration.Duration `yaml:"write_timeout"`
	IdleTimeout       duration.Duration `yaml:"idle_timeout"`
	ShutdownTimeout   duration.Duration `yaml:"shutdown_timeout"`
	// ShutdownDelay is how long SIGTERM keeps the listener serving while
	// /readyz answers 503, before the drain: load balancers see the
	// replica leave and stop sending it connections first.
	ShutdownDelay duration.Duration `yaml:"shutdown_delay"`
	MaxBodyBytes  int64             `yaml:"max_body_bytes"`
	// MinRemaining is the least lifetime any served credential has left.
	MinRemaining duration.Duration `yaml:"min_remaining"`
	// ReplicaID names this instance in audit records (default: hostname).
	ReplicaID string `yaml:"replica_id"`
	// AdminListen is the admin listener (/metrics, /healthz, /readyz),
	// separate so scraping never competes with vending. It has no
	// authentication: keep it on loopback or a network only the
	// orchestrator and Prometheus reach.
	AdminListen string `yaml:"admin_listen"`
	// WatchConfig reloads the configuration when its file changes (SIGHUP
	// always does).
	WatchConfig bool `yaml:"watch_config"`
	// TrustedProxies are CIDRs of proxies (the TCP peer, never a header)
	// whose X-Forwarded-For names the client: the failed-authentication
	// budget, audit records and logs then see callers, not the proxy.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxConnections caps the API listener's open connections (0: derived
	// from the descriptor limit, see docs/limits.md). Near it, idle
	// keep-alive connections are closed first; at it, new ones are closed
	// at once.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerClient caps one client address's connections to the
	// API listener (0: none). Unset: a tenth of max_connections, except
	// behind a TLS proxy not listed in trusted_proxies (every connection
	// comes from the proxy). Trusted proxies are never capped.
	MaxConnectionsPerClient *int `yaml:"max_connections_per_client"`
	// AdminMaxConnections caps the admin listener (default 64), whose
	// descriptors are reserved apart from the API listener's.
	AdminMaxConnections int `yaml:"admin_max_connections"`
	// MaxConcurrentStreams caps the HTTP/2 streams (requests) one
	// connection may have open at once (default 32; Go's own default of
	// 250 let one connection hold 250 stalled requests).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

// TLSConfig is the server certificate.
type TLSConfig struct {
	CertFile string `yaml:"cert_file" config:"path"`
	KeyFile  string `yaml:"key_file" config:"path"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

// LogConfig configures zap.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// Load reads, defaults and validates the file at path. Relative paths in
// the file (key files, certificates, the audit database, the backends' own
// files: every field tagged `config:"path"`) are resolved against the
// file's directory, not the working directory, so a dispenser started from
// anywhere, or a container that mounts only the configuration and its keys
// in one directory, reads the same files. Paths derived from another (the
// checkpoint key beside the audit database) follow the resolved one.
//
// On a validation error (a *validate.Error in the chain) it also returns
// the defaulted config; on a read or YAML syntax error the config is nil.
func Load(path string, edits ...func(*Config)) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(b, dir, edits...)
	if c != nil {
		c.Path = path
	}
	if err != nil {
		// The config is returned with its validation problems so callers
		// (check-config) can add the backends' own problems to the list.
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML, applies defaults and validates, leaving relative
// paths as written (Load resolves them against the file's directory). The
// returned error is a *validate.Error listing every problem, each with its
// YAML path and line: unknown keys (with the key probably meant), keys set
// twice, values of the wrong type, and what validation finds; or a YAML
// syntax error, with a nil config.
//
// edits run after decoding and before defaults and validation, so command
// line overrides (serve --listen) are judged like the file's own values.
func Parse(b []byte, edits ...func(*Config)) (*Config, error) {
	return parse(b, "", edits...)
}

func parse(b []byte, dir string, edits ...func(*Config)) (*Config, error) {
	var doc yaml.Node
	// An empty file is an empty configuration: validation then lists
	// every missing section instead of a bare "EOF".
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	var c Config
	var decoded validate.Problems
	strictyaml.Decode(&doc, &c, &decoded, "", strictyaml.Options{Dir: dir})
	c.lines = strictyaml.Lines(&doc, "")
	// Backends decode their own options later (vend.Build), against the
	// same directory.
	for name, spec := range c.Backends {
		spec.Dir = dir
		c.Backends[name] = spec
	}
	before := c.Server
	for _, e := range edits {
		e(&c)
	}
	// A value a flag replaced is not on any line of the file.
	if c.Server.Listen != before.Listen {
		c.lines["server.listen"] = validate.NotInFile
	}
	if c.Server.AdminListen != before.AdminListen {
		c.lines["server.admin_listen"] = validate.NotInFile
	}
	c.ApplyDefaults()
	var checked validate.Problems
	c.Validate(&checked)
	p := MergeProblems(decoded.List(), checked.List())
	p.Locate(c.Line)
	if err := p.Err(); err != nil {
		return &c, err
	}
	return &c, nil
}

// MergeProblems lists the decoding problems, then the later problems not
// at or under the path of one of them: a value that could not be read is
// reported once, not again by the checks that then find it missing.
func MergeProblems(decoded, later []validate.Problem) *validate.Problems {
	var p validate.Problems
	bad := map[string]bool{}
	for _, pr := range decoded {
		p.Add(pr)
		bad[pr.Path] = true
	}
next:
	for _, pr := range later {
		for path := pr.Path; path != ""; path = validate.Parent(path) {
			if bad[path] {
				continue next
			}
		}
		p.Add(pr)
	}
	return &p
}

// Line is the line of the file the value at path (a problem's path, such
// as tenants[0].grants[1].bucket) is on, 0 when the file does not set it.
func (c *Config) Line(path string) int { return c.lines[path] }

// ApplyDefaults fills every unset field.
func (c *Config) ApplyDefaults() {
	s := &c.Server
	def := func(d *duration.Duration, v time.Duration) {
		if *d == 0 {
			*d = duration.Duration(v)
		}
	}
	if s.Listen == "" {
		s.Listen = "127.0.0.1:8080"
	}
	if s.AdminListen == "" {
		s.AdminListen = "127.0.0.1:9090"
	}
	def(&s.ReadHeaderTimeout, 5*time.Second)
	def(&s.ReadTimeout, 10*time.Second)
	def(&s.WriteTimeout, 30*time.Second)
	def(&s.IdleTimeout, 120*time.Second)
	def(&s.ShutdownTimeout, 20*time.Second)
	def(&s.MinRemaining, 20*time.Minute)
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = 64 << 10
	}
	if s.MaxConcurrentStreams == 0 {
		s.MaxConcurrentStreams = 32
	}
	if s.AdminMaxConnections == 0 {
		s.AdminMaxConnections = 64
	}
	if s.ReplicaID == "" {
		s.ReplicaID, _ = os.Hostname()
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Auth.ApplyDefaults()
	c.Admin.ApplyDefaults()
	for i := range c.Tenants {
		c.Tenants[i].ApplyDefaults()
	}
	if c.Backends == nil {
		c.Backends = map[string]vend.Spec{}
	}
	c.Audit.ApplyDefaults()
	c.RateLimits.ApplyDefaults()
	c.Revocation.ApplyDefaults()
	c.Correlate.ApplyDefaults()
}

// Validate records every problem in p. It does not build backends or
// authenticators: cmd/dispenser builds them after it (vend.Build,
// auth.Config.BuildWith), and they check what only construction finds.
func (c *Config) Validate(p *validate.Problems) {
	c.Server.validate(p)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "must be debug, info, warn or error")
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		p.Addf("log.format", "must be json or console")
	}
	c.Auth.TLSEnabled = c.Server.TLS.Enabled()
	c.Auth.Validate(p, "auth")
	workerAud := ""
	if c.Auth.JWT != nil {
		workerAud = c.Auth.JWT.Audience
	}
	c.Admin.Validate(p, "admin", workerAud)
	c.validateTenants(p)
	c.Audit.Validate(p, "audit")
	c.RateLimits.Validate(p, "rate_limits")
	c.Revocation.Validate(p, "revocation")
	c.Correlate.Validate(p, "correlate")
}

// validate records the server section's problems.
func (s ServerConfig) validate(p *validate.Problems) {
	if host, _, err := net.SplitHostPort(s.Listen); err != nil {
		p.Addf("server.listen", "must be host:port, got %q", s.Listen)
	} else if !s.TLS.Enabled() && !IsLoopback(host) && !s.BehindTLSProxy {
		p.Addf("server.listen", "refusing plain HTTP on non-loopback address %q: configure server.tls or set server.behind_tls_proxy: true", s.Listen)
	}
	if _, _, err := net.SplitHostPort(s.AdminListen); err != nil {
		p.Addf("server.admin_listen", "must be host:port, got %q", s.AdminListen)
	} else if s.AdminListen == s.Listen && !strings.HasSuffix(s.Listen, ":0") {
		p.Addf("server.admin_listen", "must differ from server.listen")
	}
	if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		p.Addf("server.tls", "set both cert_file and key_file")
	}
	for _, f := range []struct{ path, v string }{{"server.tls.cert_file", s.TLS.CertFile}, {"server.tls.key_file", s.TLS.KeyFile}} {
		if f.v != "" {
			if _, err := os.Stat(f.v); err != nil {
				p.Addf(f.path, "%v", err)
			}
		}
	}
	if s.ShutdownDelay.D() < 0 {
		p.Addf("server.shutdown_delay", "must not be negative, got %s", s.ShutdownDelay)
	}
	if s.MinRemaining.D() < 5*time.Minute {
		p.Addf("server.min_remaining", "must be at least 5m (SDKs refresh 5 minutes before expiry), got %s", s.MinRemaining)
	}
	if s.MaxBodyBytes < 1024 {
		p.Addf("server.max_body_bytes", "must be at least 1024")
	}
	if _, err := clientip.Parse(s.TrustedProxies); err != nil {
		p.Addf("server.trusted_proxies", "%v", err)
	}
	if s.MaxConnections != 0 && s.MaxConnections < 16 {
		p.Addf("server.max_connections", "must be at least 16 (0 derives it from the descriptor limit), got %d", s.MaxConnections)
	}
	if n := s.MaxConnectionsPerClient; n != nil && *n < 0 {
		p.Addf("server.max_connections_per_client", "must be 0 (no cap) or more, got %d", *n)
	}
	if s.MaxConcurrentStreams < 1 || s.MaxConcurrentStreams > 1000 {
		p.Addf("server.max_concurrent_streams", "must be between 1 and 1000, got %d", s.MaxConcurrentStreams)
	}
	if s.AdminMaxConnections < 4 || s.AdminMaxConnections > 1024 {
		p.Addf("server.admin_max_connections", "must be between 4 and 1024 (probes and scrapes need only a few), got %d", s.AdminMaxConnections)
	}
}

// validateTenants records the problems of the tenants and backends
// sections (the backends' own options are checked when built).
func (c *Config) validateTenants(p *validate.Problems) {
	if len(c.Tenants) == 0 {
		p.Addf("tenants", "configure at least one tenant (deny by default)")
	}
	names := map[string]bool{}
	for n := range c.Backends {
		names[n] = true
	}
	if len(c.Backends) == 0 {
		p.Addf("backends", "configure at least one backend (for example default: {type: mock})")
	}
	orgs := map[string]bool{}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		path := validate.Join("tenants", i)
		t.Validate(p, path, names)
		if orgs[t.Org] {
			p.Addf(validate.Join(path, "org"), "org %q is configured twice", t.Org)
		}
		orgs[t.Org] = true
		if t.DefaultDuration.D() < c.Server.MinRemaining.D()+scope.FloorMargin {
			p.Addf(validate.Join(path, "default_duration"), "must be at least server.min_remaining (%s) plus %s, or no credential could be served", c.Server.MinRemaining, scope.FloorMargin)
		}
	}
}

// IsLoopback reports whether host is a loopback name or address.
func IsLoopback(host string) bool { return validate.IsLoopbackHost(host) }
