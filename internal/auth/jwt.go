package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/validate"
)

// JWTConfig configures bearer-token authentication.
type JWTConfig struct {
	Issuer   string            `yaml:"issuer"`
	Audience string            `yaml:"audience"`
	Leeway   duration.Duration `yaml:"leeway"`
	Keys     []JWTKey          `yaml:"keys"`
	// JWKSURL, when set, adds the keys of a JSON Web Key Set.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefresh is how often the set is refetched in the background.
	JWKSRefresh duration.Duration `yaml:"jwks_refresh"`
	// JWKSMinInterval is the least time between two fetches, so tokens with
	// unknown kids cannot make the dispenser hammer the JWKS endpoint.
	JWKSMinInterval duration.Duration `yaml:"jwks_min_interval"`
	// JWKSTimeout bounds one fetch: a slow JWKS delays only requests that
	// name an unknown kid, and only this long.
	JWKSTimeout    duration.Duration `yaml:"jwks_timeout"`
	PrincipalClaim string            `yaml:"principal_claim"`
	OrgClaim       string            `yaml:"org_claim"`
	JobIDClaim     string            `yaml:"job_id_claim"`
	TaskIDClaim    string            `yaml:"task_id_claim"`
	// SigningKeyFile is a private key used only by `dispenser token` to mint
	// development tokens. Production configs leave it empty.
	SigningKeyFile string `yaml:"signing_key_file" config:"path"`
	SigningKeyID   string `yaml:"signing_key_id"`
	// CacheMaxLifetime is how long the identity of a verified token is
	// reused without checking its signature again (default 60s; 0s turns
	// the cache off). An entry never outlives the token's exp.
	CacheMaxLifetime *duration.Duration `yaml:"cache_max_lifetime"`
	// CacheMaxEntries bounds the verified-token cache (default 10000; the
	// least recently used entry is evicted).
	CacheMaxEntries int `yaml:"cache_max_entries"`
}

// JWTKey is one verification key with its algorithm allow-list.
type JWTKey struct {
	ID             string   `yaml:"kid"`
	PublicKeyFile  string   `yaml:"public_key_file" config:"path"`
	HMACSecretFile string   `yaml:"hmac_secret_file" config:"path"`
	HMACSecretEnv  string   `yaml:"hmac_secret_env"`
	Algorithms     []string `yaml:"algorithms"`
}

// ApplyDefaults fills unset fields.
func (c *JWTConfig) ApplyDefaults() {
	if c.Leeway == 0 {
		c.Leeway = duration.Duration(30 * time.Second)
	}
	if c.PrincipalClaim == "" {
		c.PrincipalClaim = "sub"
	}
	if c.OrgClaim == "" {
		c.OrgClaim = "org"
	}
	if c.JobIDClaim == "" {
		c.JobIDClaim = "job_id"
	}
	if c.TaskIDClaim == "" {
		c.TaskIDClaim = "task_id"
	}
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = duration.Duration(5 * time.Minute)
	}
	if c.JWKSMinInterval == 0 {
		c.JWKSMinInterval = duration.Duration(time.Minute)
	}
	if c.JWKSTimeout == 0 {
		c.JWKSTimeout = duration.Duration(5 * time.Second)
	}
	if c.CacheMaxLifetime == nil {
		d := duration.Duration(time.Minute)
		c.CacheMaxLifetime = &d
	}
	if c.CacheMaxEntries == 0 {
		c.CacheMaxEntries = 10000
	}
}

// Validate records problems under path. It loads key files, so missing or
// malformed keys are reported by check-config.
func (c *JWTConfig) Validate(p *validate.Problems, path string) {
	if c.Issuer == "" {
		p.Addf(validate.Join(path, "issuer"), "is required")
	}
	if c.Audience == "" {
		p.Addf(validate.Join(path, "audience"), "is required")
	}
	if len(c.Keys) == 0 && c.JWKSURL == "" {
		p.Addf(path, "configure keys or jwks_url")
	}
	if c.Leeway.D() < 0 || c.Leeway.D() > 5*time.Minute {
		p.Addf(validate.Join(path, "leeway"), "must be between 0 and 5m")
	}
	if c.JWKSURL != "" {
		if err := validate.ServiceURL(c.JWKSURL); err != nil {
			p.Addf(validate.Join(path, "jwks_url"), "%v", err)
		}
	}
	if c.JWKSURL != "" {
		if c.JWKSMinInterval.D() <= 0 {
			p.Addf(validate.Join(path, "jwks_min_interval"), "must be positive")
		}
		if c.JWKSRefresh.D() < c.JWKSMinInterval.D() {
			p.Addf(validate.Join(path, "jwks_refresh"), "must be at least jwks_min_interval (%s)", c.JWKSMinInterval)
		}
		if c.JWKSTimeout.D() <= 0 || c.JWKSTimeout.D() > 30*time.Second {
			p.Addf(validate.Join(path, "jwks_timeout"), "must be between 0 and 30s")
		}
	}
	if l := c.CacheMaxLifetime; l != nil && (l.D() < 0 || l.D() > time.Hour) {
		p.Addf(validate.Join(path, "cache_max_lifetime"), "must be between 0s (no cache) and 1h")
	}
	if c.CacheMaxEntries < 1 || c.CacheMaxEntries > 1000000 {
		p.Addf(validate.Join(path, "cache_max_entries"), "must be between 1 and 1000000")
	}
	for i, k := range c.Keys {
		if _, err := loadKey(k); err != nil {
			p.Addf(validate.Join(path, "keys", i), "%v", err)
		}
	}
	if c.SigningKeyFile != "" {
		if _, _, err := LoadSigningKey(c.SigningKeyFile); err != nil {
			p.Addf(validate.Join(path, "signing_key_file"), "%v", err)
		}
	}
}

// verificationKey is a parsed key and the algorithms it may verify.
type verificationKey struct {
	id   string
	key  any
	algs []string
}

var algsByKind = map[string][]string{
	"rsa":     {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
	"ec256":   {"ES256"},
	"ec384":   {"ES384"},
	"ec521":   {"ES512"},
	"ed25519": {"EdDSA"},
	"hmac":    {"HS256", "HS384", "HS512"},
}

func keyKind(k any) (string, error) {
	switch v := k.(type) {
	case *rsa.PublicKey:
		if v.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA keys must be at least 2048 bits")
		}
		return "rsa", nil
	case *ecdsa.PublicKey:
		switch v.Curve.Params().BitSize {
		case 256:
			return "ec256", nil
		case 384:
			return "ec384", nil
		case 521:
			return "ec521", nil
		}
	case ed25519.PublicKey:
		return "ed25519", nil
	case []byte:
		return "hmac", nil
	}
	return "", fmt.Errorf("unsupported key type %T", k)
}

// newVerificationKey checks that the allowed algorithms fit the key type, so
// an RSA or EC key can never be used to verify an HMAC token (the classic
// algorithm-confusion attack).
func newVerificationKey(id string, key any, algs []string) (verificationKey, error) {
	kind, err := keyKind(key)
	if err != nil {
		return verificationKey{}, err
	}
	fits := algsByKind[kind]
	if len(algs) == 0 {
		algs = fits
		if kind == "rsa" {
			algs = []string{"RS256", "PS256"}
		}
		if kind == "hmac" {
			algs = []string{"HS256"}
		}
	}
	for _, a := range algs {
		if !slices.Contains(fits, a) {
			return verificationKey{}, fmt.Errorf("algorithm %q cannot be used with a %s key (allowed: %s)", a, kind, strings.Join(fits, ", "))
		}
	}
	return verificationKey{id: id, key: key, algs: algs}, nil
}

func loadKey(k JWTKey) (verificationKey, error) {
	set := 0
	for _, s := range []string{k.PublicKeyFile, k.HMACSecretFile, k.HMACSecretEnv} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return verificationKey{}, fmt.Errorf("set exactly one of public_key_file, hmac_secret_file, hmac_secret_env")
	}
	var key any
	switch {
	case k.PublicKeyFile != "":
		b, err := os.ReadFile(k.PublicKeyFile)
		if err != nil {
			return verificationKey{}, fmt.Errorf("read public key: %w", err)
		}
		key, err = parsePublicKeyPEM(b)
		if err != nil {
			return verificationKey{}, fmt.Errorf("%s: %w", k.PublicKeyFile, err)
		}
	case k.HMACSecretFile != "":
		b, err := os.ReadFile(k.HMACSecretFile)
		if err != nil {
			return verificationKey{}, fmt.Errorf("read hmac secret: %w", err)
		}
		key = []byte(strings.TrimRight(string(b), "\r\n"))
	default:
		v := os.Getenv(k.HMACSecretEnv)
		if v == "" {
			return verificationKey{}, fmt.Errorf("environment variable %s is empty or unset", k.HMACSecretEnv)
		}
		key = []byte(v)
	}
	if b, ok := key.([]byte); ok && len(b) < 32 {
		return verificationKey{}, fmt.Errorf("HMAC secrets must be at least 32 bytes")
	}
	return newVerificationKey(k.ID, key, k.Algorithms)
}

func parsePublicKeyPEM(b []byte) (any, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block found")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("unsupported PEM block %q (want PUBLIC KEY or CERTIFICATE)", blk.Type)
}

// LoadSigningKey reads a PEM private key (PKCS#8, PKCS#1 or SEC1) and returns
// it with the JWT signing method it implies.
func LoadSigningKey(path string) (crypto.Signer, jwt.SigningMethod, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM block found", path)
	}
	var key any
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, nil, fmt.Errorf("%s: unsupported PEM block %q", path, blk.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := key.(type) {
	case ed25519.PrivateKey:
		return k, jwt.SigningMethodEdDSA, nil
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return k, jwt.SigningMethodES256, nil
		case 384:
			return k, jwt.SigningMethodES384, nil
		}
		return k, jwt.SigningMethodES512, nil
	case *rsa.PrivateKey:
		return k, jwt.SigningMethodRS256, nil
	}
	return nil, nil, fmt.Errorf("%s: unsupported private key type %T", path, key)
}

// JWT authenticates `Authorization: Bearer <jwt>` and the raw token form
// AWS SDKs send from AWS_CONTAINER_AUTHORIZATION_TOKEN.
type JWT struct {
	cfg    JWTConfig
	keys   []verificationKey
	jwks   *jwksSource
	parser *jwt.Parser
	now    func() time.Time
	cache  *tokenCache // nil when cache_max_lifetime is 0
}

// JWTOption adjusts a JWT authenticator.
type JWTOption func(*jwtOptions)

type jwtOptions struct {
	log     *zap.Logger
	client  *http.Client
	now     func() time.Time
	metrics *metrics.Metrics
}

// WithLogger sets the logger for JWKS fetch failures.
func WithLogger(l *zap.Logger) JWTOption { return func(o *jwtOptions) { o.log = l } }

// WithHTTPClient sets the client used to fetch the JWKS (its Timeout
// overrides jwks_timeout).
func WithHTTPClient(c *http.Client) JWTOption { return func(o *jwtOptions) { o.client = c } }

// WithMetrics counts the verified-token cache's hits and misses.
func WithMetrics(m *metrics.Metrics) JWTOption { return func(o *jwtOptions) { o.metrics = m } }

// WithClock sets the time source (tests).
func WithClock(now func() time.Time) JWTOption { return func(o *jwtOptions) { o.now = now } }

// NewJWT parses the configured keys once.
func NewJWT(cfg JWTConfig, opts ...JWTOption) (*JWT, error) {
	cfg.ApplyDefaults()
	o := jwtOptions{now: time.Now}
	for _, f := range opts {
		f(&o)
	}
	a := &JWT{cfg: cfg, now: o.now}
	for i, k := range cfg.Keys {
		vk, err := loadKey(k)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.keys[%d]: %w", i, err)
		}
		a.keys = append(a.keys, vk)
	}
	if cfg.CacheMaxLifetime != nil {
		a.cache = newTokenCache(cfg.CacheMaxLifetime.D(), cfg.CacheMaxEntries, cfg.Leeway.D(), o.metrics)
	}
	if cfg.JWKSURL != "" {
		a.jwks = newJWKSSource(cfg.JWKSURL, cfg.JWKSRefresh.D(), cfg.JWKSMinInterval.D(), cfg.JWKSTimeout.D(), o.client, o.log, func() time.Time { return a.now() })
		if a.cache != nil {
			// An identity proven with a key the set no longer holds must
			// not be served from the cache.
			a.jwks.onChange = a.cache.flush
		}
	}
	var all []string
	for _, l := range algsByKind {
		all = append(all, l...)
	}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods(all), // per-key lists are enforced in keyFor
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithLeeway(cfg.Leeway.D()),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return a.now() }),
	)
	return a, nil
}

// Challenges implements Challenger.
func (a *JWT) Challenges() []string { return []string{`Bearer realm="dispenser"`} }

// Authenticate implements Authenticator.
func (a *JWT) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Identity{}, ErrNoCredentials
	}
	raw := h
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		raw = strings.TrimSpace(h[7:])
	} else if strings.Count(h, ".") != 2 || strings.ContainsAny(h, " ") {
		// Not a bearer token (for example an AWS4-HMAC-SHA256 signature).
		return Identity{}, ErrNoCredentials
	}
	return a.verifyCached(raw)
}

// Verify checks a raw token and maps its claims to an Identity.
func (a *JWT) Verify(raw string) (Identity, error) {
	claims := jwt.MapClaims{}
	tok, err := a.parser.ParseWithClaims(raw, claims, a.keyFor)
	if errors.Is(err, errJWKSUnavailable) {
		// 503 + Retry-After: SDKs retry 5xx but treat 4xx as final, and an
		// identity-provider outage must not fail every task for good.
		return Identity{}, fault.Wrap(err, fault.BackendUnavailable, "jwt_jwks_unavailable",
			"the token's signing key set cannot be fetched right now; retry shortly").WithRetryAfter(5 * time.Second)
	}
	if err != nil || !tok.Valid {
		return Identity{}, fault.Wrap(err, fault.Unauthorized, jwtReason(err), "invalid bearer token: %s", jwtMessage(err))
	}
	// RFC 7515 §4.1.11: a recipient must refuse a token whose "crit" names
	// a header parameter it does not process. golang-jwt ignores "crit",
	// and the dispenser processes no extension, so any "crit" is refused.
	if _, ok := tok.Header["crit"]; ok {
		return Identity{}, fault.New(fault.Unauthorized, "jwt_unsupported_crit", "invalid bearer token: it has critical header parameters (crit) this server does not process")
	}
	str := func(name string) string {
		v, _ := claims[name].(string)
		return v
	}
	id := Identity{
		Principal: str(a.cfg.PrincipalClaim),
		Org:       str(a.cfg.OrgClaim),
		Method:    MethodJWT,
		JobID:     str(a.cfg.JobIDClaim),
		TaskID:    str(a.cfg.TaskIDClaim),
		Details:   map[string]string{"issuer": str("iss")},
	}
	if kid, _ := tok.Header["kid"].(string); kid != "" {
		id.Details["kid"] = kid
	}
	if id.Principal == "" {
		return Identity{}, fault.New(fault.Unauthorized, "jwt_no_principal", "invalid bearer token: claim %q is missing", a.cfg.PrincipalClaim)
	}
	if id.Org == "" {
		return Identity{}, fault.New(fault.Unauthorized, "jwt_no_org", "invalid bearer token: claim %q is missing", a.cfg.OrgClaim)
	}
	// A binding claim that is present binds: one of another type (a
	// numeric job id, null) read as absent would free the token of it.
	for _, name := range []string{a.cfg.JobIDClaim, a.cfg.TaskIDClaim} {
		if v, present := claims[name]; present {
			if _, ok := v.(string); !ok {
				return Identity{}, fault.New(fault.Unauthorized, "jwt_bad_binding", "invalid bearer token: claim %q must be a string", name)
			}
		}
	}
	return id, nil
}

func (a *JWT) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	pick := func(keys []verificationKey) []any {
		var out []any
		for _, k := range keys {
			if (kid == "" || k.id == "" || k.id == kid) && slices.Contains(k.algs, alg) {
				out = append(out, k.key)
			}
		}
		return out
	}
	cands := pick(a.keys)
	// A kid named by a configured key never costs a JWKS lookup (which, for
	// a kid the set lacks, would spend the refetch budget).
	if a.jwks != nil && (kid == "" || !hasKid(a.keys, kid)) {
		cands = append(cands, pick(a.jwks.keys(kid))...)
	}
	if len(cands) == 0 {
		if a.jwks != nil && a.jwks.failing() {
			// The key may well exist at the identity provider: the set
			// could not be fetched. That is not a definite "no".
			return nil, errJWKSUnavailable
		}
		return nil, fmt.Errorf("no key accepts algorithm %s (kid %q)", alg, kid)
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	set := jwt.VerificationKeySet{}
	for _, c := range cands {
		set.Keys = append(set.Keys, c)
	}
	return set, nil
}

func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "jwt_expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "jwt_not_yet_valid"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "jwt_bad_issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "jwt_bad_audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "jwt_missing_claim"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "jwt_bad_signature"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "jwt_malformed"
	}
	return "jwt_invalid"
}

// jwtMessage describes a failure without echoing the token.
func jwtMessage(err error) string {
	switch jwtReason(err) {
	case "jwt_expired":
		return "token is expired"
	case "jwt_not_yet_valid":
		return "token is not valid yet"
	case "jwt_bad_issuer":
		return "issuer is not accepted"
	case "jwt_bad_audience":
		return "audience is not accepted"
	case "jwt_missing_claim":
		return "a required claim (exp, iss or aud) is missing"
	case "jwt_bad_signature":
		return "signature or algorithm is not accepted"
	case "jwt_malformed":
		return "token is malformed"
	}
	return "token is not accepted"
}
