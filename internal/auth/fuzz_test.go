package auth

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzJWTAuthenticate feeds arbitrary Authorization headers: nothing may
// panic, and nothing but a correctly signed token may be accepted.
func FuzzJWTAuthenticate(f *testing.F) {
	k := genKeys(f)
	good := sign(f, jwt.SigningMethodEdDSA, "ed", testClaims(testNow), k.ed)
	for _, s := range []string{"", "Bearer ", "Bearer " + good, good, "a.b.c", "Bearer e30.e30.", "AWS4-HMAC-SHA256 x",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", good[:len(good)-2]} {
		f.Add(s)
	}
	dir := f.TempDir()
	j, err := NewJWT(JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser",
		Keys: []JWTKey{{ID: "ed", PublicKeyFile: writePublicPEM(f, dir, "ed.pem", k.ed.Public())}}},
		WithClock(func() time.Time { return testNow }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{h}
		id, err := j.Authenticate(r)
		if err == nil && (id.Principal != "worker-1" || id.Org != "acme") {
			t.Fatalf("accepted %q as %+v", h, id)
		}
	})
}
