package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReloadFlushesJWTCache: a reload that replaces the JWT verification
// key refuses a token the previous key signed at once, although the
// previous chain had it in its verified-token cache.
func TestReloadFlushesJWTCache(t *testing.T) {
	path := testConfig(t, true)
	a := testApp(t, path)
	srv := httptest.NewServer(a.server.Handler())
	t.Cleanup(srv.Close)
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	get := func() int {
		req, _ := http.NewRequest("GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 2; i++ {
		if c := get(); c != 200 {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if hits := testutil.ToFloat64(a.metrics.JWTCacheEvents.WithLabelValues("hit")); hits != 1 {
		t.Fatalf("%v cache hits before the reload, want 1", hits)
	}
	// Rotate the verification key in place (same file, new key) and reload.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	must(t, os.WriteFile(filepath.Join(filepath.Dir(path), "verify.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	if err := a.reload(); err != nil {
		t.Fatal(err)
	}
	if c := get(); c != 401 {
		t.Fatalf("token of the replaced key after reload: %d, want 401", c)
	}
}
