package correlate

import (
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// Config is the correlate section of the configuration.
type Config struct {
	// MaxBodyBytes bounds the CloudTrail document POST /v1/audit/correlate
	// accepts, after decompression (default 10 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ClockSkew is how far an event may lie before its credentials were
	// issued or after they expired and still count as inside their
	// lifetime (default 2m). CloudTrail's eventTime comes from AWS hosts,
	// the issuance time from the dispenser's clock. 0s allows no skew.
	ClockSkew *duration.Duration `yaml:"clock_skew"`
}

// Defaults of the correlate section.
const (
	DefaultMaxBodyBytes = 10 << 20
	DefaultClockSkew    = 2 * time.Minute
)

// ApplyDefaults fills unset fields.
func (c *Config) ApplyDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ClockSkew == nil {
		d := duration.Duration(DefaultClockSkew)
		c.ClockSkew = &d
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	if c.MaxBodyBytes < 1<<10 || c.MaxBodyBytes > 1<<30 {
		p.Addf(validate.Join(path, "max_body_bytes"), "must be between 1024 and 1073741824 (1 GiB), got %d", c.MaxBodyBytes)
	}
	if s := c.Skew(); s < 0 || s > time.Hour {
		p.Addf(validate.Join(path, "clock_skew"), "must be between 0s and 1h, got %s", s)
	}
}

// Skew is the configured clock skew tolerance (the default when unset).
func (c Config) Skew() time.Duration {
	if c.ClockSkew == nil {
		return DefaultClockSkew
	}
	return c.ClockSkew.D()
}
