package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

func TestAdminAuthentication(t *testing.T) {
	k := genKeys(t)
	dir := t.TempDir()
	edFile := writePublicPEM(t, dir, "ed.pem", k.ed.Public())
	const hashed = "admin-token-by-hash-0123456789abcdefghij"
	const fromEnv = "admin-token-from-env-0123456789abcdefghij"
	t.Setenv("TEST_ADMIN_TOKEN", fromEnv)
	sum := sha256.Sum256([]byte(hashed))
	cfg := AdminConfig{
		JWT: &JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser-admin", Keys: []JWTKey{{PublicKeyFile: edFile}}},
		Tokens: []AdminToken{
			{Name: "ops-hash", SHA256: hex.EncodeToString(sum[:])},
			{Name: "ops-env", TokenEnv: "TEST_ADMIN_TOKEN"},
		},
	}
	cfg.ApplyDefaults()
	var p validate.Problems
	cfg.Validate(&p, "admin", "dispenser")
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	a, err := cfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	// Pin the admin JWT clock: tokens below are minted at the real now.
	now := time.Now()
	admin := testClaims(now)
	admin["aud"] = "dispenser-admin"
	worker := testClaims(now)

	cases := []struct {
		name      string
		header    string
		principal string
		code      fault.Code
		reason    string
	}{
		{"hashed token", "Bearer " + hashed, "ops-hash", "", ""},
		{"env token", "Bearer " + fromEnv, "ops-env", "", ""},
		{"wrong token", "Bearer " + strings.Repeat("x", 40), "", fault.Unauthorized, "admin_bad_token"},
		{"token differing in the last byte", "Bearer " + hashed[:len(hashed)-1] + "k", "", fault.Unauthorized, "admin_bad_token"},
		{"raw token without Bearer", hashed, "", fault.Unauthorized, "missing_credentials"},
		{"no header", "", "", fault.Unauthorized, "missing_credentials"},
		{"admin JWT", "Bearer " + sign(t, jwt.SigningMethodEdDSA, "", admin, k.ed), "worker-1", "", ""},
		{"worker JWT is not an admin token", "Bearer " + sign(t, jwt.SigningMethodEdDSA, "", worker, k.ed), "", fault.AccessDenied, "admin_not_admin"},
		{"admin JWT with a bad signature", "Bearer " + sign(t, jwt.SigningMethodES256, "", admin, k.ec256), "", fault.Unauthorized, "jwt_bad_signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/audit", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			id, err := a.Authenticate(r)
			if tc.code == "" {
				if err != nil || id.Principal != tc.principal || id.Method != MethodAdmin {
					t.Fatalf("got %+v, %v", id, err)
				}
				return
			}
			fe := fault.From(err)
			if fe == nil || fe.Code != tc.code || fe.Reason != tc.reason {
				t.Fatalf("got %v, want %s/%s", err, tc.code, tc.reason)
			}
		})
	}
}

func TestAdminTokensIgnoreJWTs(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	at := &AdminTokens{names: []string{"n"}, digests: [][]byte{sum[:]}}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer a.b.c")
	if _, err := at.Authenticate(r); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("got %v", err)
	}
}

func TestAdminConfigValidate(t *testing.T) {
	t.Setenv("TEST_SHORT_ADMIN", "short")
	cfg := AdminConfig{
		JWT: &JWTConfig{Issuer: "i", Audience: "dispenser", Keys: []JWTKey{{HMACSecretEnv: "TEST_UNSET_ADMIN_HMAC"}}},
		Tokens: []AdminToken{
			{SHA256: "abc"},
			{Name: "both", SHA256: strings.Repeat("a", 64), TokenEnv: "X"},
			{Name: "short", TokenEnv: "TEST_SHORT_ADMIN"},
			{Name: "none"},
		},
	}
	cfg.ApplyDefaults()
	var p validate.Problems
	cfg.Validate(&p, "admin", "dispenser")
	want := []string{"admin.jwt.audience", "admin.jwt.keys[0]", "admin.tokens[0].name", "admin.tokens[0]", "admin.tokens[1]", "admin.tokens[2]", "admin.tokens[3]"}
	got := map[string]bool{}
	for _, pr := range p.List() {
		got[pr.Path] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no problem at %s; got %v", w, p.List())
		}
	}
	if (&AdminConfig{}).Enabled() {
		t.Fatal("empty admin config enabled")
	}
	if a, err := (&AdminConfig{}).Build(); a != nil || err != nil {
		t.Fatalf("disabled admin built %v, %v", a, err)
	}
}
