package auth

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/validate"
)

// Config selects and configures the authentication methods. Methods are
// tried in a fixed order (see Build); at least one must be configured.
type Config struct {
	JWT     *JWTConfig     `yaml:"jwt"`
	SigV4   *SigV4Config   `yaml:"sigv4"`
	Gateway *GatewayConfig `yaml:"gateway"`
	MTLS    *MTLSConfig    `yaml:"mtls"`
	IAM     *IAMConfig     `yaml:"iam"`

	// TLSEnabled is set by the configuration loader from server.tls: the
	// mTLS method needs the dispenser to terminate TLS.
	TLSEnabled bool `yaml:"-"`
}

// ApplyDefaults fills unset fields of configured methods.
func (c *Config) ApplyDefaults() {
	if c.JWT != nil {
		c.JWT.ApplyDefaults()
	}
	if c.SigV4 != nil {
		c.SigV4.ApplyDefaults()
	}
	if c.Gateway != nil {
		c.Gateway.ApplyDefaults()
	}
	if c.MTLS != nil {
		c.MTLS.ApplyDefaults()
	}
	if c.IAM != nil {
		c.IAM.ApplyDefaults()
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	n := 0
	if c.JWT != nil {
		n++
		c.JWT.Validate(p, validate.Join(path, "jwt"))
	}
	if c.SigV4 != nil {
		n++
		c.SigV4.Validate(p, validate.Join(path, "sigv4"))
	}
	if c.Gateway != nil {
		n++
		c.Gateway.Validate(p, validate.Join(path, "gateway"), c.MTLS != nil)
	}
	if c.MTLS != nil {
		n++
		c.MTLS.Validate(p, validate.Join(path, "mtls"), c.TLSEnabled)
	}
	if c.IAM != nil {
		n++
		c.IAM.Validate(p, validate.Join(path, "iam"))
	}
	if n == 0 {
		p.Addf(path, "configure at least one authentication method (jwt, sigv4, gateway, mtls, iam)")
	}
}

// BuildDeps are optional dependencies of the authenticators.
type BuildDeps struct {
	Logger *zap.Logger
	// STSClient is the HTTP client of the IAM method (tests dial a local
	// STS with it); the endpoint allow-list applies regardless.
	STSClient *http.Client
	Now       func() time.Time
	// Metrics counts the JWT verified-token cache's events.
	Metrics *metrics.Metrics
}

// Build returns the chain of configured authenticators.
func (c *Config) Build() (Chain, error) {
	chain, _, err := c.BuildWith(BuildDeps{})
	return chain, err
}

// BuildWith returns the chain and closers for resources it opened (a SQL
// key store). The order is fixed:
//
//  1. gateway — a trusted gateway forwards the caller's own SigV4
//     Authorization header (signed for the gateway, not for us), so the
//     gateway identity must be looked at before sigv4 claims that header;
//  2. mtls — a verified client certificate proves the transport peer;
//  3. sigv4 — dispenser-issued keys;
//  4. iam — a forwarded GetCallerIdentity;
//  5. jwt — bearer tokens.
//
// Each method recognises only its own credential, and the first one that
// recognises a credential decides.
func (c *Config) BuildWith(d BuildDeps) (Chain, []io.Closer, error) {
	var chain Chain
	var closers []io.Closer
	var m *MTLS
	if c.MTLS != nil {
		var err error
		if m, err = NewMTLS(*c.MTLS, d.Now); err != nil {
			return nil, nil, fmt.Errorf("auth.mtls: %w", err)
		}
	}
	if c.Gateway != nil {
		g, err := NewGateway(*c.Gateway, d.Logger)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.gateway: %w", err)
		}
		g.mtls = m
		chain = append(chain, g)
	}
	if m != nil {
		chain = append(chain, m)
	}
	if c.SigV4 != nil {
		store, err := c.SigV4.Keys.Open()
		if err != nil {
			return nil, nil, fmt.Errorf("auth.sigv4.keys: %w", err)
		}
		if cl, ok := store.(io.Closer); ok {
			closers = append(closers, cl)
		}
		chain = append(chain, NewSigV4(*c.SigV4, store, d.Now))
	}
	if c.IAM != nil {
		a, err := NewIAM(*c.IAM, d.STSClient, d.Now)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.iam: %w", err)
		}
		chain = append(chain, a)
	}
	if c.JWT != nil {
		var opts []JWTOption
		if d.Logger != nil {
			opts = append(opts, WithLogger(d.Logger))
		}
		if d.Metrics != nil {
			opts = append(opts, WithMetrics(d.Metrics))
		}
		j, err := NewJWT(*c.JWT, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.jwt: %w", err)
		}
		chain = append(chain, j)
	}
	return chain, closers, nil
}
