package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

// TestCachedTokenStillChecked: a token served from the verified-token
// cache goes through every per-request check a freshly verified one does:
// its job and task bindings, and revocation of its principal.
func TestCachedTokenStillChecked(t *testing.T) {
	m := metrics.New("test")
	reg := revoke.NewRegistry(revoke.Options{Store: &revoketest.Mem{}})
	h := newHarness(t, func(o *Options) { o.Revocations = reg; o.Metrics = m })
	// The harness's JWT method, built with metrics to count cache hits.
	der, _ := x509.MarshalPKIXPublicKey(h.key.Public())
	pub := filepath.Join(t.TempDir(), "jwt.pub.pem")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ac := auth.Config{JWT: &auth.JWTConfig{Issuer: "https://issuer.test", Audience: "dispenser", Keys: []auth.JWTKey{{ID: "k1", PublicKeyFile: pub}}}}
	ac.ApplyDefaults()
	chain, _, err := ac.BuildWith(auth.BuildDeps{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.SetAuthenticator(chain, nil)
	hits := func() int { return int(testutil.ToFloat64(m.JWTCacheEvents.WithLabelValues("hit"))) }
	bound := h.token("worker-1", "acme", map[string]any{"job_id": "J1", "task_id": "T1"})
	get := func(authz, target string) int { return h.do("GET", target, authz, "", nil).Code }
	if c := get("Bearer "+bound, okQuery); c != 200 {
		t.Fatalf("first use: %d", c)
	}
	if c := get("Bearer "+bound, okQuery); c != 200 || hits() != 1 {
		t.Fatalf("repeat: %d, %d cache hits; want 200 from a hit", c, hits())
	}
	if c := get("Bearer "+bound, "/credentials?operation=get&location=s3://media/acme/in/&job_id=J2&task_id=T1"); c != 403 {
		t.Fatalf("cached token, other job: %d, want 403 (job binding)", c)
	}
	if _, err := reg.Add(context.Background(), revoke.Revocation{Kind: revoke.KindPrincipal, Value: "worker-1", Reason: "test"}, "ops"); err != nil {
		t.Fatal(err)
	}
	if c := get("Bearer "+bound, okQuery); c != 403 {
		t.Fatalf("cached token of a revoked principal: %d, want 403", c)
	}
	if n := hits(); n != 3 {
		t.Fatalf("%d cache hits, want 3: the refusals must have come on hits", n)
	}
}
