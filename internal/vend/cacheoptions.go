package vend

import (
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// CacheOptions configure the credential cache (vend/cache) around one
// backend: the `cache:` block of its options. They live here, beside the
// Vendor interface, so a backend declares them without importing the
// decorator that wraps it.
type CacheOptions struct {
	// Enabled switches the cache on (default true).
	Enabled *bool `yaml:"enabled"`
	// MaxEntries bounds the cache; the least recently used entry is evicted
	// (default 10000).
	MaxEntries int `yaml:"max_entries"`
	// MinRemaining is the least lifetime a served cached credential has
	// left (default 20m). The effective floor is never below the server's
	// min_remaining.
	MinRemaining duration.Duration `yaml:"min_remaining"`
	// FetchTimeout bounds one upstream fetch, independent of the callers
	// waiting for it (default 30s).
	FetchTimeout duration.Duration `yaml:"fetch_timeout"`
}

// ApplyDefaults fills unset fields.
func (o *CacheOptions) ApplyDefaults() {
	if o.Enabled == nil {
		t := true
		o.Enabled = &t
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = 10000
	}
	if o.MinRemaining == 0 {
		o.MinRemaining = duration.Duration(20 * time.Minute)
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = duration.Duration(30 * time.Second)
	}
}

// On reports whether the cache is enabled.
func (o CacheOptions) On() bool { return o.Enabled == nil || *o.Enabled }

// Validate records problems under path.
func (o CacheOptions) Validate(p *validate.Problems, path string) {
	if o.MaxEntries < 1 || o.MaxEntries > 10_000_000 {
		p.Addf(validate.Join(path, "max_entries"), "must be between 1 and 10000000, got %d", o.MaxEntries)
	}
	if o.MinRemaining.D() < 5*time.Minute || o.MinRemaining.D() > 11*time.Hour {
		p.Addf(validate.Join(path, "min_remaining"), "must be between 5m (the SDKs' refresh window) and 11h, got %s", o.MinRemaining)
	}
	if o.FetchTimeout.D() < time.Second || o.FetchTimeout.D() > 5*time.Minute {
		p.Addf(validate.Join(path, "fetch_timeout"), "must be between 1s and 5m, got %s", o.FetchTimeout)
	}
}

// CacheConfigurable is implemented by backends that carry cache options;
// cmd/dispenser wraps each such backend whose options enable the cache
// (vend/cache.WrapAll).
type CacheConfigurable interface {
	CacheOptions() CacheOptions
}
