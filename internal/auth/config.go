package auth

import (
	"fmt"

	"github.com/vtk/dispenser/internal/validate"
)

// Config selects and configures the authentication methods. Methods are
// tried in a fixed order; at least one must be configured.
type Config struct {
	JWT *JWTConfig `yaml:"jwt"`
}

// ApplyDefaults fills unset fields of configured methods.
func (c *Config) ApplyDefaults() {
	if c.JWT != nil {
		c.JWT.ApplyDefaults()
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	n := 0
	if c.JWT != nil {
		n++
		c.JWT.Validate(p, validate.Join(path, "jwt"))
	}
	if n == 0 {
		p.Addf(path, "configure at least one authentication method (jwt)")
	}
}

// Build returns the chain of configured authenticators. opts reach the JWT
// authenticator (logger for JWKS fetch failures).
func (c *Config) Build(opts ...JWTOption) (Chain, error) {
	var chain Chain
	if c.JWT != nil {
		j, err := NewJWT(*c.JWT, opts...)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt: %w", err)
		}
		chain = append(chain, j)
	}
	return chain, nil
}
