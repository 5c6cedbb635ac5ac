package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// AdminConfig guards the admin API (audit query, revocations). It is
// separate from worker authentication: a worker token never passes it.
type AdminConfig struct {
	// JWT verifies admin tokens; use an audience different from workers'.
	JWT *JWTConfig `yaml:"jwt"`
	// Tokens are static admin bearer tokens, configured by their SHA-256 so
	// the configuration never holds the token itself.
	Tokens []AdminToken `yaml:"tokens"`
	// PProf serves net/http/pprof under /debug/pprof/ on the admin
	// listener (server.admin_listen), never on the API listener. Off by
	// default: the admin listener has no authentication.
	PProf bool `yaml:"pprof"`
}

// AdminToken is one static admin token.
type AdminToken struct {
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the token; or TokenEnv names an
	// environment variable holding the token.
	SHA256   string `yaml:"sha256"`
	TokenEnv string `yaml:"token_env"`
}

// Enabled reports whether any admin method is configured.
func (c *AdminConfig) Enabled() bool { return c != nil && (c.JWT != nil || len(c.Tokens) > 0) }

// ApplyDefaults fills unset fields.
func (c *AdminConfig) ApplyDefaults() {
	if c.JWT != nil {
		c.JWT.ApplyDefaults()
	}
}

// Validate records problems under path.
func (c *AdminConfig) Validate(p *validate.Problems, path string, workerAudience string) {
	if c.JWT != nil {
		c.JWT.Validate(p, validate.Join(path, "jwt"))
		if c.JWT.Audience != "" && c.JWT.Audience == workerAudience {
			p.Addf(validate.Join(path, "jwt", "audience"), "must differ from auth.jwt.audience, or worker tokens would be admin tokens")
		}
	}
	for i, t := range c.Tokens {
		tp := validate.Join(path, "tokens", i)
		if t.Name == "" {
			p.Addf(validate.Join(tp, "name"), "is required")
		}
		if _, err := t.digest(); err != nil {
			p.Addf(tp, "%v", err)
		}
	}
}

func (t AdminToken) digest() ([]byte, error) {
	switch {
	case t.SHA256 != "" && t.TokenEnv != "":
		return nil, fmt.Errorf("set sha256 or token_env, not both")
	case t.SHA256 != "":
		b, err := hex.DecodeString(t.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("sha256 must be 64 hex characters")
		}
		return b, nil
	case t.TokenEnv != "":
		v := os.Getenv(t.TokenEnv)
		if len(v) < 32 {
			return nil, fmt.Errorf("environment variable %s must hold a token of at least 32 characters", t.TokenEnv)
		}
		sum := sha256.Sum256([]byte(v))
		return sum[:], nil
	}
	return nil, fmt.Errorf("set sha256 or token_env")
}

// Build returns the admin authenticator chain, or nil when disabled.
func (c *AdminConfig) Build(opts ...JWTOption) (Authenticator, error) {
	if !c.Enabled() {
		return nil, nil
	}
	var chain Chain
	if len(c.Tokens) > 0 {
		at := &AdminTokens{}
		for _, t := range c.Tokens {
			d, err := t.digest()
			if err != nil {
				return nil, fmt.Errorf("admin token %s: %w", t.Name, err)
			}
			at.names = append(at.names, t.Name)
			at.digests = append(at.digests, d)
		}
		chain = append(chain, at)
	}
	if c.JWT != nil {
		j, err := NewJWT(*c.JWT, opts...)
		if err != nil {
			return nil, fmt.Errorf("admin.jwt: %w", err)
		}
		chain = append(chain, adminJWT{j})
	}
	return chain, nil
}

// AdminTokens authenticates static admin bearer tokens by SHA-256 digest,
// compared in constant time against every configured digest.
type AdminTokens struct {
	names   []string
	digests [][]byte
}

// Authenticate implements Authenticator.
func (a *AdminTokens) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return Identity{}, ErrNoCredentials
	}
	tok := strings.TrimSpace(h[7:])
	if strings.Count(tok, ".") == 2 {
		return Identity{}, ErrNoCredentials // a JWT: the admin JWT method decides
	}
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i, d := range a.digests {
		if subtle.ConstantTimeCompare(sum[:], d) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Identity{}, fault.New(fault.Unauthorized, "admin_bad_token", "admin token is not accepted")
	}
	return Identity{Principal: a.names[match], Org: "*", Method: MethodAdmin}, nil
}

// adminChallenge is the challenge of the admin routes.
const adminChallenge = `Bearer realm="dispenser-admin"`

// Challenges implements Challenger.
func (a *AdminTokens) Challenges() []string { return []string{adminChallenge} }

type adminJWT struct{ j *JWT }

// Challenges implements Challenger.
func (a adminJWT) Challenges() []string { return []string{adminChallenge} }

// Authenticate verifies an admin JWT; a token valid for another audience
// (a worker token) is refused with 403.
func (a adminJWT) Authenticate(r *http.Request) (Identity, error) {
	id, err := a.j.Authenticate(r)
	if err != nil {
		if fault.Is(err, fault.Unauthorized) && jwtReasonOf(err) == "jwt_bad_audience" {
			return Identity{}, fault.New(fault.AccessDenied, "admin_not_admin", "this token is not an admin token")
		}
		return Identity{}, err
	}
	id.Method = MethodAdmin
	return id, nil
}

func jwtReasonOf(err error) string { return fault.From(err).Reason }
