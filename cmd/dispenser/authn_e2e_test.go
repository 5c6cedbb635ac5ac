package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/vtk/dispenser/internal/auth/authtest"
	"github.com/vtk/dispenser/internal/config"
)

// e2eConfig writes a configuration with the given auth section (and
// optional server.tls) and returns its path.
func e2eConfig(t *testing.T, dir, authYAML, tlsYAML string) string {
	t.Helper()
	cfg := fmt.Sprintf(`server:
  listen: 127.0.0.1:0
%s
log: {level: error}
auth:
%s
backends:
  default: {type: mock, account_id: "111122223333"}
tenants:
  - org: acme
    role_arn: arn:aws:iam::111122223333:role/vtk-dispenser-target
    external_id: acme-vtk-api-name
    max_duration: 1h
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get, put, check, tag]
audit:
  type: sqlite
  path: %s
`, tlsYAML, authYAML, filepath.Join(dir, "audit.db"))
	p := filepath.Join(dir, "dispenser.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startApp wires the dispenser through newApp exactly as serve does.
func startAuthnApp(t *testing.T, path string) (*app, *config.Config) {
	t.Helper()
	a := testApp(t, path)
	return a, a.current.Load()
}

type vended struct {
	AccessKeyID string `json:"AccessKeyId"`
	Code        string `json:"code"`
}

func doJSON(t *testing.T, c *http.Client, req *http.Request) (int, vended) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v vended
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &v)
	return resp.StatusCode, v
}

const credPath = "/credentials?operation=get&location=s3://media/acme/videos/"

func TestE2ESigV4Keys(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "dispenser-keys.json")
	path := e2eConfig(t, dir, fmt.Sprintf(`  sigv4:
    region: us-east-1
    service: execute-api
    keys: {type: file, path: %s}`, keyFile), "")
	// The server starts before any key exists.
	a, _ := startAuthnApp(t, path)
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"keys", "create", "--config", path, "--name", "worker-1", "--org", "acme"}, &out, &errb); code != 0 {
		t.Fatalf("keys create: %d %s", code, errb.String())
	}
	var key struct{ AccessKeyId, SecretAccessKey string }
	if err := json.Unmarshal(out.Bytes(), &key); err != nil || key.AccessKeyId == "" || len(key.SecretAccessKey) < 40 {
		t.Fatalf("keys create output %q: %v", out.String(), err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st, err)
	}
	if code := run([]string{"keys", "create", "--config", path, "--name", "x", "--org", "nope"}, io.Discard, io.Discard); code == 0 {
		t.Fatal("a key for an unconfigured org was created")
	}
	creds := aws.Credentials{AccessKeyID: key.AccessKeyId, SecretAccessKey: key.SecretAccessKey}
	sign := func(method, target string, body []byte) *http.Request {
		req, _ := http.NewRequest(method, srv.URL+target, bytes.NewReader(body))
		if body == nil {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		sum := sha256Hex(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, sum, "execute-api", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		return req
	}
	if code, v := doJSON(t, srv.Client(), sign("GET", credPath, nil)); code != 200 || v.AccessKeyID == "" {
		t.Fatalf("GET: %d %+v", code, v)
	}
	body := []byte(`{"operation":"put","location":"s3://media/acme/uploads/"}`)
	req := sign("POST", "/credentials", body)
	req.Header.Set("Content-Type", "application/json")
	// Content-Type was added after signing: unsigned headers other than
	// x-amz-* are allowed, and the body is covered by the payload hash.
	if code, v := doJSON(t, srv.Client(), req); code != 200 || v.AccessKeyID == "" {
		t.Fatalf("POST: %d %+v", code, v)
	}
	// Another org's prefix is denied by scope, not by authentication.
	if code, _ := doJSON(t, srv.Client(), sign("GET", "/credentials?operation=get&location=s3://media/other/", nil)); code != http.StatusForbidden {
		t.Fatalf("other prefix: %d", code)
	}
	// A 401 names the SigV4 challenge.
	resp, err := srv.Client().Get(srv.URL + credPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), " "), "AWS4-HMAC-SHA256") {
		t.Fatalf("unauthenticated: %d %v", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}

	out.Reset()
	if code := run([]string{"keys", "list", "--config", path}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), key.AccessKeyId) || strings.Contains(out.String(), key.SecretAccessKey) {
		t.Fatalf("keys list: %d %q", code, out.String())
	}
	if code := run([]string{"keys", "disable", "--config", path, "--id", key.AccessKeyId}, io.Discard, io.Discard); code != 0 {
		t.Fatal("keys disable failed")
	}
	// The running server sees the change without a restart.
	if code, v := doJSON(t, srv.Client(), sign("GET", credPath, nil)); code != 401 || v.Code != "Unauthorized" {
		t.Fatalf("disabled key: %d %+v", code, v)
	}
	// A group-readable key file is refused.
	if err := os.Chmod(keyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"keys", "list", "--config", path}, io.Discard, io.Discard); code == 0 {
		t.Fatal("group-readable key file accepted")
	}
}

func TestE2EKeysEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.json")
	t.Setenv("TEST_DISPENSER_KEK", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	path := e2eConfig(t, dir, fmt.Sprintf(`  sigv4:
    region: us-east-1
    keys: {type: file, path: %s, kek_env: TEST_DISPENSER_KEK}`, keyFile), "")
	var out bytes.Buffer
	if code := run([]string{"keys", "create", "--config", path, "--name", "w", "--org", "acme"}, &out, io.Discard); code != 0 {
		t.Fatal("keys create failed")
	}
	var key struct{ SecretAccessKey string }
	_ = json.Unmarshal(out.Bytes(), &key)
	raw, _ := os.ReadFile(keyFile)
	if key.SecretAccessKey == "" || bytes.Contains(raw, []byte(key.SecretAccessKey)) || !bytes.Contains(raw, []byte("aesgcm:v1:")) {
		t.Fatalf("secret not encrypted at rest: %s", raw)
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestE2EGateway(t *testing.T) {
	arn := "arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0abc"
	for _, tc := range []struct {
		name    string
		proxies string
		status  int
	}{
		{"trusted proxy", "[127.0.0.1/32]", 200},
		{"untrusted peer", "[10.0.0.0/8]", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := e2eConfig(t, dir, fmt.Sprintf(`  gateway:
    header: X-Dispenser-Caller-Arn
    trusted_proxies: %s
    principals:
      - arn: arn:aws:sts::873682911326:assumed-role/VTKWorker/*
        org: acme`, tc.proxies), "")
			a, _ := startAuthnApp(t, path)
			srv := httptest.NewServer(a.server.Handler())
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+credPath, nil)
			req.Header.Set("X-Dispenser-Caller-Arn", arn)
			if code, v := doJSON(t, srv.Client(), req); code != tc.status || (code == 200 && v.AccessKeyID == "") {
				t.Fatalf("status %d %+v, want %d", code, v, tc.status)
			}
		})
	}
}

func TestE2EMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := authtest.NewCA(t, "mesh")
	_, certPEM, keyPEM := ca.Issue(t, authtest.Leaf{CN: "dispenser", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	tlsYAML := fmt.Sprintf("  tls: {cert_file: %s, key_file: %s}", authtest.WriteFile(t, dir, "srv.pem", certPEM), authtest.WriteFile(t, dir, "srv.key", keyPEM))
	path := e2eConfig(t, dir, fmt.Sprintf(`  mtls:
    ca_file: %s
    client_auth: required
    principal_from: uri
    principals:
      - match: spiffe://vtk.example/ns/workers/*
        org: acme`, authtest.WriteFile(t, dir, "ca.pem", ca.PEM)), tlsYAML)
	a, cfg := startAuthnApp(t, path)
	certs := a.certs
	if certs == nil {
		t.Fatal("newApp loaded no certificate for a TLS configuration")
	}
	tc, err := serverTLSConfig(func() *config.Config { return cfg }, certs.get)
	if err != nil {
		t.Fatal(err)
	}
	// httptest adds its own certificate unless one is set, and Go prefers
	// Certificates over GetCertificate for IP-address clients.
	tc.Certificates = []tls.Certificate{*certs.cert.Load()}
	srv := httptest.NewUnstartedServer(a.server.Handler())
	srv.TLS = tc
	srv.StartTLS()
	defer srv.Close()

	client := func(cert *tls.Certificate) *http.Client {
		c := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
	}
	worker, _, _ := ca.Issue(t, authtest.Leaf{URIs: []string{"spiffe://vtk.example/ns/workers/sa/encoder"}})
	req, _ := http.NewRequest("GET", srv.URL+credPath, nil)
	if code, v := doJSON(t, client(&worker), req); code != 200 || v.AccessKeyID == "" {
		t.Fatalf("mtls: %d %+v", code, v)
	}
	if _, err := client(nil).Get(srv.URL + credPath); err == nil {
		t.Fatal("required client certificate not enforced by the listener")
	}
}
