package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/auth/authtest"
	"github.com/vtk/dispenser/internal/fault"
)

// mtlsServer starts a TLS server configured like serve.go does (through
// TLSServerSettings) whose handler reports the authentication result.
func mtlsServer(t *testing.T, cfg MTLSConfig, ca *authtest.CA) *httptest.Server {
	t.Helper()
	m, err := NewMTLS(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := m.Authenticate(r)
		out := map[string]any{"principal": id.Principal, "org": id.Org}
		switch {
		case errors.Is(err, ErrNoCredentials):
			out["error"] = "none"
		case err != nil:
			out["error"] = fault.From(err).Reason
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	pool, clientAuth, err := cfg.TLSServerSettings()
	if err != nil {
		t.Fatal(err)
	}
	serverCert, _, _ := ca.Issue(t, authtest.Leaf{CN: "dispenser", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: clientAuth}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func clientFor(ca *authtest.CA, cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Always present the certificate, even when its issuer is not among
		// the server's acceptable CAs (an attacker would).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}

func call(t *testing.T, c *http.Client, url string) (map[string]any, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out, nil
}

func TestMTLSHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := authtest.NewCA(t, "mesh-ca")
	other := authtest.NewCA(t, "other-ca")
	caFile := authtest.WriteFile(t, dir, "ca.pem", ca.PEM)
	rules := []CertRule{{Match: "spiffe://vtk.example/ns/workers/*", Org: "vtk"}}

	valid, _, _ := ca.Issue(t, authtest.Leaf{CN: "w1", URIs: []string{"spiffe://vtk.example/ns/workers/sa/w1"}})
	expired, _, _ := ca.Issue(t, authtest.Leaf{CN: "w1", URIs: []string{"spiffe://vtk.example/ns/workers/sa/w1"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	wrongCA, _, _ := other.Issue(t, authtest.Leaf{CN: "w1", URIs: []string{"spiffe://vtk.example/ns/workers/sa/w1"}})
	unmapped, _, _ := ca.Issue(t, authtest.Leaf{CN: "x", URIs: []string{"spiffe://vtk.example/ns/admin/sa/x"}})
	noURI, _, _ := ca.Issue(t, authtest.Leaf{CN: "cn-only"})

	t.Run("optional", func(t *testing.T) {
		cfg := MTLSConfig{CAFile: caFile, Principals: rules}
		cfg.ApplyDefaults()
		srv := mtlsServer(t, cfg, ca)
		out, err := call(t, clientFor(ca, &valid), srv.URL)
		if err != nil || out["org"] != "vtk" || out["principal"] != "spiffe://vtk.example/ns/workers/sa/w1" || out["error"] != nil {
			t.Fatalf("valid: %v %v", out, err)
		}
		// No certificate: the handshake succeeds and the method steps aside.
		out, err = call(t, clientFor(ca, nil), srv.URL)
		if err != nil || out["error"] != "none" {
			t.Fatalf("no cert: %v %v", out, err)
		}
		if _, err := call(t, clientFor(ca, &expired), srv.URL); err == nil {
			t.Fatal("expired certificate accepted by the handshake")
		}
		if _, err := call(t, clientFor(ca, &wrongCA), srv.URL); err == nil {
			t.Fatal("certificate from another CA accepted by the handshake")
		}
		out, err = call(t, clientFor(ca, &unmapped), srv.URL)
		if err != nil || out["error"] != "mtls_unknown_principal" {
			t.Fatalf("unmapped: %v %v", out, err)
		}
		out, err = call(t, clientFor(ca, &noURI), srv.URL)
		if err != nil || out["error"] != "mtls_no_principal" {
			t.Fatalf("no uri: %v %v", out, err)
		}
	})
	t.Run("two URI SANs", func(t *testing.T) {
		// A SPIFFE SVID carries exactly one URI SAN: with two, which one
		// names the caller is the certificate holder's choice.
		two, _, _ := ca.Issue(t, authtest.Leaf{CN: "w1", URIs: []string{"spiffe://vtk.example/ns/workers/sa/w1", "spiffe://vtk.example/ns/admin/sa/root"}})
		cfg := MTLSConfig{CAFile: caFile, Principals: rules}
		cfg.ApplyDefaults()
		srv := mtlsServer(t, cfg, ca)
		out, err := call(t, clientFor(ca, &two), srv.URL)
		if err != nil || out["error"] != "mtls_ambiguous_principal" || out["principal"] != "" {
			t.Fatalf("two URI SANs: %v %v, want mtls_ambiguous_principal", out, err)
		}
		// principal_from dns or cn does not read URI SANs: not ambiguous.
		cfg = MTLSConfig{CAFile: caFile, PrincipalFrom: "cn", Principals: []CertRule{{Match: "w1", Org: "vtk"}}}
		cfg.ApplyDefaults()
		srv = mtlsServer(t, cfg, ca)
		if out, err := call(t, clientFor(ca, &two), srv.URL); err != nil || out["principal"] != "w1" {
			t.Fatalf("cn with two URI SANs: %v %v", out, err)
		}
	})
	t.Run("required", func(t *testing.T) {
		cfg := MTLSConfig{CAFile: caFile, ClientAuth: "required", Principals: rules}
		cfg.ApplyDefaults()
		srv := mtlsServer(t, cfg, ca)
		if _, err := call(t, clientFor(ca, nil), srv.URL); err == nil {
			t.Fatal("no certificate accepted when required")
		}
		if out, err := call(t, clientFor(ca, &valid), srv.URL); err != nil || out["org"] != "vtk" {
			t.Fatalf("valid: %v %v", out, err)
		}
	})
	t.Run("cn and dns", func(t *testing.T) {
		for _, from := range []string{"cn", "dns"} {
			cfg := MTLSConfig{CAFile: caFile, PrincipalFrom: from, Principals: []CertRule{{Match: "worker-*.vtk.example", Org: "vtk"}}}
			cfg.ApplyDefaults()
			srv := mtlsServer(t, cfg, ca)
			c, _, _ := ca.Issue(t, authtest.Leaf{CN: "worker-7.vtk.example", DNS: []string{"worker-7.vtk.example"}})
			out, err := call(t, clientFor(ca, &c), srv.URL)
			if err != nil || out["org"] != "vtk" || out["principal"] != "worker-7.vtk.example" {
				t.Fatalf("%s: %v %v", from, out, err)
			}
		}
	})
}

// A listener that only requests certificates (does not verify them) must
// not let an unverified certificate through: the authenticator verifies.
func TestMTLSVerifiesItself(t *testing.T) {
	dir := t.TempDir()
	ca := authtest.NewCA(t, "mesh-ca")
	other := authtest.NewCA(t, "other-ca")
	cfg := MTLSConfig{CAFile: authtest.WriteFile(t, dir, "ca.pem", ca.PEM), Principals: []CertRule{{Match: "*", Org: "o"}}}
	cfg.ApplyDefaults()
	m, err := NewMTLS(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := other.Issue(t, authtest.Leaf{URIs: []string{"spiffe://x/y"}})
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{foreign.Leaf}}
	_, err = m.Authenticate(r)
	wantReason(t, err, "mtls_untrusted_certificate")
	expired, _, _ := ca.Issue(t, authtest.Leaf{URIs: []string{"spiffe://x/y"}, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	r = httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{expired.Leaf}}
	_, err = m.Authenticate(r)
	wantReason(t, err, "mtls_untrusted_certificate")
}

func TestMTLSValidate(t *testing.T) {
	c := MTLSConfig{CAFile: "/nonexistent.pem", ClientAuth: "sometimes", PrincipalFrom: "email", Principals: []CertRule{{}}}
	p := validateProblems()
	c.Validate(p, "auth.mtls", false)
	got := problemPaths(p)
	for _, want := range []string{"auth.mtls", "auth.mtls.ca_file", "auth.mtls.client_auth", "auth.mtls.principal_from", "auth.mtls.principals[0].match", "auth.mtls.principals[0].org"} {
		if !got[want] {
			t.Errorf("missing %s in %v", want, got)
		}
	}
}
