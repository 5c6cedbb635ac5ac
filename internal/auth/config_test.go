package auth

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/auth/authtest"
	"github.com/vtk/dispenser/internal/auth/keystore"
)

func TestConfigChainOrderAndValidation(t *testing.T) {
	dir := t.TempDir()
	ca := authtest.NewCA(t, "ca")
	caFile := authtest.WriteFile(t, dir, "ca.pem", ca.PEM)
	rules := []ARNRule{{ARN: "arn:aws:iam::873682911326:role/VTKWorker", Org: "vtk"}}
	c := Config{
		IAM:        &IAMConfig{ServerID: "https://d", Principals: rules},
		SigV4:      &SigV4Config{Region: "us-east-1", Keys: keystore.Config{Path: filepath.Join(dir, "keys.json")}},
		MTLS:       &MTLSConfig{CAFile: caFile, Principals: []CertRule{{Match: "*", Org: "o"}}},
		Gateway:    &GatewayConfig{TrustedProxies: []string{"10.0.0.0/8"}, Principals: rules},
		TLSEnabled: true,
	}
	c.ApplyDefaults()
	p := validateProblems()
	c.Validate(p, "auth")
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	chain, err := c.Build()
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 4 {
		t.Fatalf("chain has %d methods", len(chain))
	}
	if _, ok := chain[0].(*Gateway); !ok {
		t.Errorf("chain[0] = %T, want the gateway first (it must see a forwarded SigV4 header before sigv4 does)", chain[0])
	}
	if _, ok := chain[1].(*MTLS); !ok {
		t.Errorf("chain[1] = %T", chain[1])
	}
	if _, ok := chain[2].(*SigV4); !ok {
		t.Errorf("chain[2] = %T", chain[2])
	}
	if _, ok := chain[3].(*IAM); !ok {
		t.Errorf("chain[3] = %T", chain[3])
	}
	if ch := chain.Challenges(); len(ch) != 1 || ch[0][:16] != "AWS4-HMAC-SHA256" {
		t.Errorf("challenges %v", ch)
	}

	// mTLS without server TLS, and no method at all.
	c.TLSEnabled = false
	p = validateProblems()
	c.Validate(p, "auth")
	if !problemPaths(p)["auth.mtls"] {
		t.Errorf("mtls without TLS not reported: %v", p.List())
	}
	p = validateProblems()
	(&Config{}).Validate(p, "auth")
	if !problemPaths(p)["auth"] {
		t.Error("empty auth config accepted")
	}
}

// Behind API Gateway the worker's own SigV4 Authorization header (signed
// for the gateway with its AWS key) arrives too: the gateway identity must
// decide, and from an untrusted peer the same request must fail in sigv4
// rather than be trusted.
func TestChainGatewayBeforeSigV4(t *testing.T) {
	dir := t.TempDir()
	c := Config{
		SigV4:   &SigV4Config{Region: "us-east-1", Keys: keystore.Config{Path: filepath.Join(dir, "keys.json")}},
		Gateway: &GatewayConfig{TrustedProxies: []string{"10.0.0.0/8"}, Principals: []ARNRule{{ARN: "arn:aws:sts::873682911326:assumed-role/VTKWorker/*", Org: "vtk"}}},
	}
	c.ApplyDefaults()
	chain, err := c.Build()
	if err != nil {
		t.Fatal(err)
	}
	req := func(remote string) *http.Request {
		r := signed(t, "GET", "https://api.example.com/credentials?operation=get", nil, nil, "us-east-1", "execute-api", time.Now())
		r.RemoteAddr = remote
		r.Header.Set("X-Dispenser-Caller-Arn", "arn:aws:sts::873682911326:assumed-role/VTKWorker/i-1")
		return r
	}
	id, err := chain.Authenticate(req("10.1.2.3:4000"))
	if err != nil || id.Method != MethodGateway || id.Org != "vtk" {
		t.Fatalf("trusted: %+v %v", id, err)
	}
	_, err = chain.Authenticate(req("198.51.100.7:4000"))
	wantReason(t, err, "sigv4_unknown_key")
}
