package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// IAMConfig authenticates callers holding AWS credentials by having them
// sign an sts:GetCallerIdentity request that the dispenser forwards to STS
// (the pattern of HashiCorp Vault's iam auth method). The lessons of
// CVE-2020-16250 are built in: the request may go only to a configured STS
// endpoint, redirects are never followed, only POST with exactly
// Action=GetCallerIdentity&Version=2011-06-15 is forwarded, only an
// allow-list of headers passes, and the server-id header must be present
// and signed so a request captured by one dispenser cannot be replayed to
// another.
type IAMConfig struct {
	// ServerID is the value the caller must sign in ServerIDHeader,
	// typically the dispenser's URL.
	ServerID string `yaml:"server_id"`
	// ServerIDHeader defaults to X-Dispenser-Server-Id.
	ServerIDHeader string `yaml:"server_id_header"`
	// RequestHeader carries the signed request (default
	// X-Dispenser-Iam-Request): base64 of the JSON
	// {"method","url","headers":{name:[values]},"body":base64}.
	RequestHeader string `yaml:"request_header"`
	// STSEndpoints are the endpoints a request may name (default the
	// global https://sts.amazonaws.com/). Only real STS hosts are allowed:
	// https://sts.amazonaws.com/ and https://sts.REGION.amazonaws.com/.
	STSEndpoints []string `yaml:"sts_endpoints"`
	// Timeout bounds the call to STS (default 5s).
	Timeout duration.Duration `yaml:"timeout"`
	// MaxSkew bounds the age of the signed request (default 5m); STS
	// itself accepts 15 minutes.
	MaxSkew duration.Duration `yaml:"max_skew"`
	// ReplayCache accepts each signed request once per replica: without
	// it, a captured header authenticates anyone who holds it until it is
	// MaxSkew old, like a short-lived bearer token.
	ReplayCache bool      `yaml:"replay_cache"`
	Principals  []ARNRule `yaml:"principals"`
}

// Default header names of the IAM method.
const (
	DefaultIAMRequestHeader  = "X-Dispenser-Iam-Request"
	DefaultIAMServerIDHeader = "X-Dispenser-Server-Id"
	// GetCallerIdentityBody is the only body forwarded to STS.
	GetCallerIdentityBody = "Action=GetCallerIdentity&Version=2011-06-15"
)

// ApplyDefaults fills unset fields.
func (c *IAMConfig) ApplyDefaults() {
	if c.ServerIDHeader == "" {
		c.ServerIDHeader = DefaultIAMServerIDHeader
	}
	if c.RequestHeader == "" {
		c.RequestHeader = DefaultIAMRequestHeader
	}
	if len(c.STSEndpoints) == 0 {
		c.STSEndpoints = []string{"https://sts.amazonaws.com/"}
	}
	if c.Timeout == 0 {
		c.Timeout = duration.Duration(5 * time.Second)
	}
	if c.MaxSkew == 0 {
		c.MaxSkew = duration.Duration(5 * time.Minute)
	}
}

var stsEndpointRe = regexp.MustCompile(`^https://sts(\.([a-z]{2}(-gov)?-[a-z]+-[0-9]))?\.amazonaws\.com(\.cn)?/?$`)

// stsEndpointRegion returns the signing region of an allowed endpoint: the
// global endpoint signs for us-east-1, a regional one for its region.
func stsEndpointRegion(endpoint string) (string, bool) {
	m := stsEndpointRe.FindStringSubmatch(endpoint)
	if m == nil {
		return "", false
	}
	if m[2] == "" {
		if m[4] != "" {
			return "", false // there is no global endpoint in the China partition
		}
		return "us-east-1", true
	}
	return m[2], true
}

// Validate records problems under path.
func (c *IAMConfig) Validate(p *validate.Problems, path string) {
	if c.ServerID == "" {
		p.Addf(validate.Join(path, "server_id"), "is required (for example the dispenser's URL): it stops a signed request being replayed to another server")
	}
	for i, e := range c.STSEndpoints {
		if _, ok := stsEndpointRegion(e); !ok {
			p.Addf(validate.Join(path, "sts_endpoints", i), "must be https://sts.amazonaws.com/ or https://sts.REGION.amazonaws.com/, got %q", e)
		}
	}
	if c.Timeout.D() <= 0 || c.Timeout.D() > time.Minute {
		p.Addf(validate.Join(path, "timeout"), "must be between 1s and 1m")
	}
	if c.MaxSkew.D() <= 0 || c.MaxSkew.D() > 15*time.Minute {
		p.Addf(validate.Join(path, "max_skew"), "must be between 1s and 15m")
	}
	validateARNRules(p, validate.Join(path, "principals"), c.Principals)
}

// IAMRequest is the signed GetCallerIdentity request a caller sends,
// JSON-encoded and then base64-encoded in the request header.
type IAMRequest struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Headers map[string][]string `json:"headers"`
	// Body is base64.
	Body string `json:"body"`
}

// IAM authenticates by forwarding a signed GetCallerIdentity to STS.
type IAM struct {
	cfg       IAMConfig
	endpoints map[string]iamEndpoint
	client    *http.Client
	now       func() time.Time
	replay    *replayCache
}

type iamEndpoint struct {
	url    *url.URL
	region string
}

// NewIAM returns the authenticator. client may be nil; its CheckRedirect
// is replaced so redirects are never followed. Tests pass a client whose
// transport dials a local server; the endpoint allow-list still applies.
func NewIAM(cfg IAMConfig, client *http.Client, now func() time.Time) (*IAM, error) {
	if now == nil {
		now = time.Now
	}
	c := &http.Client{Timeout: cfg.Timeout.D()}
	if client != nil {
		cc := *client
		c = &cc
		if c.Timeout == 0 {
			c.Timeout = cfg.Timeout.D()
		}
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	a := &IAM{cfg: cfg, client: c, now: now, endpoints: map[string]iamEndpoint{}}
	if cfg.ReplayCache {
		a.replay = newReplayCache(100_000)
	}
	for _, e := range cfg.STSEndpoints {
		region, ok := stsEndpointRegion(e)
		if !ok {
			return nil, fmt.Errorf("sts endpoint %q is not an STS endpoint", e)
		}
		u, err := url.Parse(e)
		if err != nil {
			return nil, err
		}
		u.Path = "/"
		a.endpoints[u.Host] = iamEndpoint{url: u, region: region}
	}
	return a, nil
}

func iamErr(reason, format string, args ...any) *fault.Error {
	return fault.New(fault.Unauthorized, "iam_"+reason, "IAM identity: "+format, args...)
}

// allowedIAMHeaders may be forwarded to STS (canonical form); the server-id
// header is added per configuration.
var allowedIAMHeaders = map[string]bool{
	"Authorization": true, "X-Amz-Date": true, "X-Amz-Security-Token": true, "X-Amz-Content-Sha256": true,
	"Content-Type": true, "Content-Length": true, "Host": true, "User-Agent": true,
}

// checked is a request that passed every local check.
type iamChecked struct {
	endpoint  iamEndpoint
	headers   http.Header
	body      []byte
	signature string
	signedAt  time.Time
}

// Authenticate implements Authenticator.
func (a *IAM) Authenticate(r *http.Request) (Identity, error) {
	raw := r.Header.Values(a.cfg.RequestHeader)
	if len(raw) == 0 {
		return Identity{}, ErrNoCredentials
	}
	if len(raw) != 1 {
		return Identity{}, iamErr("malformed", "send exactly one %s header", a.cfg.RequestHeader)
	}
	chk, err := a.check(raw[0])
	if err != nil {
		return Identity{}, err
	}
	id, err := a.forward(r, chk)
	if err != nil || a.replay == nil {
		return id, err
	}
	// Remembered only once STS vouched for it, so made-up signatures
	// cannot fill the cache; of two concurrent replays one wins here.
	switch a.replay.add(chk.signature, chk.signedAt.Add(a.cfg.MaxSkew.D()), a.now()) {
	case replaySeen:
		return Identity{}, iamErr("replayed", "this signed request was already used")
	case replayFull:
		return Identity{}, fault.New(fault.BackendUnavailable, "iam_replay_cache_full",
			"the replay cache is full; retry shortly").WithRetryAfter(time.Second)
	}
	return id, nil
}

// check applies every local rule before anything is sent to STS.
func (a *IAM) check(raw string) (iamChecked, error) {
	req, err := a.decode(raw)
	if err != nil {
		return iamChecked{}, err
	}
	ep, body, err := a.target(req)
	if err != nil {
		return iamChecked{}, err
	}
	h, err := a.forwarded(req, ep)
	if err != nil {
		return iamChecked{}, err
	}
	sig, signedAt, err := a.checkSigned(h, ep)
	if err != nil {
		return iamChecked{}, err
	}
	h.Del("Host")
	h.Del("Content-Length")
	return iamChecked{endpoint: ep, headers: h, body: body, signature: sig, signedAt: signedAt}, nil
}

// decode reads the header's value: base64 of one IAMRequest in JSON.
func (a *IAM) decode(raw string) (IAMRequest, error) {
	var req IAMRequest
	if len(raw) > 16<<10 {
		return req, iamErr("malformed", "the signed request is too large")
	}
	js, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return req, iamErr("malformed", "%s must be base64", a.cfg.RequestHeader)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, iamErr("malformed", "%s must be base64 JSON with method, url, headers and body", a.cfg.RequestHeader)
	}
	return req, nil
}

// target checks that req is a POST of exactly GetCallerIdentity to a
// configured STS endpoint, and returns the endpoint and the body.
func (a *IAM) target(req IAMRequest) (iamEndpoint, []byte, error) {
	if req.Method != http.MethodPost {
		return iamEndpoint{}, nil, iamErr("bad_method", "only POST GetCallerIdentity requests are accepted")
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "https" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return iamEndpoint{}, nil, iamErr("endpoint_not_allowed", "the request URL must be a configured STS endpoint, without query")
	}
	ep, ok := a.endpoints[strings.ToLower(u.Host)]
	if !ok {
		return iamEndpoint{}, nil, iamErr("endpoint_not_allowed", "the request URL must be a configured STS endpoint")
	}
	body, err := base64.StdEncoding.DecodeString(req.Body)
	if err != nil {
		return iamEndpoint{}, nil, iamErr("malformed", "body must be base64")
	}
	if string(body) != GetCallerIdentityBody {
		return iamEndpoint{}, nil, iamErr("bad_body", "the body must be exactly %s", GetCallerIdentityBody)
	}
	return ep, body, nil
}

// forwarded returns the headers to forward to STS: only allowed ones,
// each once, without control characters, the Host (if any) that of the
// endpoint, and the server id naming this dispenser.
func (a *IAM) forwarded(req IAMRequest, ep iamEndpoint) (http.Header, error) {
	sid := textproto.CanonicalMIMEHeaderKey(a.cfg.ServerIDHeader)
	h := http.Header{}
	for name, vals := range req.Headers {
		cn := textproto.CanonicalMIMEHeaderKey(name)
		if !allowedIAMHeaders[cn] && cn != sid {
			return nil, iamErr("header_not_allowed", "header %q may not be forwarded to STS", name)
		}
		if _, dup := h[cn]; dup || len(vals) != 1 {
			return nil, iamErr("malformed", "header %s must have exactly one value", cn)
		}
		if strings.ContainsAny(vals[0], "\r\n\x00") {
			return nil, iamErr("malformed", "header %s has a control character", cn)
		}
		h[cn] = vals
	}
	if host := h.Get("Host"); host != "" && !strings.EqualFold(host, ep.url.Host) {
		return nil, iamErr("endpoint_not_allowed", "the Host header must match the STS endpoint")
	}
	if got := h.Get(sid); got == "" {
		return nil, iamErr("missing_server_id", "the signed request must carry %s", a.cfg.ServerIDHeader)
	} else if got != a.cfg.ServerID {
		return nil, iamErr("wrong_server_id", "%s does not name this dispenser", a.cfg.ServerIDHeader)
	}
	return h, nil
}

// checkSigned checks the Authorization header (SigV4 for sts in the
// endpoint's region, covering the server id, host and date) and the
// signing time; it returns the signature and when it was made.
func (a *IAM) checkSigned(h http.Header, ep iamEndpoint) (string, time.Time, error) {
	parts, err := parseAuthorization(h.Get("Authorization"))
	if err != nil {
		return "", time.Time{}, iamErr("malformed", "the Authorization header must be AWS4-HMAC-SHA256")
	}
	if parts.Service != "sts" {
		return "", time.Time{}, iamErr("wrong_service", "the request must be signed for service sts")
	}
	if parts.Region != ep.region {
		return "", time.Time{}, iamErr("region_mismatch", "the request is signed for region %q but endpoint %s expects %q (use the regional endpoint of the signing region, or sign for %s)", parts.Region, ep.url.Host, ep.region, ep.region)
	}
	signed := map[string]bool{}
	for _, s := range parts.SignedHeaders {
		signed[s] = true
	}
	if !signed[strings.ToLower(a.cfg.ServerIDHeader)] {
		return "", time.Time{}, iamErr("server_id_not_signed", "%s must be included in SignedHeaders", a.cfg.ServerIDHeader)
	}
	if !signed["host"] || !signed["x-amz-date"] {
		return "", time.Time{}, iamErr("malformed", "host and x-amz-date must be signed")
	}
	t, err := time.Parse(sigV4TimeFormat, h.Get("X-Amz-Date"))
	if err != nil {
		return "", time.Time{}, iamErr("malformed", "X-Amz-Date must be YYYYMMDDTHHMMSSZ")
	}
	if d := a.now().Sub(t); d > a.cfg.MaxSkew.D() || d < -a.cfg.MaxSkew.D() {
		return "", time.Time{}, iamErr("clock_skew", "the signed request is older or newer than %s", a.cfg.MaxSkew)
	}
	return parts.Signature, t, nil
}

type getCallerIdentityResponse struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Result  struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
}

func (a *IAM) forward(r *http.Request, chk iamChecked) (Identity, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, chk.endpoint.url.String(), bytes.NewReader(chk.body))
	if err != nil {
		return Identity{}, fault.Wrap(err, fault.InternalError, "iam_internal", "internal error")
	}
	req.Header = chk.headers
	req.Host = chk.endpoint.url.Host
	resp, err := a.client.Do(req)
	if err != nil {
		return Identity{}, fault.Wrap(err, fault.BackendUnavailable, "iam_sts_unavailable", "STS could not be reached to verify the caller").WithRetryAfter(2 * time.Second)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Identity{}, fault.Wrap(err, fault.BackendUnavailable, "iam_sts_unavailable", "STS answer could not be read").WithRetryAfter(2 * time.Second)
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return Identity{}, iamErr("redirect", "STS answered with a redirect, which is never followed")
	case resp.StatusCode >= 500:
		return Identity{}, fault.New(fault.BackendUnavailable, "iam_sts_unavailable", "STS is unavailable (HTTP %d)", resp.StatusCode).WithRetryAfter(2 * time.Second)
	case resp.StatusCode != http.StatusOK:
		return Identity{}, fault.Wrap(fmt.Errorf("sts: HTTP %d: %.300s", resp.StatusCode, b), fault.Unauthorized, "iam_sts_rejected", "STS rejected the signed request (HTTP %d)", resp.StatusCode)
	}
	var out getCallerIdentityResponse
	if err := xml.Unmarshal(b, &out); err != nil || out.Result.Arn == "" {
		if err == nil {
			err = errors.New("no Arn")
		}
		return Identity{}, fault.Wrap(err, fault.BackendUnavailable, "iam_sts_bad_answer", "STS answered with an unreadable GetCallerIdentity response").WithRetryAfter(2 * time.Second)
	}
	rule, principal, ok, pinFailed := matchARN(a.cfg.Principals, out.Result.Arn, out.Result.UserID)
	if pinFailed {
		return Identity{}, iamErr("role_id_mismatch", "the caller's role unique id does not match the configured role_id")
	}
	if !ok {
		return Identity{}, iamErr("unknown_principal", "the caller's ARN matches no configured principal")
	}
	return Identity{Principal: principal, Org: rule.Org, Method: MethodIAM, Details: map[string]string{
		"arn": out.Result.Arn, "user_id": out.Result.UserID, "account": out.Result.Account, "sts_endpoint": chk.endpoint.url.Host,
	}}, nil
}
