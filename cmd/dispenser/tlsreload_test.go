package main

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"testing"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/auth/authtest"
	"github.com/vtk/dispenser/internal/config"
)

// TestClientCAsFollowReload: the listener's client CA bundle is taken from
// the current configuration at each handshake, so a reload that replaces a
// CA applies to new connections.
func TestClientCAsFollowReload(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := authtest.NewCA(t, "old"), authtest.NewCA(t, "new")
	cfgFor := func(ca *authtest.CA, name string) *config.Config {
		return &config.Config{Auth: auth.Config{MTLS: &auth.MTLSConfig{
			CAFile: authtest.WriteFile(t, dir, name, ca.PEM), ClientAuth: "required", PrincipalFrom: "cn",
		}}}
	}
	var cur atomic.Pointer[config.Config]
	cur.Store(cfgFor(oldCA, "old.pem"))
	tc, err := serverTLSConfig(cur.Load, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	trusts := func(ca *authtest.CA) bool {
		got, err := tc.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if got.ClientAuth != tls.RequireAndVerifyClientCert || got.MinVersion != tls.VersionTLS12 {
			t.Fatalf("settings lost: %+v", got)
		}
		_, err = ca.Cert.Verify(x509VerifyOptions(got))
		return err == nil
	}
	if !trusts(oldCA) || trusts(newCA) {
		t.Fatal("before reload: want the old CA only")
	}
	cur.Store(cfgFor(newCA, "new.pem"))
	if trusts(oldCA) || !trusts(newCA) {
		t.Fatal("after reload: want the new CA only")
	}
}

func x509VerifyOptions(tc *tls.Config) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: tc.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
