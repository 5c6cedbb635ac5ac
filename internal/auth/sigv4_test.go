package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/vtk/dispenser/internal/auth/keystore"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/testenv"
	"github.com/vtk/dispenser/internal/validate"
)

func validateProblems() *validate.Problems { return &validate.Problems{} }

func problemPaths(p *validate.Problems) map[string]bool {
	m := map[string]bool{}
	for _, pr := range p.List() {
		m[pr.Path] = true
	}
	return m
}

// fakeKeys is an AccessKeys backed by a map.
type fakeKeys struct {
	LookupFunc func(ctx context.Context, id string) (keystore.Key, error)
}

func (f *fakeKeys) Lookup(ctx context.Context, id string) (keystore.Key, error) {
	return f.LookupFunc(ctx, id)
}

var _ AccessKeys = (*fakeKeys)(nil)

const (
	testAKID   = "DSPKTESTTESTTEST0001"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

var sigNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func sigv4TestKeys(disabled bool) *fakeKeys {
	return &fakeKeys{LookupFunc: func(_ context.Context, id string) (keystore.Key, error) {
		switch id {
		case testAKID:
			return keystore.Key{ID: id, Name: "worker-1", Org: "acme", Secret: secret.Secret(testSecret), Disabled: disabled}, nil
		case "DSPKOTHEROTHEROTHER1":
			return keystore.Key{ID: id, Name: "other", Org: "evil", Secret: secret.Secret("other-secret")}, nil
		}
		return keystore.Key{}, keystore.ErrNotFound
	}}
}

func newTestSigV4(t *testing.T, mod func(*SigV4Config)) *SigV4 {
	t.Helper()
	cfg := SigV4Config{Region: "us-east-1", Keys: keystore.Config{Path: "unused"}}
	if mod != nil {
		mod(&cfg)
	}
	cfg.ApplyDefaults()
	return NewSigV4(cfg, sigv4TestKeys(false), func() time.Time { return sigNow })
}

func creds() aws.Credentials {
	return aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret}
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// signed builds a request as a client sends it and signs it with the SDK
// signer, then converts it to what a server receives.
func signed(t *testing.T, method, target string, body []byte, hdr http.Header, region, service string, at time.Time) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds(), req, hashOf(body), service, region, at); err != nil {
		t.Fatal(err)
	}
	return toServer(t, req, body)
}

// toServer turns a client request into the request a server handler sees
// (RequestURI parsing, Host moved out of the header map).
func toServer(t *testing.T, req *http.Request, body []byte) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	sr := httptest.NewRequest(req.Method, req.URL.RequestURI(), rd)
	sr.Host = req.URL.Host
	if req.Host != "" {
		sr.Host = req.Host
	}
	for k, v := range req.Header {
		sr.Header[k] = v
	}
	return sr
}

func presigned(t *testing.T, method, target string, expires time.Duration, at time.Time, payload string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	q.Set("X-Amz-Expires", strconv.Itoa(int(expires.Seconds())))
	req.URL.RawQuery = q.Encode()
	u, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds(), req, payload, "execute-api", "us-east-1", at)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	req.URL = pu
	return toServer(t, req, nil)
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	var fe *fault.Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want fault with reason %s", err, reason)
	}
	if fe.Reason != reason {
		t.Fatalf("reason = %s (%v), want %s", fe.Reason, fe, reason)
	}
}

func TestSigV4ValidRequests(t *testing.T) {
	a := newTestSigV4(t, nil)
	extra := http.Header{"X-Dispenser-Job": {"job 42"}, "X-Amz-Meta-Thing": {"  a   b  "}, "Content-Type": {"application/json"}}
	cases := []struct {
		name   string
		method string
		target string
		body   []byte
		hdr    http.Header
	}{
		{"get simple", "GET", "https://dispenser.example.com/credentials?operation=get&location=s3://media/acme/", nil, nil},
		{"get needs encoding", "GET", "https://dispenser.example.com/credentials?operation=get&location=" + url.QueryEscape("s3://media/acme/with space/+plus/100%/ünï/") + "&file=" + url.QueryEscape("a b.mp4"), nil, nil},
		{"repeated params", "GET", "https://dispenser.example.com/credentials?file=b.mp4&operation=get&file=a.mp4&file=a.mp4&location=s3%3A%2F%2Fmedia%2Facme%2F", nil, nil},
		{"plus as space", "GET", "https://dispenser.example.com/credentials?location=s3://media/acme/a+b/&operation=get", nil, nil},
		{"empty value and bare name", "GET", "https://dispenser.example.com/credentials?a=&b&operation=get", nil, nil},
		{"encoded path", "GET", "https://dispenser.example.com/v1/who%20ami/%C3%BC", nil, nil},
		{"extra signed headers", "GET", "https://dispenser.example.com/credentials?operation=get", nil, extra},
		{"post body", "POST", "https://dispenser.example.com/credentials", []byte(`{"operation":"put","location":"s3://media/acme/x/"}`), http.Header{"Content-Type": {"application/json"}}},
		{"sigv4 words in data", "GET", "https://dispenser.example.com/credentials?operation=get&location=" + url.QueryEscape("s3://media/acme/X-Amz-Signature=1&X-Amz-Credential/"), nil, nil},
		{"port", "GET", "https://dispenser.example.com:8443/credentials?operation=get", nil, nil},
		{"default port", "GET", "https://dispenser.example.com:443/credentials?operation=get", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := signed(t, tc.method, tc.target, tc.body, tc.hdr, "us-east-1", "execute-api", sigNow)
			id, err := a.Authenticate(r)
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.Principal != "worker-1" || id.Org != "acme" || id.Method != MethodSigV4 || id.Details["access_key_id"] != testAKID {
				t.Fatalf("identity = %+v", id)
			}
			if tc.body != nil {
				got, _ := io.ReadAll(r.Body)
				if !bytes.Equal(got, tc.body) {
					t.Fatalf("body not restored: %q", got)
				}
			}
		})
	}
}

func TestSigV4XAmzContentSha256(t *testing.T) {
	a := newTestSigV4(t, nil)
	body := []byte(`{"operation":"get"}`)
	// Signed payload hash header matching the body.
	r := signed(t, "POST", "https://d.example.com/credentials", body, http.Header{"X-Amz-Content-Sha256": {hashOf(body)}}, "us-east-1", "execute-api", sigNow)
	if _, err := a.Authenticate(r); err != nil {
		t.Fatal(err)
	}
	// UNSIGNED-PAYLOAD without a body is fine.
	req, _ := http.NewRequest("GET", "https://d.example.com/credentials?operation=get", nil)
	req.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds(), req, unsignedPayload, "execute-api", "us-east-1", sigNow); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(toServer(t, req, nil)); err != nil {
		t.Fatal(err)
	}
	// UNSIGNED-PAYLOAD with a body is refused: the body would be unauthenticated.
	req, _ = http.NewRequest("POST", "https://d.example.com/credentials", bytes.NewReader(body))
	req.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds(), req, unsignedPayload, "execute-api", "us-east-1", sigNow); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(toServer(t, req, body))
	wantReason(t, err, "sigv4_unsigned_payload")
}

func TestSigV4Tampering(t *testing.T) {
	a := newTestSigV4(t, nil)
	body := []byte(`{"operation":"put","location":"s3://media/acme/x/"}`)
	base := func() *http.Request {
		return signed(t, "POST", "https://d.example.com/credentials?operation=put&file=a.mp4", body,
			http.Header{"Content-Type": {"application/json"}, "X-Dispenser-Job": {"j1"}}, "us-east-1", "execute-api", sigNow)
	}
	if _, err := a.Authenticate(base()); err != nil {
		t.Fatalf("untampered: %v", err)
	}
	setAuthz := func(r *http.Request, from, to string) {
		r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), from, to, 1))
	}
	cases := []struct {
		name   string
		mutate func(*http.Request)
		reason string
	}{
		{"method", func(r *http.Request) { r.Method = "PUT" }, "sigv4_bad_signature"},
		{"path", func(r *http.Request) { r.URL.Path = "/v1/whoami"; r.URL.RawPath = "" }, "sigv4_bad_signature"},
		{"query value", func(r *http.Request) { r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "a.mp4", "b.mp4", 1) }, "sigv4_bad_signature"},
		{"query added", func(r *http.Request) { r.URL.RawQuery += "&file=c.mp4" }, "sigv4_bad_signature"},
		{"query removed", func(r *http.Request) { r.URL.RawQuery = "operation=put" }, "sigv4_bad_signature"},
		{"signed header", func(r *http.Request) { r.Header.Set("X-Dispenser-Job", "j2") }, "sigv4_bad_signature"},
		{"host", func(r *http.Request) { r.Host = "evil.example.com" }, "sigv4_bad_signature"},
		{"body", func(r *http.Request) {
			b := bytes.Replace(body, []byte("acme"), []byte("evil"), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}, "sigv4_bad_signature"},
		{"date", func(r *http.Request) { r.Header.Set("X-Amz-Date", sigNow.Add(time.Second).Format(sigV4TimeFormat)) }, "sigv4_bad_signature"},
		{"scope date", func(r *http.Request) { setAuthz(r, "/20261127/", "/20261126/") }, "sigv4_bad_date"},
		{"region", func(r *http.Request) { setAuthz(r, "/us-east-1/", "/eu-west-1/") }, "sigv4_wrong_region"},
		{"service", func(r *http.Request) { setAuthz(r, "/execute-api/", "/s3/") }, "sigv4_wrong_service"},
		{"key id other valid key", func(r *http.Request) { setAuthz(r, testAKID, "DSPKOTHEROTHEROTHER1") }, "sigv4_bad_signature"},
		{"key id unknown", func(r *http.Request) { setAuthz(r, testAKID, "DSPKUNKNOWNUNKNOWN01") }, "sigv4_unknown_key"},
		{"signature", func(r *http.Request) {
			h := r.Header.Get("Authorization")
			last := h[len(h)-1]
			repl := byte('0')
			if last == '0' {
				repl = '1'
			}
			r.Header.Set("Authorization", h[:len(h)-1]+string(repl))
		}, "sigv4_bad_signature"},
		{"signed headers list shortened", func(r *http.Request) { setAuthz(r, ";x-dispenser-job", "") }, "sigv4_bad_signature"},
		{"host not signed", func(r *http.Request) { setAuthz(r, "host;", "") }, "sigv4_host_not_signed"},
		{"unsigned amz header", func(r *http.Request) { r.Header.Set("X-Amz-Extra", "1") }, "sigv4_header_not_signed"},
		{"security token", func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }, "sigv4_header_not_signed"},
		{"sigv4a", func(r *http.Request) { setAuthz(r, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256") }, "sigv4_unsupported_algorithm"},
		{"garbage authz", func(r *http.Request) { r.Header.Set("Authorization", "AWS4-HMAC-SHA256 nonsense") }, "sigv4_malformed"},
		{"two authz", func(r *http.Request) { r.Header.Add("Authorization", r.Header.Get("Authorization")) }, "sigv4_malformed"},
		{"payload hash header wrong", func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", emptySHA256) }, "sigv4_header_not_signed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.mutate(r)
			_, err := a.Authenticate(r)
			wantReason(t, err, tc.reason)
			if !fault.Is(err, fault.Unauthorized) {
				t.Fatalf("code = %v", err)
			}
		})
	}
}

func TestSigV4BodyHashMismatchWhenSigned(t *testing.T) {
	a := newTestSigV4(t, nil)
	body := []byte(`{"a":1}`)
	r := signed(t, "POST", "https://d.example.com/credentials", body, http.Header{"X-Amz-Content-Sha256": {hashOf(body)}}, "us-east-1", "execute-api", sigNow)
	b := []byte(`{"a":2}`)
	r.Body = io.NopCloser(bytes.NewReader(b))
	_, err := a.Authenticate(r)
	wantReason(t, err, "sigv4_bad_payload_hash")
}

func TestSigV4Skew(t *testing.T) {
	a := newTestSigV4(t, nil)
	for _, tc := range []struct {
		offset time.Duration
		ok     bool
	}{
		{0, true}, {-5 * time.Minute, true}, {5 * time.Minute, true},
		{-5*time.Minute - time.Second, false}, {5*time.Minute + time.Second, false}, {-time.Hour, false},
	} {
		r := signed(t, "GET", "https://d.example.com/credentials?operation=get", nil, nil, "us-east-1", "execute-api", sigNow.Add(tc.offset))
		_, err := a.Authenticate(r)
		if tc.ok && err != nil {
			t.Errorf("offset %s: %v", tc.offset, err)
		}
		if !tc.ok {
			wantReason(t, err, "sigv4_clock_skew")
		}
	}
}

func TestSigV4Presigned(t *testing.T) {
	a := newTestSigV4(t, nil)
	target := "https://d.example.com/credentials?operation=get&location=" + url.QueryEscape("s3://media/acme/a b/")
	for _, payload := range []string{emptySHA256, unsignedPayload} {
		r := presigned(t, "GET", target, 15*time.Minute, sigNow.Add(-10*time.Minute), payload)
		id, err := a.Authenticate(r)
		if err != nil {
			t.Fatalf("valid presigned (%s): %v", payload, err)
		}
		if id.Details["presigned"] != "true" || id.Org != "acme" {
			t.Fatalf("identity %+v", id)
		}
	}
	// Expired.
	r := presigned(t, "GET", target, 5*time.Minute, sigNow.Add(-6*time.Minute), emptySHA256)
	_, err := a.Authenticate(r)
	wantReason(t, err, "sigv4_expired")
	// Signed in the future beyond the skew.
	r = presigned(t, "GET", target, 5*time.Minute, sigNow.Add(6*time.Minute), emptySHA256)
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_clock_skew")
	// Longer than the configured cap.
	r = presigned(t, "GET", target, 2*time.Hour, sigNow, emptySHA256)
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_expires_too_long")
	// Tampered expiry / query.
	r = presigned(t, "GET", target, 5*time.Minute, sigNow.Add(-time.Minute), emptySHA256)
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "X-Amz-Expires=300", "X-Amz-Expires=900", 1)
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_bad_signature")
	r = presigned(t, "GET", target, 5*time.Minute, sigNow.Add(-time.Minute), emptySHA256)
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "operation=get", "operation=put", 1)
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_bad_signature")
	// Both forms at once.
	r = presigned(t, "GET", target, 5*time.Minute, sigNow, emptySHA256)
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_malformed")
	// Repeated signature parameter.
	r = presigned(t, "GET", target, 5*time.Minute, sigNow, emptySHA256)
	r.URL.RawQuery += "&X-Amz-Signature=" + strings.Repeat("0", 64)
	_, err = a.Authenticate(r)
	wantReason(t, err, "sigv4_malformed")
}

func TestSigV4DisabledKey(t *testing.T) {
	cfg := SigV4Config{Region: "us-east-1"}
	cfg.ApplyDefaults()
	a := NewSigV4(cfg, sigv4TestKeys(true), func() time.Time { return sigNow })
	r := signed(t, "GET", "https://d.example.com/credentials?operation=get", nil, nil, "us-east-1", "execute-api", sigNow)
	_, err := a.Authenticate(r)
	wantReason(t, err, "sigv4_key_disabled")
}

func TestSigV4KeystoreDown(t *testing.T) {
	cfg := SigV4Config{Region: "us-east-1"}
	cfg.ApplyDefaults()
	a := NewSigV4(cfg, &fakeKeys{LookupFunc: func(context.Context, string) (keystore.Key, error) {
		return keystore.Key{}, errors.New("disk on fire")
	}}, func() time.Time { return sigNow })
	r := signed(t, "GET", "https://d.example.com/credentials?operation=get", nil, nil, "us-east-1", "execute-api", sigNow)
	_, err := a.Authenticate(r)
	if !fault.Is(err, fault.BackendUnavailable) || strings.Contains(err.(*fault.Error).Message, "fire") {
		t.Fatalf("err = %v", err)
	}
}

func TestSigV4Replay(t *testing.T) {
	a := newTestSigV4(t, func(c *SigV4Config) { c.ReplayCache = true })
	r := signed(t, "GET", "https://d.example.com/credentials?operation=get", nil, nil, "us-east-1", "execute-api", sigNow)
	if _, err := a.Authenticate(r); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(r)
	wantReason(t, err, "sigv4_replayed")
	// Without the cache the same request passes twice.
	b := newTestSigV4(t, nil)
	for i := 0; i < 2; i++ {
		if _, err := b.Authenticate(r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReplayCacheExpiresAndBounds(t *testing.T) {
	c := newReplayCache(2)
	if c.add("a", sigNow.Add(time.Minute), sigNow) != replayNew || c.add("a", sigNow.Add(time.Minute), sigNow) != replaySeen {
		t.Fatal("first add must pass, second must be a replay")
	}
	if c.add("a", sigNow.Add(3*time.Minute), sigNow.Add(2*time.Minute)) != replayNew {
		t.Fatal("an expired entry must not block")
	}
	c.add("b", sigNow.Add(time.Hour), sigNow)
	if c.add("c", sigNow.Add(time.Hour), sigNow) != replayFull {
		t.Fatal("a full cache must refuse (as full, not as a replay), not forget")
	}
}

func TestSigV4NoCredentials(t *testing.T) {
	a := newTestSigV4(t, nil)
	for _, r := range []*http.Request{
		httptest.NewRequest("GET", "/credentials?operation=get", nil),
		func() *http.Request {
			r := httptest.NewRequest("GET", "/credentials", nil)
			r.Header.Set("Authorization", "Bearer abc")
			return r
		}(),
	} {
		if _, err := a.Authenticate(r); !errors.Is(err, ErrNoCredentials) {
			t.Fatalf("err = %v", err)
		}
	}
	if ch := a.Challenges(); len(ch) != 1 || !strings.HasPrefix(ch[0], "AWS4-HMAC-SHA256 ") {
		t.Fatal(ch)
	}
}

func TestSigV4ConfigValidate(t *testing.T) {
	c := SigV4Config{MaxSkew: duration.Duration(time.Hour)}
	c.ApplyDefaults()
	c.MaxSkew = duration.Duration(time.Hour)
	p := validateProblems()
	c.Validate(p, "auth.sigv4")
	got := problemPaths(p)
	for _, want := range []string{"auth.sigv4.region", "auth.sigv4.max_skew", "auth.sigv4.keys.path"} {
		if !got[want] {
			t.Errorf("missing problem at %s (got %v)", want, got)
		}
	}
}

func FuzzSigV4Parse(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature="+strings.Repeat("a", 64), "operation=get&location=s3%3A%2F%2Fb%2Fp%2F")
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/e,SignedHeaders=,Signature=", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2F20261127%2Fr%2Fs%2Faws4_request&X-Amz-Date=20261127T120000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00")
	f.Add("", "%zz=1&a=%")
	a := newTestSigV4(&testing.T{}, nil)
	f.Fuzz(func(t *testing.T, authz, rawQuery string) {
		if p, err := parseAuthorization(authz); err == nil {
			if len(p.Signature) != 64 || len(p.SignedHeaders) == 0 || p.AccessKeyID == "" {
				t.Fatalf("accepted malformed header %q: %+v", authz, p)
			}
		}
		if ps, err := parseQuery(rawQuery); err == nil {
			_ = canonicalQuery(ps, "X-Amz-Signature")
		}
		r := httptest.NewRequest("GET", "/credentials", nil)
		r.URL.RawQuery = rawQuery
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		r.Header.Set("X-Amz-Date", sigNow.Format(sigV4TimeFormat))
		id, err := a.Authenticate(r)
		if err == nil {
			t.Fatalf("forged request authenticated as %+v", id)
		}
		if !errors.Is(err, ErrNoCredentials) && fault.From(err).Code == fault.InternalError {
			t.Fatalf("internal error: %v", err)
		}
	})
}

// BenchmarkSigV4 compares verifying a GET (empty body) with a POST whose
// 16 KiB body is read, hashed and restored; the ratio shows what body
// hashing costs relative to the HMAC chain.
func BenchmarkSigV4(b *testing.B) {
	t := &testing.T{}
	a := newTestSigV4(t, nil)
	body := bytes.Repeat([]byte("x"), 16<<10)
	for _, bc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"get", func() *http.Request {
			return signed(t, "GET", "https://d.example.com/credentials?operation=get&location=s3%3A%2F%2Fmedia%2Facme%2F", nil, nil, "us-east-1", "execute-api", sigNow)
		}},
		{"post16k", func() *http.Request {
			return signed(t, "POST", "https://d.example.com/credentials", body, nil, "us-east-1", "execute-api", sigNow)
		}},
	} {
		r := bc.req()
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if r.Method == "POST" {
					r.Body = io.NopCloser(bytes.NewReader(body))
				}
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSigV4KeyIDNoStoreCanHold: an access key id PostgreSQL cannot take as
// text (invalid UTF-8 in the header, NUL from a presigned query) is an
// unknown key (401, charged to the failed-auth budget), not a key store
// outage (503, uncharged).
func TestSigV4KeyIDNoStoreCanHold(t *testing.T) {
	store, err := keystore.NewSQLStore("pgx", testenv.Postgres(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := SigV4Config{Region: "us-east-1"}
	cfg.ApplyDefaults()
	a := NewSigV4(cfg, store, func() time.Time { return sigNow })
	zero := strings.Repeat("0", 64)
	date := sigNow.Format(sigV4TimeFormat)
	header := httptest.NewRequest("GET", "/credentials?operation=get", nil)
	header.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=DSPK\xff\xfe/20261127/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature="+zero)
	header.Header.Set("X-Amz-Date", date)
	query := httptest.NewRequest("GET", "/credentials?operation=get&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=DSPK%00A%2F20261127%2Fus-east-1%2Fexecute-api%2Faws4_request&X-Amz-Date="+date+"&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature="+zero, nil)
	for name, r := range map[string]*http.Request{"header": header, "presigned": query} {
		_, err := a.Authenticate(r)
		if !fault.Is(err, fault.Unauthorized) {
			t.Errorf("%s: %v, want 401 sigv4_unknown_key", name, err)
			continue
		}
		wantReason(t, err, "sigv4_unknown_key")
	}
}
