package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vtk/dispenser/internal/auth/keystore"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// SigV4Config configures AWS Signature Version 4 authentication with
// dispenser-issued access keys (the dispenser holds the secrets, as an
// S3-compatible server does).
type SigV4Config struct {
	// Region and Service are the credential scope callers must sign for.
	// Service defaults to execute-api, the name API Gateway uses, so a
	// worker that signs for API Gateway works unchanged.
	Region  string `yaml:"region"`
	Service string `yaml:"service"`
	// MaxSkew is the largest accepted difference between X-Amz-Date and
	// the dispenser's clock (default 5m, at most 15m).
	MaxSkew duration.Duration `yaml:"max_skew"`
	// MaxPresignExpires caps X-Amz-Expires of presigned URLs (default 1h).
	MaxPresignExpires duration.Duration `yaml:"max_presign_expires"`
	// ReplayCache refuses a signature seen before within its validity.
	// It is per replica: with several replicas it narrows, not closes, the
	// replay window.
	ReplayCache bool `yaml:"replay_cache"`
	// MaxBodyBytes bounds the body read to hash it (default 64 KiB).
	MaxBodyBytes int64           `yaml:"max_body_bytes"`
	Keys         keystore.Config `yaml:"keys"`
}

// ApplyDefaults fills unset fields.
func (c *SigV4Config) ApplyDefaults() {
	if c.Service == "" {
		c.Service = "execute-api"
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = duration.Duration(5 * time.Minute)
	}
	if c.MaxPresignExpires == 0 {
		c.MaxPresignExpires = duration.Duration(time.Hour)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	c.Keys.ApplyDefaults()
}

// Validate records problems under path.
func (c *SigV4Config) Validate(p *validate.Problems, path string) {
	if c.Region == "" {
		p.Addf(validate.Join(path, "region"), "is required (for example us-east-1)")
	}
	if c.MaxSkew.D() <= 0 || c.MaxSkew.D() > 15*time.Minute {
		p.Addf(validate.Join(path, "max_skew"), "must be between 1s and 15m")
	}
	if c.MaxPresignExpires.D() <= 0 || c.MaxPresignExpires.D() > 7*24*time.Hour {
		p.Addf(validate.Join(path, "max_presign_expires"), "must be between 1s and 168h (the SigV4 maximum)")
	}
	if c.MaxBodyBytes < 1024 {
		p.Addf(validate.Join(path, "max_body_bytes"), "must be at least 1024")
	}
	c.Keys.Validate(p, validate.Join(path, "keys"), validate.Join)
}

// AccessKeys finds a dispenser-issued access key. Lookup returns
// keystore.ErrNotFound for an unknown id.
type AccessKeys interface {
	Lookup(ctx context.Context, id string) (keystore.Key, error)
}

// SigV4 verifies SigV4-signed requests (Authorization header or presigned
// query) made with dispenser-issued keys.
type SigV4 struct {
	cfg    SigV4Config
	keys   AccessKeys
	now    func() time.Time
	replay *replayCache
}

// NewSigV4 returns the authenticator. now may be nil (time.Now).
func NewSigV4(cfg SigV4Config, keys AccessKeys, now func() time.Time) *SigV4 {
	if now == nil {
		now = time.Now
	}
	s := &SigV4{cfg: cfg, keys: keys, now: now}
	if cfg.ReplayCache {
		s.replay = newReplayCache(100_000)
	}
	return s
}

// Challenges implements Challenger.
func (s *SigV4) Challenges() []string {
	return []string{`AWS4-HMAC-SHA256 realm="dispenser", region="` + s.cfg.Region + `", service="` + s.cfg.Service + `"`}
}

func sigErr(reason, format string, args ...any) *fault.Error {
	return fault.New(fault.Unauthorized, "sigv4_"+reason, "SigV4: "+format, args...)
}

// sigV4Request is a parsed SigV4 request before the signature check.
type sigV4Request struct {
	parts     sigV4Parts
	amzDate   string
	signedAt  time.Time
	presigned bool
	expires   time.Duration
	query     []queryParam
}

// Authenticate implements Authenticator. The checks run cheapest first:
// the credential scope, the time window, what must be signed; only then
// the key store and the signature, and last the replay cache.
func (s *SigV4) Authenticate(r *http.Request) (Identity, error) {
	req, err := s.parse(r)
	if err != nil {
		return Identity{}, err
	}
	if err := s.checkScope(req); err != nil {
		return Identity{}, err
	}
	now := s.now()
	validUntil, err := s.validUntil(req, now)
	if err != nil {
		return Identity{}, err
	}
	if err := checkSigned(r, req); err != nil {
		return Identity{}, err
	}
	candidates, err := s.stringsToSign(r, req)
	if err != nil {
		return Identity{}, err
	}
	p := req.parts
	key, err := s.verify(r.Context(), p, candidates)
	if err != nil {
		return Identity{}, err
	}
	if err := s.checkReplay(p.Signature, validUntil, now); err != nil {
		return Identity{}, err
	}
	return Identity{
		Principal: key.Name,
		Org:       key.Org,
		Method:    MethodSigV4,
		Details: map[string]string{
			"access_key_id": key.ID,
			"region":        p.Region,
			"service":       p.Service,
			"presigned":     strconv.FormatBool(req.presigned),
		},
	}, nil
}

// checkScope checks the credential scope's region, service and date.
func (s *SigV4) checkScope(req sigV4Request) error {
	p := req.parts
	if p.Region != s.cfg.Region {
		return sigErr("wrong_region", "the credential scope must use region %q", s.cfg.Region)
	}
	if p.Service != s.cfg.Service {
		return sigErr("wrong_service", "the credential scope must use service %q", s.cfg.Service)
	}
	if p.Date != req.amzDate[:8] {
		return sigErr("bad_date", "the credential scope date does not match X-Amz-Date")
	}
	return nil
}

// validUntil checks the signing time against now and returns until when
// the signature is valid (how long the replay cache keeps it): a presigned
// URL until it expires, a signed request within the allowed clock skew.
func (s *SigV4) validUntil(req sigV4Request, now time.Time) (time.Time, error) {
	skew := s.cfg.MaxSkew.D()
	if req.presigned {
		if req.signedAt.After(now.Add(skew)) {
			return time.Time{}, sigErr("clock_skew", "X-Amz-Date is in the future")
		}
		validUntil := req.signedAt.Add(req.expires)
		if now.After(validUntil) {
			return time.Time{}, sigErr("expired", "the presigned request has expired")
		}
		return validUntil, nil
	}
	if d := now.Sub(req.signedAt); d > skew || d < -skew {
		return time.Time{}, sigErr("clock_skew", "X-Amz-Date is more than %s away from the server's time", skew)
	}
	return req.signedAt.Add(skew), nil
}

// checkSigned refuses a request whose signature leaves out what it must
// cover (host, x-amz-date, every x-amz-* header), or that carries a
// session token.
func checkSigned(r *http.Request, req sigV4Request) error {
	signed := map[string]bool{}
	for _, h := range req.parts.SignedHeaders {
		signed[h] = true
	}
	if !signed["host"] {
		return sigErr("host_not_signed", "the host header must be signed")
	}
	if !req.presigned && !signed["x-amz-date"] {
		return sigErr("header_not_signed", "the x-amz-date header must be signed")
	}
	for name := range r.Header {
		l := strings.ToLower(name)
		if strings.HasPrefix(l, "x-amz-") && !signed[l] {
			return sigErr("header_not_signed", "header %s must be signed", l)
		}
	}
	if r.Header.Get("X-Amz-Security-Token") != "" || hasParam(req.query, "X-Amz-Security-Token") {
		// Dispenser keys are long-term keys without a session token: a
		// token means the caller signed with some other credential.
		return sigErr("unexpected_security_token", "dispenser access keys carry no session token; do not send X-Amz-Security-Token")
	}
	return nil
}

// stringsToSign are the strings the caller may have signed: one per
// accepted payload hash and query form.
func (s *SigV4) stringsToSign(r *http.Request, req sigV4Request) ([]string, error) {
	p := req.parts
	payloads, err := s.payloadHashes(r, req)
	if err != nil {
		return nil, err
	}
	headers, err := canonicalHeaders(p.SignedHeaders, canonicalHost(r), r.Header, r.ContentLength)
	if err != nil {
		return nil, sigErr("malformed", "a signed header is missing from the request")
	}
	skip := ""
	if req.presigned {
		skip = "X-Amz-Signature"
	}
	queries := []string{canonicalQuery(req.query, skip)}
	if !req.presigned {
		// botocore signs an unencoded URL's query exactly as sent
		// (?location=s3://media/acme/in/); the signature then covers the
		// very bytes the dispenser reads, so that form is accepted too.
		// Presigned URLs are signed canonically by every SDK.
		if raw := rawSortedQuery(r.URL.RawQuery); raw != queries[0] {
			queries = append(queries, raw)
		}
	}
	uri := canonicalURI(r.URL)
	scope := p.Date + "/" + p.Region + "/" + p.Service + "/aws4_request"
	var out []string
	for _, query := range queries {
		for _, ph := range payloads {
			out = append(out, stringToSign(r.Method, uri, query, headers, p.SignedHeaders, ph, req.amzDate, scope))
		}
	}
	return out, nil
}

// verify looks the access key up and checks the signature against every
// candidate string to sign (each compared in constant time).
func (s *SigV4) verify(ctx context.Context, p sigV4Parts, candidates []string) (keystore.Key, error) {
	key, err := s.keys.Lookup(ctx, p.AccessKeyID)
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Key{}, sigErr("unknown_key", "unknown access key id")
	}
	if err != nil {
		return keystore.Key{}, fault.Wrap(err, fault.BackendUnavailable, "sigv4_keystore_unavailable", "the key store is unavailable").WithRetryAfter(2 * time.Second)
	}
	sk := signingKey(key.Secret.Reveal(), p.Date, p.Region, p.Service)
	ok := false
	for _, sts := range candidates {
		if signatureEqual(sigV4Signature(sk, sts), p.Signature) {
			ok = true
		}
	}
	if !ok {
		return keystore.Key{}, sigErr("bad_signature", "the signature does not match")
	}
	// A disabled key is reported only after the signature proves the
	// caller holds it, so key ids cannot be probed for their state.
	if key.Disabled {
		return keystore.Key{}, sigErr("key_disabled", "the access key is disabled")
	}
	return key, nil
}

// checkReplay refuses a signature already used while it is valid.
func (s *SigV4) checkReplay(signature string, validUntil, now time.Time) error {
	if s.replay == nil {
		return nil
	}
	switch s.replay.add(signature, validUntil, now) {
	case replaySeen:
		return sigErr("replayed", "this signature was already used")
	case replayFull:
		// Not the caller's fault: a transient overload, so 503.
		return fault.New(fault.BackendUnavailable, "sigv4_replay_cache_full",
			"the replay cache is full; retry shortly").WithRetryAfter(time.Second)
	}
	return nil
}

func hasParam(ps []queryParam, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

// parse recognises a SigV4 request; it returns ErrNoCredentials when the
// request carries neither form.
func (s *SigV4) parse(r *http.Request) (sigV4Request, error) {
	authz := r.Header.Values("Authorization")
	isHeader := len(authz) > 0 && strings.HasPrefix(authz[0], "AWS4-")
	q, qerr := parseQuery(r.URL.RawQuery)
	if qerr != nil {
		// An undecodable query is ours only if it looks like SigV4.
		if isHeader || strings.Contains(r.URL.RawQuery, "X-Amz-") {
			return sigV4Request{}, sigErr("malformed", "the query string is not valid percent-encoding")
		}
		return sigV4Request{}, ErrNoCredentials
	}
	// Presigned requests are recognised by parameter names, never by
	// substrings, so a location mentioning X-Amz-Signature is just data.
	isQuery := hasParam(q, "X-Amz-Signature") || hasParam(q, "X-Amz-Algorithm") || hasParam(q, "X-Amz-Credential")
	if !isHeader && !isQuery {
		return sigV4Request{}, ErrNoCredentials
	}
	if isHeader && isQuery {
		return sigV4Request{}, sigErr("malformed", "send the signature in the Authorization header or in the query, not both")
	}
	if isHeader {
		if len(authz) != 1 {
			return sigV4Request{}, sigErr("malformed", "send exactly one Authorization header")
		}
		if !strings.HasPrefix(authz[0], sigV4Algorithm+" ") {
			return sigV4Request{}, sigErr("unsupported_algorithm", "only AWS4-HMAC-SHA256 is supported")
		}
		parts, err := parseAuthorization(authz[0])
		if err != nil {
			return sigV4Request{}, sigErr("malformed", "the Authorization header is malformed")
		}
		dates := r.Header.Values("X-Amz-Date")
		if len(dates) != 1 {
			return sigV4Request{}, sigErr("bad_date", "send exactly one X-Amz-Date header")
		}
		t, err := time.Parse(sigV4TimeFormat, dates[0])
		if err != nil {
			return sigV4Request{}, sigErr("bad_date", "X-Amz-Date must be YYYYMMDDTHHMMSSZ")
		}
		return sigV4Request{parts: parts, amzDate: dates[0], signedAt: t, query: q}, nil
	}
	return s.parsePresigned(q)
}

func (s *SigV4) parsePresigned(q []queryParam) (sigV4Request, error) {
	vals := map[string]string{}
	for _, p := range q {
		switch p.Name {
		case "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires":
			if _, dup := vals[p.Name]; dup {
				return sigV4Request{}, sigErr("malformed", "query parameter %s is repeated", p.Name)
			}
			vals[p.Name] = p.Value
		}
	}
	for _, n := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires"} {
		if _, ok := vals[n]; !ok {
			return sigV4Request{}, sigErr("malformed", "presigned request lacks %s", n)
		}
	}
	if vals["X-Amz-Algorithm"] != sigV4Algorithm {
		return sigV4Request{}, sigErr("unsupported_algorithm", "only AWS4-HMAC-SHA256 is supported")
	}
	parts, err := buildParts(vals["X-Amz-Credential"], vals["X-Amz-SignedHeaders"], vals["X-Amz-Signature"])
	if err != nil {
		return sigV4Request{}, sigErr("malformed", "the presigned query is malformed")
	}
	t, err := time.Parse(sigV4TimeFormat, vals["X-Amz-Date"])
	if err != nil {
		return sigV4Request{}, sigErr("bad_date", "X-Amz-Date must be YYYYMMDDTHHMMSSZ")
	}
	secs, err := strconv.Atoi(vals["X-Amz-Expires"])
	if err != nil || secs < 1 || secs > 604800 || strconv.Itoa(secs) != vals["X-Amz-Expires"] {
		return sigV4Request{}, sigErr("malformed", "X-Amz-Expires must be 1..604800 seconds")
	}
	exp := time.Duration(secs) * time.Second
	if exp > s.cfg.MaxPresignExpires.D() {
		return sigV4Request{}, sigErr("expires_too_long", "X-Amz-Expires exceeds the configured maximum of %s", s.cfg.MaxPresignExpires)
	}
	return sigV4Request{parts: parts, amzDate: vals["X-Amz-Date"], signedAt: t, presigned: true, expires: exp, query: q}, nil
}

// payloadHashes returns the payload hashes the signature may cover. The body
// is read (bounded) and restored so the handler can decode it.
// UNSIGNED-PAYLOAD is accepted only for an empty body: the POST body carries
// the request, so it must be covered by the signature.
func (s *SigV4) payloadHashes(r *http.Request, req sigV4Request) ([]string, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBodyBytes+1))
		_ = r.Body.Close()
		if err != nil {
			return nil, sigErr("malformed", "cannot read the request body")
		}
		if int64(len(b)) > s.cfg.MaxBodyBytes {
			return nil, fault.New(fault.RequestTooLarge, "sigv4_body_too_large", "request body is larger than %d bytes", s.cfg.MaxBodyBytes)
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	sum := sha256.Sum256(body)
	actual := hex.EncodeToString(sum[:])
	claimed := r.Header.Values("X-Amz-Content-Sha256")
	if len(claimed) > 1 {
		return nil, sigErr("malformed", "send at most one X-Amz-Content-Sha256 header")
	}
	if len(claimed) == 1 {
		switch c := claimed[0]; {
		case c == unsignedPayload:
			if len(body) > 0 {
				return nil, sigErr("unsigned_payload", "UNSIGNED-PAYLOAD is accepted only for requests without a body")
			}
			return []string{unsignedPayload}, nil
		case c == actual:
			return []string{actual}, nil
		default:
			return nil, sigErr("bad_payload_hash", "X-Amz-Content-Sha256 does not match the body")
		}
	}
	if req.presigned && len(body) == 0 {
		// Presigned URLs are signed over UNSIGNED-PAYLOAD (S3 style) or the
		// empty hash; both say "no body".
		return []string{emptySHA256, unsignedPayload}, nil
	}
	return []string{actual}, nil
}

// replayCache remembers signatures until their validity ends.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[string]time.Time{}}
}

// Outcomes of replayCache.add.
const (
	replayNew = iota
	replaySeen
	replayFull
)

// add records sig and reports replayNew, replaySeen, or replayFull. When
// full, expired entries are swept; if still full the request is refused
// rather than the cache silently forgetting (fail closed under a flood).
func (c *replayCache) add(sig string, until, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[sig]; ok && now.Before(exp) {
		return replaySeen
	}
	if len(c.seen) >= c.max {
		for k, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			return replayFull
		}
	}
	c.seen[sig] = until
	return replayNew
}
