package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/config"
)

// testConfig writes a complete configuration (fresh dev key pair, mock
// backend, one tenant) into a temp dir and returns its path. extra is
// appended to the YAML.
func testConfig(t *testing.T, withSigningKey bool) string {
	t.Helper()
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	pubFile, privFile := filepath.Join(dir, "verify.pem"), filepath.Join(dir, "sign.pem")
	must(t, os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600))
	must(t, os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600))
	signing := ""
	if withSigningKey {
		signing = fmt.Sprintf("    signing_key_file: %s\n    signing_key_id: e2e-1\n", privFile)
	}
	yml := fmt.Sprintf(`server:
  listen: 127.0.0.1:0
  min_remaining: 20m
log:
  level: debug
auth:
  jwt:
    issuer: https://dispenser.test/e2e
    audience: dispenser
    keys:
      - kid: e2e-1
        public_key_file: %s
        algorithms: [EdDSA]
%sbackends:
  default:
    type: mock
    account_id: "111122223333"
tenants:
  - org: acme
    role_arn: arn:aws:iam::111122223333:role/vtk-dispenser-target
    external_id: acme-vtk
    max_duration: 1h
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get, put, check, tag]
audit:
  type: sqlite
  path: %s
`, pubFile, signing, filepath.Join(dir, "audit.db"))
	p := filepath.Join(dir, "dispenser.yaml")
	must(t, os.WriteFile(p, []byte(yml), 0o600))
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startApp wires the real app from path and serves it on 127.0.0.1.
func startApp(t *testing.T, path string) *httptest.Server {
	t.Helper()
	a := testApp(t, path)
	srv := httptest.NewServer(a.server.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// mintToken runs the real `dispenser token` command.
func mintToken(t *testing.T, path string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(append([]string{"token", "--config", path}, args...), &out, &errb); code != 0 {
		t.Fatalf("token exited %d: %s", code, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// isolateSDK keeps the host's AWS configuration out of the SDK's chain.
func isolateSDK(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ROLE_ARN": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "",
	} {
		t.Setenv(k, v)
	}
}

var akidRe = regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`)

// TestEndToEndAWSSDK fetches credentials through the AWS SDK for Go v2's
// default chain (container credential provider), exactly as a worker does.
func TestEndToEndAWSSDK(t *testing.T) {
	path := testConfig(t, true)
	srv := startApp(t, path)
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme", "--job-id", "J1", "--task-id", "T1")
	endpoint := func(q url.Values) string { return srv.URL + "/credentials?" + q.Encode() }
	good := url.Values{"operation": {"storage:get"}, "location": {"s3://media/acme/in/"}, "job_id": {"J1"}, "task_id": {"T1"}}

	for _, authz := range []string{tok, "Bearer " + tok} {
		name := "raw token"
		if strings.HasPrefix(authz, "Bearer") {
			name = "Bearer token"
		}
		t.Run(name, func(t *testing.T) {
			isolateSDK(t)
			t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint(good))
			t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", authz)
			cfg, err := awsconfig.LoadDefaultConfig(context.Background())
			must(t, err)
			creds, err := cfg.Credentials.Retrieve(context.Background())
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			if !akidRe.MatchString(creds.AccessKeyID) || len(creds.SecretAccessKey) != 40 || creds.SessionToken == "" {
				t.Fatalf("credentials %+v", creds)
			}
			if !creds.CanExpire || time.Until(creds.Expires) < 40*time.Minute || time.Until(creds.Expires) > time.Hour+time.Second {
				t.Fatalf("expiry %v (can expire %v)", creds.Expires, creds.CanExpire)
			}
			if creds.AccountID != "111122223333" {
				t.Errorf("AccountID %q", creds.AccountID)
			}
		})
	}

	denials := []struct {
		name   string
		q      url.Values
		authz  string
		code   string
		status int
	}{
		{"outside the grant", url.Values{"operation": {"put"}, "location": {"s3://media/other/"}, "job_id": {"J1"}, "task_id": {"T1"}}, tok, "AccessDenied", 403},
		{"other job", url.Values{"operation": {"get"}, "location": {"s3://media/acme/in/"}, "job_id": {"J2"}, "task_id": {"T1"}}, tok, "AccessDenied", 403},
		{"bad location", url.Values{"operation": {"get"}, "location": {"s3://Media/acme/"}, "job_id": {"J1"}, "task_id": {"T1"}}, tok, "InvalidRequest", 400},
		{"bad token", good, "Bearer x.y.z", "Unauthorized", 401},
	}
	for _, d := range denials {
		t.Run("denied: "+d.name, func(t *testing.T) {
			isolateSDK(t)
			t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint(d.q))
			t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", d.authz)
			cfg, err := awsconfig.LoadDefaultConfig(context.Background())
			must(t, err)
			_, err = cfg.Credentials.Retrieve(context.Background())
			var api smithy.APIError
			if !errors.As(err, &api) || api.ErrorCode() != d.code {
				t.Fatalf("error %v does not carry code %s", err, d.code)
			}
			if api.ErrorMessage() == "" {
				t.Error("empty error message")
			}
			var he interface{ HTTPStatusCode() int }
			if errors.As(err, &he) && he.HTTPStatusCode() != d.status {
				t.Errorf("status %d, want %d", he.HTTPStatusCode(), d.status)
			}
		})
	}

	t.Run("endpointcreds provider directly", func(t *testing.T) {
		p := endpointcreds.New(endpoint(good), func(o *endpointcreds.Options) { o.AuthorizationToken = tok })
		creds, err := aws.NewCredentialsCache(p).Retrieve(context.Background())
		if err != nil || !akidRe.MatchString(creds.AccessKeyID) {
			t.Fatalf("%+v, %v", creds, err)
		}
	})
}

func TestWiredAppNotReadyUntilStarted(t *testing.T) {
	path := testConfig(t, true)
	cfg, err := config.Load(path)
	must(t, err)
	a, err := newApp(cfg, zap.NewNop())
	must(t, err)
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/credentials?operation=get&location=s3://media/acme/")
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("before start: %d %v", resp.StatusCode, resp.Header)
	}
}
