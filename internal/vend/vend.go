// Package vend mints credentials for a scope.Grant through pluggable
// backends. A backend is chosen by the `type` of a `backends` entry in the
// configuration and built by the constructor registered for that type; each
// constructor decodes and validates its own options.
package vend

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/strictyaml"
	"github.com/vtk/dispenser/internal/validate"
)

// Credentials are temporary AWS credentials for one grant.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey secret.Secret
	SessionToken    secret.Secret
	Expiration      time.Time
	AccountID       string
	// PackedPolicySize is the share of STS's session size limit the
	// session uses, in percent, as STS reported it (SessionTokenUtilization,
	// or the older PackedPolicySize), or -1 when unknown.
	PackedPolicySize int
	// Source says where these came from ("sts", "cache", "mock", "static").
	Source string
}

// Vendor mints credentials for a grant.
//
// Vend returns a *fault.Error: BackendUnavailable (with RetryAfter when the
// failure is transient) when the backend cannot answer, AccessDenied or
// InvalidRequest when the backend refuses the grant for good.
type Vendor interface {
	Vend(ctx context.Context, g scope.Grant) (Credentials, error)
}

// Readiness is implemented by vendors that need initialisation before they
// can vend (for example, loading base credentials).
type Readiness interface {
	Ready(ctx context.Context) error
}

// CacheChecker is implemented by vendors that can tell, without calling
// upstream, whether a grant would be served from a valid cached credential.
type CacheChecker interface {
	Cached(g scope.Grant) bool
}

// Reloader is implemented by backends that re-read their own files on a
// configuration reload (static credentials). Reload swaps atomically on
// success and keeps the old state on error, which it returns.
type Reloader interface {
	Reload() error
}

// Forgetter is implemented by caching vendors that can drop the cached
// credentials of a grant, so a revoked access key is not served again.
// Forget reports whether the next Vend of g fetches afresh; false means
// the vendor cannot forget g (it would return the same credentials).
type Forgetter interface {
	Forget(g scope.Grant) bool
}

// TenantValidator is implemented by backends that constrain the tenants
// using them (for example, assume-role needs a role_arn). check-config and
// serve call it for every tenant naming the backend.
type TenantValidator interface {
	ValidateTenant(t scope.Tenant, p *validate.Problems, path string)
}

// Spec is one `backends` entry: a type and its own options, kept as a YAML
// node so the backend's constructor decodes them.
type Spec struct {
	Type    string
	Options yaml.Node
	// Dir is the configuration file's directory, against which relative
	// paths in the options (fields tagged `config:"path"`) are resolved;
	// the configuration loader sets it.
	Dir string
}

// UnmarshalYAML keeps the whole mapping for the constructor.
func (s *Spec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("must be a mapping with a type, for example {type: mock}")
	}
	var head struct {
		Type string `yaml:"type"`
	}
	if err := n.Decode(&head); err != nil {
		return fmt.Errorf("type must be the name of a backend type (known: %v)", Types())
	}
	s.Type = head.Type
	s.Options = *n
	return nil
}

// Decode decodes the options into v (a pointer to the backend's options
// struct) like the rest of the configuration: every unknown key (other
// than type), key set twice or value of the wrong type is recorded in p
// with its path under path and its line, and relative paths in fields
// tagged `config:"path"` are resolved against Dir. It reports whether the
// options decoded without a problem.
func (s Spec) Decode(v any, p *validate.Problems, path string) bool {
	if s.Options.Kind == 0 {
		return true
	}
	return strictyaml.Decode(&s.Options, v, p, path, strictyaml.Options{Dir: s.Dir, Ignore: []string{"type"}}) == 0
}

// Deps are what a constructor may use.
type Deps struct {
	Name   string // the backends map key
	Logger *zap.Logger
	Now    func() time.Time
	// Metrics is optional (nil-safe).
	Metrics *metrics.Metrics
	// MinRemaining is server.min_remaining, the least lifetime a served
	// credential has left (zero when unknown); backends with a configured
	// lifetime check theirs against it.
	MinRemaining time.Duration
}

// Constructor builds a Vendor from its spec. It validates its options into
// p (with paths under path) and returns nil when there are problems.
type Constructor func(spec Spec, deps Deps, p *validate.Problems, path string) Vendor

var (
	regMu    sync.RWMutex
	registry = map[string]Constructor{}
)

// Register makes a backend type available. Backend packages call it from init.
func Register(typ string, c Constructor) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[typ]; dup {
		panic("vend: backend type registered twice: " + typ)
	}
	registry[typ] = c
}

// Types lists the registered backend types.
func Types() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Build constructs every backend; problems are recorded in p.
func Build(specs map[string]Spec, deps Deps, p *validate.Problems) map[string]Vendor {
	out := map[string]Vendor{}
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		spec := specs[name]
		path := validate.Join("backends", name)
		regMu.RLock()
		c, ok := registry[spec.Type]
		regMu.RUnlock()
		if !ok {
			p.Addf(validate.Join(path, "type"), "unknown backend type %q (known: %v)", spec.Type, Types())
			continue
		}
		d := deps
		d.Name = name
		if d.Logger == nil {
			d.Logger = zap.NewNop()
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if v := c(spec, d, p, path); v != nil {
			out[name] = v
		}
	}
	return out
}

// Router dispatches a grant to the backend its tenant names.
type Router map[string]Vendor

var (
	_ Vendor       = Router(nil)
	_ CacheChecker = Router(nil)
	_ Forgetter    = Router(nil)
	_ Reloader     = Router(nil)
	_ Readiness    = Router(nil)
)

// Vend implements Vendor.
func (r Router) Vend(ctx context.Context, g scope.Grant) (Credentials, error) {
	v, ok := r[g.Backend]
	if !ok {
		return Credentials{}, fmt.Errorf("no backend named %q", g.Backend)
	}
	return v.Vend(ctx, g)
}

// Cached implements CacheChecker by asking the grant's backend.
func (r Router) Cached(g scope.Grant) bool {
	c, ok := r[g.Backend].(CacheChecker)
	return ok && c.Cached(g)
}

// Forget implements Forgetter by asking the grant's backend.
func (r Router) Forget(g scope.Grant) bool {
	f, ok := r[g.Backend].(Forgetter)
	return ok && f.Forget(g)
}

// Reload implements Reloader over every backend that has it, stopping at
// the first failure (each backend keeps its old state on error).
func (r Router) Reload() error {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if rl, ok := r[name].(Reloader); ok {
			if err := rl.Reload(); err != nil {
				return fmt.Errorf("backend %s: %w", name, err)
			}
		}
	}
	return nil
}

// Ready implements Readiness over every backend that has it.
func (r Router) Ready(ctx context.Context) error {
	for name, v := range r {
		if rd, ok := v.(Readiness); ok {
			if err := rd.Ready(ctx); err != nil {
				return fmt.Errorf("backend %s: %w", name, err)
			}
		}
	}
	return nil
}
