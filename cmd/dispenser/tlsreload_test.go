package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
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

// TestTLSListenerOffersHTTP2: the per-handshake configuration keeps the
// ALPN protocols http.Server would offer, so TLS clients can use HTTP/2.
func TestTLSListenerOffersHTTP2(t *testing.T) {
	ca := authtest.NewCA(t, "server")
	cert, _, _ := ca.Issue(t, authtest.Leaf{CN: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	var cur atomic.Pointer[config.Config]
	cur.Store(&config.Config{})
	tc, err := serverTLSConfig(cur.Load, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: tc, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("negotiated %s, want HTTP/2", resp.Proto)
	}
}
