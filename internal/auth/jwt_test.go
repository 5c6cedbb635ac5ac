package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newTestJWT builds an authenticator trusting one key of every kind.
func newTestJWT(t *testing.T) (*JWT, testKeys, string) {
	t.Helper()
	k := genKeys(t)
	dir := t.TempDir()
	hmacFile := filepath.Join(dir, "hmac.secret")
	if err := os.WriteFile(hmacFile, append(append([]byte{}, k.hmac...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_JWT_HMAC", "env-secret-env-secret-env-secret-0123")
	rsaFile := writePublicPEM(t, dir, "rsa.pem", &k.rsa.PublicKey)
	cfg := JWTConfig{
		Issuer: "https://issuer.test", Audience: "dispenser",
		Keys: []JWTKey{
			{ID: "rsa", PublicKeyFile: rsaFile, Algorithms: []string{"RS256", "PS256"}},
			{ID: "ec256", PublicKeyFile: writePublicPEM(t, dir, "ec256.pem", &k.ec256.PublicKey)},
			{ID: "ec384", PublicKeyFile: writePublicPEM(t, dir, "ec384.pem", &k.ec384.PublicKey)},
			{ID: "ed", PublicKeyFile: writePublicPEM(t, dir, "ed.pem", k.ed.Public())},
			{ID: "hmac-file", HMACSecretFile: hmacFile},
			{ID: "hmac-env", HMACSecretEnv: "TEST_JWT_HMAC"},
		},
	}
	cfg.ApplyDefaults()
	var p validate.Problems
	cfg.Validate(&p, "auth.jwt")
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	j, err := NewJWT(cfg, WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatal(err)
	}
	return j, k, rsaFile
}

func TestJWTVerify(t *testing.T) {
	j, k, rsaFile := newTestJWT(t)
	rsaPEM, err := os.ReadFile(rsaFile)
	if err != nil {
		t.Fatal(err)
	}
	with := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := testClaims(testNow)
		edit(c)
		return c
	}
	valid := testClaims(testNow)
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		token  string
		reason string // "" = accepted
		want   Identity
	}{
		{name: "RS256", token: sign(t, jwt.SigningMethodRS256, "rsa", valid, k.rsa)},
		{name: "PS256", token: sign(t, jwt.SigningMethodPS256, "rsa", valid, k.rsa)},
		{name: "RS512 not in the key's allow-list", token: sign(t, jwt.SigningMethodRS512, "rsa", valid, k.rsa), reason: "jwt_bad_signature"},
		{name: "ES256", token: sign(t, jwt.SigningMethodES256, "ec256", valid, k.ec256)},
		{name: "ES384", token: sign(t, jwt.SigningMethodES384, "ec384", valid, k.ec384)},
		{name: "ES256 with the P-384 kid", token: sign(t, jwt.SigningMethodES256, "ec384", valid, k.ec256), reason: "jwt_bad_signature"},
		{name: "EdDSA", token: sign(t, jwt.SigningMethodEdDSA, "ed", valid, k.ed)},
		{name: "EdDSA without kid", token: sign(t, jwt.SigningMethodEdDSA, "", valid, k.ed)},
		{name: "HS256 secret from file", token: sign(t, jwt.SigningMethodHS256, "hmac-file", valid, k.hmac)},
		{name: "HS256 secret from env", token: sign(t, jwt.SigningMethodHS256, "hmac-env", valid, []byte("env-secret-env-secret-env-secret-0123"))},
		{name: "HS256 file secret under the env kid", token: sign(t, jwt.SigningMethodHS256, "hmac-env", valid, k.hmac), reason: "jwt_bad_signature"},
		{name: "HS384 not allowed by default", token: sign(t, jwt.SigningMethodHS384, "hmac-file", valid, k.hmac), reason: "jwt_bad_signature"},
		{name: "alg none", token: noneTok, reason: "jwt_bad_signature"},
		{name: "alg confusion: HS256 keyed with the RSA public key PEM", token: sign(t, jwt.SigningMethodHS256, "rsa", valid, rsaPEM), reason: "jwt_bad_signature"},
		{name: "alg confusion without kid", token: sign(t, jwt.SigningMethodHS256, "", valid, rsaPEM), reason: "jwt_bad_signature"},
		{name: "signed by an unknown RSA key", token: sign(t, jwt.SigningMethodRS256, "rsa", valid, k.rsaOther), reason: "jwt_bad_signature"},
		{name: "unknown kid", token: sign(t, jwt.SigningMethodRS256, "nope", valid, k.rsa), reason: "jwt_bad_signature"},
		{name: "wrong issuer", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), k.ed), reason: "jwt_bad_issuer"},
		{name: "missing issuer", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { delete(c, "iss") }), k.ed), reason: "jwt_missing_claim"},
		{name: "wrong audience", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["aud"] = "other" }), k.ed), reason: "jwt_bad_audience"},
		{name: "audience list containing ours", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["aud"] = []string{"other", "dispenser"} }), k.ed)},
		{name: "missing audience", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { delete(c, "aud") }), k.ed), reason: "jwt_missing_claim"},
		{name: "expired beyond leeway", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["exp"] = testNow.Add(-31 * time.Second).Unix() }), k.ed), reason: "jwt_expired"},
		{name: "expired within leeway", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["exp"] = testNow.Add(-20 * time.Second).Unix() }), k.ed)},
		{name: "nbf beyond leeway", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["nbf"] = testNow.Add(31 * time.Second).Unix() }), k.ed), reason: "jwt_not_yet_valid"},
		{name: "nbf within leeway", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["nbf"] = testNow.Add(20 * time.Second).Unix() }), k.ed)},
		{name: "missing exp", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { delete(c, "exp") }), k.ed), reason: "jwt_missing_claim"},
		{name: "missing sub", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { delete(c, "sub") }), k.ed), reason: "jwt_no_principal"},
		{name: "missing org", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { delete(c, "org") }), k.ed), reason: "jwt_no_org"},
		{name: "org of the wrong type", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["org"] = 7 }), k.ed), reason: "jwt_no_org"},
		{name: "malformed", token: "a.b.c", reason: "jwt_malformed"},
		// A binding claim that is present must bind: read as absent, a
		// numeric job_id would make the token good for every job.
		{name: "job_id of the wrong type", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["job_id"] = 42 }), k.ed), reason: "jwt_bad_binding"},
		{name: "task_id of the wrong type", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["task_id"] = []string{"T1"} }), k.ed), reason: "jwt_bad_binding"},
		{name: "job_id null", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["job_id"] = nil }), k.ed), reason: "jwt_bad_binding"},
		// RFC 7515 §4.1.11: a critical header parameter the dispenser does
		// not process makes the token unacceptable, whatever it names.
		{name: "crit naming a claim", token: signHeader(t, jwt.SigningMethodEdDSA, "ed", valid, k.ed, map[string]any{"crit": []string{"exp"}}), reason: "jwt_unsupported_crit"},
		{name: "crit naming an extension", token: signHeader(t, jwt.SigningMethodEdDSA, "ed", valid, k.ed, map[string]any{"crit": []string{"b64"}, "b64": false}), reason: "jwt_unsupported_crit"},
		{name: "crit empty", token: signHeader(t, jwt.SigningMethodEdDSA, "ed", valid, k.ed, map[string]any{"crit": []string{}}), reason: "jwt_unsupported_crit"},
		{name: "crit not a list", token: signHeader(t, jwt.SigningMethodEdDSA, "ed", valid, k.ed, map[string]any{"crit": "exp"}), reason: "jwt_unsupported_crit"},
		{name: "job and task binding claims", token: sign(t, jwt.SigningMethodEdDSA, "ed", with(func(c jwt.MapClaims) { c["job_id"], c["task_id"] = "J1", "T1" }), k.ed),
			want: Identity{Principal: "worker-1", Org: "acme", Method: MethodJWT, JobID: "J1", TaskID: "T1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := j.Verify(tc.token)
			if tc.reason != "" {
				if err == nil {
					t.Fatalf("accepted, want %s", tc.reason)
				}
				fe := fault.From(err)
				if fe.Code != fault.Unauthorized || fe.Reason != tc.reason {
					t.Fatalf("got %s/%s (%v), want Unauthorized/%s", fe.Code, fe.Reason, err, tc.reason)
				}
				if strings.Contains(fe.Message, tc.token) {
					t.Fatalf("message echoes the token: %q", fe.Message)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if id.Principal != "worker-1" || id.Org != "acme" || id.Method != MethodJWT || id.Details["issuer"] != "https://issuer.test" {
				t.Fatalf("identity %+v", id)
			}
			if tc.want.JobID != "" && (id.JobID != tc.want.JobID || id.TaskID != tc.want.TaskID) {
				t.Fatalf("binding %q/%q, want %q/%q", id.JobID, id.TaskID, tc.want.JobID, tc.want.TaskID)
			}
		})
	}
}

func TestJWTCustomClaims(t *testing.T) {
	k := genKeys(t)
	dir := t.TempDir()
	j, err := NewJWT(JWTConfig{
		Issuer: "https://issuer.test", Audience: "dispenser",
		Keys:           []JWTKey{{PublicKeyFile: writePublicPEM(t, dir, "ed.pem", k.ed.Public())}},
		PrincipalClaim: "email", OrgClaim: "https://vtk/org", JobIDClaim: "jid", TaskIDClaim: "tid",
	}, WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatal(err)
	}
	c := testClaims(testNow)
	delete(c, "org")
	c["email"], c["https://vtk/org"], c["jid"], c["tid"] = "w@x.test", "globex", "J9", "T9"
	id, err := j.Verify(sign(t, jwt.SigningMethodEdDSA, "", c, k.ed))
	if err != nil {
		t.Fatal(err)
	}
	if id.Principal != "w@x.test" || id.Org != "globex" || id.JobID != "J9" || id.TaskID != "T9" {
		t.Fatalf("identity %+v", id)
	}
}

func TestJWTAuthenticateHeaderForms(t *testing.T) {
	j, k, _ := newTestJWT(t)
	tok := sign(t, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed)
	cases := []struct {
		name   string
		header string
		want   string // "ok", "none" (ErrNoCredentials) or a reason
	}{
		{"raw token (AWS_CONTAINER_AUTHORIZATION_TOKEN)", tok, "ok"},
		{"Bearer", "Bearer " + tok, "ok"},
		{"bearer lower case", "bearer " + tok, "ok"},
		{"Bearer with extra spaces", "Bearer   " + tok + " ", "ok"},
		{"no header", "", "none"},
		{"SigV4", "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=abc", "none"},
		{"Basic", "Basic dXNlcjpwYXNz", "none"},
		{"Bearer with a non-JWT", "Bearer not-a-jwt", "jwt_malformed"},
		{"raw garbage with two dots", "x.y.z", "jwt_malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/credentials", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			id, err := j.Authenticate(r)
			switch tc.want {
			case "ok":
				if err != nil || id.Principal != "worker-1" {
					t.Fatalf("got %+v, %v", id, err)
				}
			case "none":
				if !errors.Is(err, ErrNoCredentials) {
					t.Fatalf("got %v, want ErrNoCredentials", err)
				}
			default:
				if fe := fault.From(err); fe == nil || fe.Reason != tc.want {
					t.Fatalf("got %v, want %s", err, tc.want)
				}
			}
		})
	}
}

func TestChainFallsThroughOnlyOnNoCredentials(t *testing.T) {
	j, _, _ := newTestJWT(t)
	r := httptest.NewRequest("GET", "/", nil)
	_, err := Chain{j}.Authenticate(r)
	if fe := fault.From(err); fe.Code != fault.Unauthorized || fe.Reason != "missing_credentials" {
		t.Fatalf("got %v", err)
	}
	if got := (Chain{j}).Challenges(); len(got) != 1 || !strings.HasPrefix(got[0], "Bearer") {
		t.Fatalf("challenges %v", got)
	}
	// A failing bearer token is final: a later method never sees it.
	called := false
	r.Header.Set("Authorization", "Bearer a.b.c")
	_, err = Chain{j, &fakeAuth{fn: func(*http.Request) (Identity, error) { called = true; return Identity{}, nil }}}.Authenticate(r)
	if err == nil || called {
		t.Fatalf("err %v, later method called %v", err, called)
	}
}

// fakeAuth is an Authenticator whose behaviour is a function field.
type fakeAuth struct {
	fn func(*http.Request) (Identity, error)
}

var _ Authenticator = (*fakeAuth)(nil)

func (f *fakeAuth) Authenticate(r *http.Request) (Identity, error) { return f.fn(r) }

func TestJWTKeyConfigRefusals(t *testing.T) {
	k := genKeys(t)
	dir := t.TempDir()
	rsaFile := writePublicPEM(t, dir, "rsa.pem", &k.rsa.PublicKey)
	ecFile := writePublicPEM(t, dir, "ec.pem", &k.ec256.PublicKey)
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("too-short"), 0o600)
	cases := []struct {
		name string
		key  JWTKey
		want string
	}{
		{"RSA key with an HMAC algorithm", JWTKey{PublicKeyFile: rsaFile, Algorithms: []string{"HS256"}}, "cannot be used"},
		{"EC key with an RSA algorithm", JWTKey{PublicKeyFile: ecFile, Algorithms: []string{"RS256"}}, "cannot be used"},
		{"EC key with none", JWTKey{PublicKeyFile: ecFile, Algorithms: []string{"none"}}, "cannot be used"},
		{"short HMAC secret", JWTKey{HMACSecretFile: short}, "at least 32 bytes"},
		{"unset env", JWTKey{HMACSecretEnv: "DISPENSER_TEST_UNSET_VAR"}, "empty or unset"},
		{"two sources", JWTKey{PublicKeyFile: rsaFile, HMACSecretFile: short}, "exactly one"},
		{"missing file", JWTKey{PublicKeyFile: filepath.Join(dir, "nope.pem")}, "read public key"},
		{"not PEM", JWTKey{PublicKeyFile: short}, "no PEM block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewJWT(JWTConfig{Issuer: "i", Audience: "a", Keys: []JWTKey{tc.key}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestJWTConfigValidate(t *testing.T) {
	c := JWTConfig{JWKSURL: "http://example.com/jwks", Leeway: duration.Duration(time.Hour),
		JWKSRefresh: duration.Duration(time.Second), JWKSMinInterval: duration.Duration(time.Minute)}
	c.ApplyDefaults()
	var p validate.Problems
	c.Validate(&p, "auth.jwt")
	got := map[string]bool{}
	for _, pr := range p.List() {
		got[pr.Path] = true
	}
	for _, want := range []string{"auth.jwt.issuer", "auth.jwt.audience", "auth.jwt.leeway", "auth.jwt.jwks_url", "auth.jwt.jwks_refresh"} {
		if !got[want] {
			t.Errorf("no problem at %s (got %v)", want, p.List())
		}
	}
}

// BenchmarkJWTVerify is the EdDSA verification alone, to compare with
// api.BenchmarkCredentials (the whole request path).
func BenchmarkJWTVerify(b *testing.B) {
	k := genKeys(b)
	j, err := NewJWT(JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser",
		Keys: []JWTKey{{ID: "ed", PublicKeyFile: writePublicPEM(b, b.TempDir(), "ed.pem", k.ed.Public())}}},
		WithClock(func() time.Time { return testNow }))
	if err != nil {
		b.Fatal(err)
	}
	tok := sign(b, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := j.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
