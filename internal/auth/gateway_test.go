package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vtk/dispenser/internal/auth/authtest"
)

func TestNormalizeARN(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0abc": "arn:aws:iam::873682911326:role/VTKWorker",
		"arn:aws-cn:sts::873682911326:assumed-role/VTKWorker/s":   "arn:aws-cn:iam::873682911326:role/VTKWorker",
		"arn:aws:iam::873682911326:role/VTKWorker":                "arn:aws:iam::873682911326:role/VTKWorker",
		"arn:aws:iam::873682911326:user/alice":                    "arn:aws:iam::873682911326:user/alice",
		"arn:aws:sts::873682911326:assumed-role/VTKWorker":        "arn:aws:sts::873682911326:assumed-role/VTKWorker",
		"arn:aws:sts::873682911326:federated-user/bob":            "arn:aws:sts::873682911326:federated-user/bob",
		"not an arn": "not an arn",
		"arn:aws:sts::873682911326:assumed-role/VTKWorker/a/b/c":        "arn:aws:iam::873682911326:role/VTKWorker",
		"arn:aws:sts::379899276840:assumed-role/VTKWorker/botocore-123": "arn:aws:iam::379899276840:role/VTKWorker",
	} {
		if got := NormalizeARN(in); got != want {
			t.Errorf("NormalizeARN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestARNRules(t *testing.T) {
	rules := []ARNRule{
		{ARN: "arn:aws:sts::873682911326:assumed-role/VTKWorker/*", Org: "vtk-prod", RoleID: "AROAEXAMPLEPRODROLE1"},
		{ARN: "arn:aws:iam::379899276840:role/VTKWorker", Org: "vtk-staging"},
		{ARN: "arn:aws:iam::111122223333:role/team-?", Org: "teams"},
	}
	cases := []struct {
		arn, userID string
		org         string
		principal   string
		pinFailed   bool
	}{
		{"arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0abc", "AROAEXAMPLEPRODROLE1:i-0abc", "vtk-prod", "arn:aws:iam::873682911326:role/VTKWorker", false},
		{"arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0abc", "AROAOTHERRECREATED01:i-0abc", "", "", true},
		{"arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0abc", "", "", "", true},
		{"arn:aws:sts::873682911326:assumed-role/VTKWorkerX/s", "AROAEXAMPLEPRODROLE1:s", "", "", false},
		{"arn:aws:sts::379899276840:assumed-role/VTKWorker/s1", "", "vtk-staging", "arn:aws:iam::379899276840:role/VTKWorker", false},
		{"arn:aws:iam::379899276840:role/VTKWorker", "", "vtk-staging", "arn:aws:iam::379899276840:role/VTKWorker", false},
		{"arn:aws:sts::379899276840:assumed-role/VTKWorker2/s1", "", "", "", false},
		{"arn:aws:sts::999999999999:assumed-role/VTKWorker/s1", "", "", "", false},
		{"arn:aws:iam::379899276840:user/VTKWorker", "", "", "", false},
		{"arn:aws:sts::111122223333:assumed-role/team-a/x", "", "teams", "arn:aws:iam::111122223333:role/team-a", false},
		{"arn:aws:sts::111122223333:assumed-role/team-ab/x", "", "", "", false},
	}
	for _, tc := range cases {
		r, principal, ok, pin := matchARN(rules, tc.arn, tc.userID)
		if pin != tc.pinFailed || ok != (tc.org != "") || r.Org != tc.org || (ok && principal != tc.principal) {
			t.Errorf("%s (%s): org=%q principal=%q ok=%v pin=%v, want org=%q principal=%q pin=%v",
				tc.arn, tc.userID, r.Org, principal, ok, pin, tc.org, tc.principal, tc.pinFailed)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		ok   bool
	}{
		{"*", "", true}, {"a*", "a/b/c", true}, {"a*c", "abc", true}, {"a*c", "abd", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"*/x", "a/b/x", true}, {"a**b", "ab", true},
		{"abc", "abcd", false}, {"spiffe://vtk/*", "spiffe://vtk/ns/w", true},
	} {
		if got := globMatch(tc.p, tc.s); got != tc.ok {
			t.Errorf("globMatch(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}

func TestGatewayTrust(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	g, err := NewGateway(GatewayConfig{
		Header: "X-Dispenser-Caller-Arn", UserIDHeader: "X-Dispenser-Caller-Userid",
		TrustedProxies: []string{"10.0.0.0/16", "fd00::/8"},
		Principals:     []ARNRule{{ARN: "arn:aws:sts::873682911326:assumed-role/VTKWorker/*", Org: "vtk"}},
	}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	arn := "arn:aws:sts::873682911326:assumed-role/VTKWorker/task-1"
	for _, tc := range []struct {
		remote  string
		trusted bool
	}{
		{"10.0.3.4:5555", true}, {"[fd00::1]:443", true}, {"[::ffff:10.0.0.9]:1", true},
		{"10.1.0.1:5555", false}, {"192.0.2.1:80", false}, {"127.0.0.1:9", false}, {"garbage", false},
	} {
		r := httptest.NewRequest("GET", "/credentials", nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("X-Dispenser-Caller-Arn", arn)
		r.Header.Set("X-Dispenser-Caller-Userid", "AROAX:task-1")
		id, err := g.Authenticate(r)
		if tc.trusted {
			if err != nil || id.Org != "vtk" || id.Principal != "arn:aws:iam::873682911326:role/VTKWorker" || id.Method != MethodGateway {
				t.Errorf("%s: id=%+v err=%v", tc.remote, id, err)
			}
			continue
		}
		if !errors.Is(err, ErrNoCredentials) {
			t.Errorf("%s: err = %v, want ErrNoCredentials", tc.remote, err)
		}
		if r.Header.Get("X-Dispenser-Caller-Arn") != "" || r.Header.Get("X-Dispenser-Caller-Userid") != "" {
			t.Errorf("%s: header not stripped", tc.remote)
		}
	}
	if logs.FilterMessage("ignoring gateway identity header from an untrusted peer").Len() != 4 {
		t.Fatalf("untrusted attempts logged %d times, want 4", logs.Len())
	}

	// No header: not ours.
	r := httptest.NewRequest("GET", "/credentials", nil)
	r.RemoteAddr = "10.0.0.1:1"
	if _, err := g.Authenticate(r); !errors.Is(err, ErrNoCredentials) {
		t.Fatal(err)
	}
	// Unknown principal from the trusted gateway is a failure, not a fall-through.
	r.Header.Set("X-Dispenser-Caller-Arn", "arn:aws:sts::873682911326:assumed-role/Admin/x")
	_, err = g.Authenticate(r)
	wantReason(t, err, "gateway_unknown_principal")
	// Two identities.
	r.Header.Set("X-Dispenser-Caller-Arn", arn)
	r.Header.Add("X-Dispenser-Caller-Arn", arn)
	_, err = g.Authenticate(r)
	wantReason(t, err, "gateway_malformed")
}

// TestGatewayClientKey: from the trusted gateway, the failed-auth budget
// key is the asserted caller, or the address the gateway forwards; from
// anyone else (or with nothing asserted) the chain has no key and the
// TCP peer is used.
func TestGatewayClientKey(t *testing.T) {
	g, err := NewGateway(GatewayConfig{Header: "X-Dispenser-Caller-Arn", TrustedProxies: []string{"10.0.0.0/16"},
		Principals: []ARNRule{{ARN: "arn:aws:sts::873682911326:assumed-role/VTKWorker/*", Org: "vtk"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := "arn:aws:sts::1:assumed-role/" + strings.Repeat("x", 600)
	for _, tc := range []struct {
		name, remote, arn, xff string
		key                    string // "" = no key
	}{
		{"asserted caller", "10.0.3.4:1", "arn:aws:sts::1:assumed-role/R/s", "198.51.100.1", "caller:arn:aws:sts::1:assumed-role/R/s"},
		{"forwarded address", "10.0.3.4:1", "", "1.2.3.4, 198.51.100.1", "addr:198.51.100.1"},
		{"forwarded through a second gateway hop", "10.0.3.4:1", "", "198.51.100.1, 10.0.9.9", "addr:198.51.100.1"},
		{"only gateway hops", "10.0.3.4:1", "", "10.0.9.9", ""},
		{"nothing asserted", "10.0.3.4:1", "", "", ""},
		{"untrusted peer", "192.0.2.1:1", "arn:aws:sts::1:assumed-role/R/s", "198.51.100.1", ""},
		{"a very long ARN is hashed", "10.0.3.4:1", long, "", "caller:"},
	} {
		r := httptest.NewRequest("GET", "/credentials", nil)
		r.RemoteAddr = tc.remote
		if tc.arn != "" {
			r.Header.Set("X-Dispenser-Caller-Arn", tc.arn)
		}
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		key, ok := Chain{&JWT{}, g}.ClientKey(r)
		switch {
		case tc.key == "" && ok:
			t.Errorf("%s: key %q, want none", tc.name, key)
		case tc.key == "caller:" && (!ok || len(key) != len("caller:")+64):
			t.Errorf("%s: key %q, want caller:<sha256>", tc.name, key)
		case tc.key != "" && tc.key != "caller:" && key != tc.key:
			t.Errorf("%s: key %q %v, want %q", tc.name, key, ok, tc.key)
		}
	}
}

func TestGatewayValidate(t *testing.T) {
	c := GatewayConfig{TrustedProxies: []string{"0.0.0.0/0", "nope"}, TrustedClientCerts: []string{"spiffe://gw"},
		Principals: []ARNRule{{ARN: "arn:aws:sts::*:assumed-role/X/*", Org: ""}, {ARN: "bad", Org: "o", RoleID: "xx"}}}
	c.ApplyDefaults()
	p := validateProblems()
	c.Validate(p, "auth.gateway", false)
	got := problemPaths(p)
	for _, want := range []string{"auth.gateway.trusted_proxies[0]", "auth.gateway.trusted_proxies[1]", "auth.gateway.trusted_client_certs",
		"auth.gateway.principals[0].arn", "auth.gateway.principals[0].org", "auth.gateway.principals[1].arn", "auth.gateway.principals[1].role_id"} {
		if !got[want] {
			t.Errorf("missing %s in %v", want, got)
		}
	}
}

func TestGatewayTrustedByClientCertificate(t *testing.T) {
	ca := authtest.NewCA(t, "edge")
	gw, _, _ := ca.Issue(t, authtest.Leaf{CN: "apigw", URIs: []string{"spiffe://example.org/apigw"}})
	other, _, _ := ca.Issue(t, authtest.Leaf{CN: "worker", URIs: []string{"spiffe://example.org/worker"}})
	g, err := NewGateway(GatewayConfig{
		Header: "X-Dispenser-Caller-Arn", TrustedClientCerts: []string{"spiffe://example.org/apigw"},
		Principals: []ARNRule{{ARN: "arn:aws:iam::873682911326:role/VTKWorker", Org: "vtk"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's certificate is verified against auth.mtls's current
	// bundle, not trusted from the TLS stack's (possibly stale) chains.
	g.mtls, err = NewMTLS(MTLSConfig{CAFile: authtest.WriteFile(t, t.TempDir(), "ca.pem", ca.PEM), ClientAuth: "optional", PrincipalFrom: "uri"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	removed := authtest.NewCA(t, "removed-by-reload")
	stale, _, _ := removed.Issue(t, authtest.Leaf{CN: "apigw", URIs: []string{"spiffe://example.org/apigw"}})
	for _, tc := range []struct {
		name    string
		state   *tls.ConnectionState
		trusted bool
	}{
		{"gateway cert verified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{gw.Leaf}, VerifiedChains: [][]*x509.Certificate{{gw.Leaf, ca.Cert}}}, true},
		{"gateway cert from a CA no longer configured", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{stale.Leaf}, VerifiedChains: [][]*x509.Certificate{{stale.Leaf, removed.Cert}}}, false},
		{"gateway cert the listener did not verify, valid for the bundle", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{gw.Leaf}}, true},
		{"other cert", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{other.Leaf}, VerifiedChains: [][]*x509.Certificate{{other.Leaf, ca.Cert}}}, false},
		{"no tls", nil, false},
	} {
		r := httptest.NewRequest("GET", "/credentials", nil)
		r.RemoteAddr = "10.0.0.1:443"
		r.TLS = tc.state
		r.Header.Set("X-Dispenser-Caller-Arn", "arn:aws:sts::873682911326:assumed-role/VTKWorker/s")
		id, err := g.Authenticate(r)
		if tc.trusted != (err == nil && id.Org == "vtk") {
			t.Errorf("%s: id=%+v err=%v", tc.name, id, err)
		}
		if !tc.trusted && !errors.Is(err, ErrNoCredentials) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}
