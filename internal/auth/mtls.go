package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// MTLSConfig authenticates TLS client certificates (service meshes, SPIFFE).
// It needs server.tls: the dispenser must terminate TLS itself.
type MTLSConfig struct {
	// CAFile is the PEM bundle client certificates must chain to.
	CAFile string `yaml:"ca_file" config:"path"`
	// ClientAuth is optional (a client may present a certificate; other
	// methods serve those that do not) or required (the TLS handshake fails
	// without one, for every route including health checks).
	ClientAuth string `yaml:"client_auth"`
	// PrincipalFrom picks the name used as principal: uri (the URI SAN,
	// e.g. a SPIFFE id; a certificate with several is refused), dns (first
	// DNS SAN) or cn (subject common name).
	PrincipalFrom string `yaml:"principal_from"`
	// Principals map certificate names (patterns with * and ?) to orgs.
	Principals []CertRule `yaml:"principals"`
}

// CertRule maps a certificate principal to an organization.
type CertRule struct {
	Match string `yaml:"match"`
	Org   string `yaml:"org"`
}

// ApplyDefaults fills unset fields.
func (c *MTLSConfig) ApplyDefaults() {
	if c.ClientAuth == "" {
		c.ClientAuth = "optional"
	}
	if c.PrincipalFrom == "" {
		c.PrincipalFrom = "uri"
	}
}

// Validate records problems under path. tlsEnabled says whether
// server.tls is configured.
func (c *MTLSConfig) Validate(p *validate.Problems, path string, tlsEnabled bool) {
	if !tlsEnabled {
		p.Addf(path, "needs server.tls: client certificates exist only when the dispenser terminates TLS")
	}
	if c.CAFile == "" {
		p.Addf(validate.Join(path, "ca_file"), "is required")
	} else if _, err := c.pool(); err != nil {
		p.Addf(validate.Join(path, "ca_file"), "%v", err)
	}
	switch c.ClientAuth {
	case "optional", "required":
	default:
		p.Addf(validate.Join(path, "client_auth"), "must be optional or required")
	}
	switch c.PrincipalFrom {
	case "uri", "dns", "cn":
	default:
		p.Addf(validate.Join(path, "principal_from"), "must be uri, dns or cn")
	}
	if len(c.Principals) == 0 {
		p.Addf(validate.Join(path, "principals"), "configure at least one rule (match → org)")
	}
	for i, r := range c.Principals {
		if r.Match == "" {
			p.Addf(validate.Join(path, "principals", i, "match"), "is required")
		}
		if r.Org == "" {
			p.Addf(validate.Join(path, "principals", i, "org"), "is required")
		}
	}
}

func (c *MTLSConfig) pool() (*x509.CertPool, error) {
	b, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificates found")
	}
	return pool, nil
}

// TLSServerSettings returns what the TLS listener must set: the CA pool for
// tls.Config.ClientCAs and tls.Config.ClientAuth
// (VerifyClientCertIfGiven for optional, RequireAndVerifyClientCert for
// required).
func (c *MTLSConfig) TLSServerSettings() (*x509.CertPool, tls.ClientAuthType, error) {
	pool, err := c.pool()
	if err != nil {
		return nil, tls.NoClientCert, fmt.Errorf("auth.mtls.ca_file: %w", err)
	}
	if c.ClientAuth == "required" {
		return pool, tls.RequireAndVerifyClientCert, nil
	}
	return pool, tls.VerifyClientCertIfGiven, nil
}

// MTLS authenticates verified client certificates.
type MTLS struct {
	cfg  MTLSConfig
	pool *x509.CertPool
	now  func() time.Time
}

// NewMTLS returns the authenticator. now may be nil.
func NewMTLS(cfg MTLSConfig, now func() time.Time) (*MTLS, error) {
	pool, err := cfg.pool()
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &MTLS{cfg: cfg, pool: pool, now: now}, nil
}

// verifiedLeaf verifies the peer's chain against the configured bundle
// (the current one: the listener's own verification may predate a reload)
// and returns the leaf.
func (m *MTLS) verifiedLeaf(cs *tls.ConnectionState) (*x509.Certificate, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: m.pool, Intermediates: inter, CurrentTime: m.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return leaf, err
}

func mtlsErr(reason, format string, args ...any) *fault.Error {
	return fault.New(fault.Unauthorized, "mtls_"+reason, format, args...)
}

// Authenticate implements Authenticator. The chain is verified again here
// against the configured bundle (not only by the TLS stack), so a listener
// configured to merely request certificates cannot let an unverified one
// through.
func (m *MTLS) Authenticate(r *http.Request) (Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Identity{}, ErrNoCredentials
	}
	leaf, err := m.verifiedLeaf(r.TLS)
	if err != nil {
		return Identity{}, fault.Wrap(err, fault.Unauthorized, "mtls_untrusted_certificate", "the client certificate is not valid for this dispenser")
	}
	var name string
	switch m.cfg.PrincipalFrom {
	case "uri":
		// A SPIFFE SVID has exactly one URI SAN. With more, which one names
		// the caller would be a choice the certificate holder could steer
		// (the first today, another after a library change): refuse.
		if len(leaf.URIs) > 1 {
			return Identity{}, mtlsErr("ambiguous_principal", "the client certificate has %d URI names; exactly one is accepted", len(leaf.URIs))
		}
		if len(leaf.URIs) == 1 {
			name = leaf.URIs[0].String()
		}
	case "dns":
		if len(leaf.DNSNames) > 0 {
			name = leaf.DNSNames[0]
		}
	case "cn":
		name = leaf.Subject.CommonName
	}
	if name == "" {
		return Identity{}, mtlsErr("no_principal", "the client certificate has no %s name", m.cfg.PrincipalFrom)
	}
	for _, rule := range m.cfg.Principals {
		if globMatch(rule.Match, name) {
			fp := sha256.Sum256(leaf.Raw)
			return Identity{Principal: name, Org: rule.Org, Method: MethodMTLS, Details: map[string]string{
				"serial":      leaf.SerialNumber.String(),
				"issuer":      leaf.Issuer.String(),
				"sha256":      hex.EncodeToString(fp[:]),
				"not_after":   leaf.NotAfter.UTC().Format(time.RFC3339),
				"name_source": m.cfg.PrincipalFrom,
			}}, nil
		}
	}
	return Identity{}, mtlsErr("unknown_principal", "the client certificate matches no configured principal")
}
