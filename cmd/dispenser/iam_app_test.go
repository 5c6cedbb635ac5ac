package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/ststest"
)

// stsRedirect sends every request for a real STS host to a local fake STS
// over plain HTTP, keeping the Host the caller signed. It stands where
// DNS and TLS would: the dispenser still builds the request for the
// allow-listed https://sts.REGION.amazonaws.com/ endpoint.
type stsRedirect struct {
	to    string // host:port of the fake
	mu    sync.Mutex
	hosts []string
}

func (s *stsRedirect) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.hosts = append(s.hosts, r.URL.Scheme+"://"+r.URL.Host)
	s.mu.Unlock()
	r = r.Clone(r.Context())
	r.Host = r.URL.Host
	r.URL.Scheme, r.URL.Host = "http", s.to
	return http.DefaultTransport.RoundTrip(r)
}

const workerARN = "arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0123456789abcdef0"

// TestIAMIdentityThroughNewApp runs the IAM method through the fully wired
// app: a worker signs GetCallerIdentity for the regional STS endpoint, the
// dispenser forwards it (to a local STS speaking the wire protocol), maps
// the ARN to a tenant, assumes the tenant's role at the same local STS and
// returns the credentials; the audit trail names the IAM principal. The
// injected STS client survives a reload.
func TestIAMIdentityThroughNewApp(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIADISPENSERBASE001")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dispenser-base-secret-0123456789abcdefgh")

	sts := ststest.New(t)
	sts.Handle("GetCallerIdentity", func(w http.ResponseWriter, r *ststest.Request) {
		authz := r.Header.Get("Authorization")
		if r.Header.Get("X-Dispenser-Server-Id") != "https://dispenser.example.com" ||
			!strings.Contains(authz, "Credential=ASIAWORKER0000000001/") || !strings.Contains(authz, "/eu-west-1/sts/aws4_request") ||
			!strings.Contains(authz, "x-dispenser-server-id") || r.Header.Get("X-Amz-Security-Token") != "worker-session-token" {
			ststest.WriteFault(w, ststest.Fault{Status: 403, Type: "Sender", Code: "SignatureDoesNotMatch", Message: "bad signature"})
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="%s"><GetCallerIdentityResult><Arn>%s</Arn><UserId>AROAVTKWORKERPROD0001:i-0123456789abcdef0</UserId><Account>873682911326</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>`,
			ststest.Namespace, workerARN)
	})
	redirect := &stsRedirect{to: strings.TrimPrefix(sts.URL, "http://")}

	dir := t.TempDir()
	path := filepath.Join(dir, "dispenser.yaml")
	writeFile(t, path, fmt.Sprintf(`server:
  listen: 127.0.0.1:0
log: {level: error}
auth:
  iam:
    server_id: https://dispenser.example.com
    sts_endpoints: [https://sts.eu-west-1.amazonaws.com/]
    principals:
      - arn: arn:aws:sts::873682911326:assumed-role/VTKWorker/*
        role_id: AROAVTKWORKERPROD0001
        org: acme
backends:
  default:
    type: assume-role
    region: us-east-1
    endpoint: %s
tenants:
  - org: acme
    role_arn: arn:aws:iam::222222222222:role/vtk-dispenser-target
    external_id: acme-vtk-api-name
    max_duration: 1h
    session_tags: {job-id: "{job_id}"}
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get]
audit:
  type: sqlite
  path: %s
`, sts.URL, filepath.Join(dir, "audit.db")))
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAppWith(cfg, zap.NewNop(), appDeps{STSClient: &http.Client{Transport: redirect}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.close() })
	a.run(context.Background())
	if err := a.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.server.Handler())
	t.Cleanup(srv.Close)

	worker := aws.Credentials{AccessKeyID: "ASIAWORKER0000000001", SecretAccessKey: "worker-secret-0123456789", SessionToken: "worker-session-token"}
	ask := func(endpoint, region string) (int, vended) {
		t.Helper()
		h, err := auth.SignIAMRequest(context.Background(), worker, endpoint, region, "https://dispenser.example.com", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/&job_id=job-77", nil)
		req.Header.Set(auth.DefaultIAMRequestHeader, h)
		return doJSON(t, srv.Client(), req)
	}
	code, v := ask("https://sts.eu-west-1.amazonaws.com/", "eu-west-1")
	if code != 200 || !strings.HasPrefix(v.AccessKeyID, "ASIA") {
		t.Fatalf("iam through newApp: %d %+v", code, v)
	}
	if n := sts.Count("GetCallerIdentity"); n != 1 {
		t.Fatalf("GetCallerIdentity calls = %d, want 1", n)
	}
	// The vended key is the one the local STS issued for the tenant role.
	in := sts.AssumeRoleInputs()
	if len(in) != 1 || in[0].RoleArn != "arn:aws:iam::222222222222:role/vtk-dispenser-target" || in[0].ExternalId != "acme-vtk-api-name" || in[0].Policy == "" {
		t.Fatalf("AssumeRole inputs %+v", in)
	}
	if redirect.hosts[0] != "https://sts.eu-west-1.amazonaws.com" {
		t.Fatalf("the dispenser called %v, want the allow-listed regional endpoint", redirect.hosts)
	}

	// The audit trail names the IAM principal (the role, not the session:
	// the method canonicalises assumed-role ARNs) and method.
	page, err := a.trail.Query(context.Background(), audit.Filter{AccessKeyID: v.AccessKeyID})
	if err != nil || len(page.Records) != 1 {
		t.Fatalf("audit query: %v %+v", err, page)
	}
	if r := page.Records[0]; r.Principal != "arn:aws:iam::873682911326:role/VTKWorker" || r.AuthMethod != "iam" || r.Org != "acme" || r.JobID != "job-77" || r.Outcome != audit.Issued {
		t.Fatalf("audit record %+v", r)
	}

	// An endpoint that is not configured is refused before STS is asked.
	if code, v := ask("https://sts.amazonaws.com/", "us-east-1"); code != 401 || v.Code != "Unauthorized" {
		t.Fatalf("unlisted endpoint: %d %+v", code, v)
	}
	// Signed for another region than the endpoint's: refused too.
	if code, v := ask("https://sts.eu-west-1.amazonaws.com/", "us-east-1"); code != 401 || v.Code != "Unauthorized" {
		t.Fatalf("region mismatch: %d %+v", code, v)
	}
	if n := sts.Count("GetCallerIdentity"); n != 1 {
		t.Fatalf("GetCallerIdentity calls after refused requests = %d, want 1", n)
	}

	// A reload rebuilds the chain with the same STS client.
	if err := a.reload(); err != nil {
		t.Fatal(err)
	}
	if code, v := ask("https://sts.eu-west-1.amazonaws.com/", "eu-west-1"); code != 200 || v.AccessKeyID == "" {
		t.Fatalf("after reload: %d %+v", code, v)
	}
	if n := sts.Count("GetCallerIdentity"); n != 2 {
		t.Fatalf("GetCallerIdentity calls after reload = %d, want 2", n)
	}
}
