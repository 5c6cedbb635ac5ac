package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// GatewayConfig trusts an identity header set by a gateway that already
// authenticated the caller (API Gateway with IAM authorization forwards the
// caller's ARN). The header is trusted only from configured proxy networks
// or from the gateway's mTLS client certificate; from anywhere else it is
// removed and logged, so a caller cannot name itself.
type GatewayConfig struct {
	// Header carries the caller's ARN (default X-Dispenser-Caller-Arn).
	Header string `yaml:"header"`
	// UserIDHeader optionally carries aws:userid ("AROA...:session"), needed
	// by rules with role_id.
	UserIDHeader string `yaml:"user_id_header"`
	// TrustedProxies are CIDRs whose connections (the TCP peer address, not
	// any forwarded-for header) may set the header.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// TrustedClientCerts are patterns (* and ?) matched against the URI
	// SANs, DNS SANs and subject CN of a verified client certificate (needs
	// auth.mtls for the CA bundle).
	TrustedClientCerts []string  `yaml:"trusted_client_certs"`
	Principals         []ARNRule `yaml:"principals"`
}

// ApplyDefaults fills unset fields.
func (c *GatewayConfig) ApplyDefaults() {
	if c.Header == "" {
		c.Header = "X-Dispenser-Caller-Arn"
	}
}

// Validate records problems under path. hasMTLS says whether auth.mtls is
// configured (needed to verify gateway certificates).
func (c *GatewayConfig) Validate(p *validate.Problems, path string, hasMTLS bool) {
	if len(c.TrustedProxies) == 0 && len(c.TrustedClientCerts) == 0 {
		p.Addf(path, "configure trusted_proxies or trusted_client_certs: the header must only be trusted from the gateway")
	}
	for i, cidr := range c.TrustedProxies {
		pr, err := netip.ParsePrefix(cidr)
		if err != nil {
			p.Addf(validate.Join(path, "trusted_proxies", i), "must be a CIDR like 10.0.0.0/16: %v", err)
		} else if pr.Bits() == 0 {
			p.Addf(validate.Join(path, "trusted_proxies", i), "%s trusts every address", cidr)
		}
	}
	if len(c.TrustedClientCerts) > 0 && !hasMTLS {
		p.Addf(validate.Join(path, "trusted_client_certs"), "needs auth.mtls (its ca_file verifies the gateway's certificate)")
	}
	if c.Header == "" || strings.ContainsAny(c.Header, " :") {
		p.Addf(validate.Join(path, "header"), "must be a header name")
	}
	validateARNRules(p, validate.Join(path, "principals"), c.Principals)
}

// Gateway authenticates by the trusted gateway header.
type Gateway struct {
	cfg     GatewayConfig
	proxies []netip.Prefix
	log     *zap.Logger
	// mtls re-verifies a gateway client certificate against the current
	// CA bundle (the TLS stack's verification may predate a reload that
	// removed a CA).
	mtls *MTLS
}

// NewGateway returns the authenticator; log may be nil.
func NewGateway(cfg GatewayConfig, log *zap.Logger) (*Gateway, error) {
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gateway{cfg: cfg, log: log}
	for _, c := range cfg.TrustedProxies {
		pr, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, err
		}
		g.proxies = append(g.proxies, pr.Masked())
	}
	return g, nil
}

// trusted reports whether the connection comes from the gateway.
func (g *Gateway) trusted(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		for _, p := range g.proxies {
			if p.Contains(ip) {
				return true
			}
		}
	}
	if len(g.cfg.TrustedClientCerts) > 0 && g.mtls != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf, err := g.mtls.verifiedLeaf(r.TLS)
		if err != nil {
			return false
		}
		for _, name := range certNames(leaf) {
			for _, pat := range g.cfg.TrustedClientCerts {
				if globMatch(pat, name) {
					return true
				}
			}
		}
	}
	return false
}

// certNames lists a certificate's URI SANs, DNS SANs and subject CN.
func certNames(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	if c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// ClientKey implements ClientKeyer. A request from the trusted gateway is
// keyed on the caller the gateway asserts (its ARN header) or, without
// one, on the client address the gateway forwards in X-Forwarded-For:
// every such request comes from the gateway's address, and keying a
// budget on it would let one failing caller get every caller refused.
func (g *Gateway) ClientKey(r *http.Request) (string, bool) {
	arns := r.Header.Values(g.cfg.Header)
	if len(arns) == 0 && r.Header.Get("X-Forwarded-For") == "" {
		return "", false
	}
	if !g.trusted(r) {
		return "", false
	}
	if len(arns) == 1 {
		arn := strings.TrimSpace(arns[0])
		if len(arn) > 512 {
			sum := sha256.Sum256([]byte(arn))
			arn = hex.EncodeToString(sum[:])
		}
		return "caller:" + arn, true
	}
	// The gateway's own hops (its proxy networks, and the peer itself
	// when a client certificate made it trusted) are skipped.
	peer, ok := clientip.Peer(r)
	if !ok {
		return "", false
	}
	hops := append(clientip.Trusted{netip.PrefixFrom(peer, peer.BitLen())}, g.proxies...)
	if a, ok := hops.Forwarded(r); ok && !hops.Contains(a) {
		return "addr:" + a.String(), true
	}
	return "", false
}

func gwErr(reason, format string, args ...any) *fault.Error {
	return fault.New(fault.Unauthorized, "gateway_"+reason, format, args...)
}

// Authenticate implements Authenticator. From an untrusted peer the
// identity headers are deleted from the request (so nothing later can read
// them) and ErrNoCredentials lets the next method decide.
func (g *Gateway) Authenticate(r *http.Request) (Identity, error) {
	arns := r.Header.Values(g.cfg.Header)
	if len(arns) == 0 {
		return Identity{}, ErrNoCredentials
	}
	if !g.trusted(r) {
		g.log.Warn("ignoring gateway identity header from an untrusted peer",
			zap.String("header", g.cfg.Header), zap.String("remote_addr", r.RemoteAddr))
		r.Header.Del(g.cfg.Header)
		if g.cfg.UserIDHeader != "" {
			r.Header.Del(g.cfg.UserIDHeader)
		}
		return Identity{}, ErrNoCredentials
	}
	if len(arns) != 1 || strings.Contains(arns[0], ",") {
		return Identity{}, gwErr("malformed", "the gateway sent more than one caller identity")
	}
	arn := strings.TrimSpace(arns[0])
	userID := ""
	if g.cfg.UserIDHeader != "" {
		userID = strings.TrimSpace(r.Header.Get(g.cfg.UserIDHeader))
	}
	rule, principal, ok, pinFailed := matchARN(g.cfg.Principals, arn, userID)
	if pinFailed {
		return Identity{}, gwErr("role_id_mismatch", "the caller's role unique id does not match the configured role_id")
	}
	if !ok {
		return Identity{}, gwErr("unknown_principal", "the caller's ARN matches no configured principal")
	}
	d := map[string]string{"arn": arn}
	if userID != "" {
		d["user_id"] = userID
	}
	return Identity{Principal: principal, Org: rule.Org, Method: MethodGateway, Details: d}, nil
}
