package auth

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/vtk/dispenser/internal/fault"
)

// fakeSTS speaks enough of STS's query/XML protocol for GetCallerIdentity:
// it verifies the SigV4 signature with the caller's secret and answers the
// documented GetCallerIdentityResponse XML.
type fakeSTS struct {
	srv      *httptest.Server
	hits     atomic.Int32
	redirect bool
	status   int
}

const (
	stsAKID   = "ASIAWORKERWORKER0001"
	stsSecret = "worker/secret/key/0123456789abcdefghij"
	stsToken  = "IQoJb3JpZ2luX2VjEJr//////////session-token"
)

func newFakeSTS(t *testing.T) *fakeSTS {
	f := &fakeSTS{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if f.redirect {
			http.Redirect(w, r, "https://evil.example.com/", http.StatusTemporaryRedirect)
			return
		}
		if f.status != 0 {
			w.WriteHeader(f.status)
			return
		}
		body, _ := io.ReadAll(r.Body)
		parts, err := parseAuthorization(r.Header.Get("Authorization"))
		if err != nil || r.Method != "POST" || string(body) != GetCallerIdentityBody || parts.AccessKeyID != stsAKID || r.Header.Get("X-Amz-Security-Token") != stsToken {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>`)
			return
		}
		hdrs, err := canonicalHeaders(parts.SignedHeaders, r.Host, r.Header, r.ContentLength)
		scope := parts.Date + "/" + parts.Region + "/" + parts.Service + "/aws4_request"
		sts := stringToSign(r.Method, canonicalURI(r.URL), "", hdrs, parts.SignedHeaders, hashOf(body), r.Header.Get("X-Amz-Date"), scope)
		if err != nil || !signatureEqual(sigV4Signature(signingKey(stsSecret, parts.Date, parts.Region, parts.Service), sts), parts.Signature) {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>`)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::873682911326:assumed-role/VTKWorker/i-0123456789abcdef0</Arn>
    <UserId>AROAVTKWORKERPROD0001:i-0123456789abcdef0</UserId>
    <Account>873682911326</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// client dials the fake for every host, so the URL keeps the real STS host
// name and the allow-list is exercised as in production.
func (f *fakeSTS) client() *http.Client {
	addr := f.srv.Listener.Addr().String()
	pool := f.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
	}}
}

var iamNow = time.Now().UTC().Truncate(time.Second)

func newTestIAM(t *testing.T, f *fakeSTS) *IAM {
	t.Helper()
	cfg := IAMConfig{
		ServerID:     "https://dispenser.example.com",
		STSEndpoints: []string{"https://sts.amazonaws.com/", "https://sts.eu-west-1.amazonaws.com/"},
		Principals:   []ARNRule{{ARN: "arn:aws:sts::873682911326:assumed-role/VTKWorker/*", Org: "vtk", RoleID: "AROAVTKWORKERPROD0001"}},
	}
	cfg.ApplyDefaults()
	p := validateProblems()
	cfg.Validate(p, "auth.iam")
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	a, err := NewIAM(cfg, f.client(), func() time.Time { return iamNow })
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func workerCreds() aws.Credentials {
	return aws.Credentials{AccessKeyID: stsAKID, SecretAccessKey: stsSecret, SessionToken: stsToken}
}

func iamHeader(t *testing.T, endpoint, region, serverID string) string {
	t.Helper()
	h, err := SignIAMRequest(context.Background(), workerCreds(), endpoint, region, serverID, iamNow)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func decodeIAM(t *testing.T, h string) IAMRequest {
	b, _ := base64.StdEncoding.DecodeString(h)
	var r IAMRequest
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func encodeIAM(r IAMRequest) string {
	b, _ := json.Marshal(r)
	return base64.StdEncoding.EncodeToString(b)
}

func iamRequest(h string) *http.Request {
	r := httptest.NewRequest("GET", "/credentials?operation=get", nil)
	r.Header.Set(DefaultIAMRequestHeader, h)
	return r
}

func TestIAMValid(t *testing.T) {
	f := newFakeSTS(t)
	a := newTestIAM(t, f)
	for _, tc := range []struct{ endpoint, region string }{
		{"https://sts.amazonaws.com/", "us-east-1"},
		{"https://sts.eu-west-1.amazonaws.com/", "eu-west-1"},
	} {
		id, err := a.Authenticate(iamRequest(iamHeader(t, tc.endpoint, tc.region, "https://dispenser.example.com")))
		if err != nil {
			t.Fatalf("%s: %v", tc.endpoint, err)
		}
		if id.Org != "vtk" || id.Principal != "arn:aws:iam::873682911326:role/VTKWorker" || id.Method != MethodIAM || id.Details["account"] != "873682911326" {
			t.Fatalf("identity %+v", id)
		}
	}
	if f.hits.Load() != 2 {
		t.Fatalf("STS hits = %d", f.hits.Load())
	}
	// No header: not ours.
	if _, err := a.Authenticate(httptest.NewRequest("GET", "/", nil)); !errors.Is(err, ErrNoCredentials) {
		t.Fatal(err)
	}
}

// TestIAMBypasses covers each bypass of CVE-2020-16250 and its relatives:
// none of these requests may reach STS.
func TestIAMBypasses(t *testing.T) {
	f := newFakeSTS(t)
	a := newTestIAM(t, f)
	const sid = "https://dispenser.example.com"
	good := func() IAMRequest { return decodeIAM(t, iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid)) }
	cases := []struct {
		name   string
		build  func() string
		reason string
	}{
		{"other host", func() string { r := good(); r.URL = "https://evil.example.com/"; return encodeIAM(r) }, "iam_endpoint_not_allowed"},
		{"lookalike host", func() string { r := good(); r.URL = "https://sts.amazonaws.com.evil.example/"; return encodeIAM(r) }, "iam_endpoint_not_allowed"},
		{"userinfo host", func() string { r := good(); r.URL = "https://sts.amazonaws.com@evil.example/"; return encodeIAM(r) }, "iam_endpoint_not_allowed"},
		{"plain http", func() string { r := good(); r.URL = "http://sts.amazonaws.com/"; return encodeIAM(r) }, "iam_endpoint_not_allowed"},
		{"unconfigured region endpoint", func() string {
			return iamHeader(t, "https://sts.us-west-2.amazonaws.com/", "us-west-2", sid)
		}, "iam_endpoint_not_allowed"},
		{"host header override", func() string { r := good(); r.Headers["Host"] = []string{"evil.example"}; return encodeIAM(r) }, "iam_endpoint_not_allowed"},
		{"other action", func() string {
			r := good()
			r.Body = base64.StdEncoding.EncodeToString([]byte("Action=AssumeRole&Version=2011-06-15"))
			return encodeIAM(r)
		}, "iam_bad_body"},
		{"extra params", func() string {
			r := good()
			r.Body = base64.StdEncoding.EncodeToString([]byte(GetCallerIdentityBody + "&Action=GetSessionToken"))
			return encodeIAM(r)
		}, "iam_bad_body"},
		{"query params", func() string {
			r := good()
			r.URL = "https://sts.amazonaws.com/?Action=GetCallerIdentity"
			return encodeIAM(r)
		}, "iam_endpoint_not_allowed"},
		{"get with query", func() string {
			r := good()
			r.Method = "GET"
			r.URL = "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
			r.Body = ""
			return encodeIAM(r)
		}, "iam_bad_method"},
		{"injected header", func() string { r := good(); r.Headers["X-Forwarded-Host"] = []string{"evil"}; return encodeIAM(r) }, "iam_header_not_allowed"},
		{"injected crlf", func() string {
			r := good()
			r.Headers["User-Agent"] = []string{"x\r\nX-Evil: 1"}
			return encodeIAM(r)
		}, "iam_malformed"},
		{"duplicate authorization", func() string {
			r := good()
			r.Headers["Authorization"] = append(r.Headers["Authorization"], r.Headers["Authorization"][0])
			return encodeIAM(r)
		}, "iam_malformed"},
		{"missing server id", func() string { r := good(); delete(r.Headers, "X-Dispenser-Server-Id"); return encodeIAM(r) }, "iam_missing_server_id"},
		{"other server id (replay to another dispenser)", func() string {
			return iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", "https://other-dispenser.example.com")
		}, "iam_wrong_server_id"},
		{"unsigned server id", func() string {
			// Signed without the header, then the header added afterwards.
			r := decodeIAM(t, iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid))
			authz := r.Headers["Authorization"][0]
			r.Headers["Authorization"] = []string{strings.Replace(authz, ";x-dispenser-server-id", "", 1)}
			return encodeIAM(r)
		}, "iam_server_id_not_signed"},
		{"mismatched region", func() string { return iamHeader(t, "https://sts.amazonaws.com/", "us-west-2", sid) }, "iam_region_mismatch"},
		{"mismatched regional", func() string { return iamHeader(t, "https://sts.eu-west-1.amazonaws.com/", "us-east-1", sid) }, "iam_region_mismatch"},
		{"wrong service", func() string {
			r := good()
			r.Headers["Authorization"] = []string{strings.Replace(r.Headers["Authorization"][0], "/sts/", "/iam/", 1)}
			return encodeIAM(r)
		}, "iam_wrong_service"},
		{"stale", func() string {
			h, _ := SignIAMRequest(context.Background(), workerCreds(), "https://sts.amazonaws.com/", "us-east-1", sid, iamNow.Add(-time.Hour))
			return h
		}, "iam_clock_skew"},
		{"not base64", func() string { return "%%%" }, "iam_malformed"},
		{"unknown json field", func() string {
			return base64.StdEncoding.EncodeToString([]byte(`{"method":"POST","url":"https://sts.amazonaws.com/","x":1}`))
		}, "iam_malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authenticate(iamRequest(tc.build()))
			wantReason(t, err, tc.reason)
		})
	}
	if n := f.hits.Load(); n != 0 {
		t.Fatalf("STS was called %d times by spoofing attempts", n)
	}
}

func TestIAMUpstream(t *testing.T) {
	const sid = "https://dispenser.example.com"
	t.Run("redirect not followed", func(t *testing.T) {
		f := newFakeSTS(t)
		f.redirect = true
		a := newTestIAM(t, f)
		_, err := a.Authenticate(iamRequest(iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid)))
		wantReason(t, err, "iam_redirect")
		if f.hits.Load() != 1 {
			t.Fatalf("hits = %d (the redirect must not be followed)", f.hits.Load())
		}
	})
	t.Run("tampered after signing", func(t *testing.T) {
		f := newFakeSTS(t)
		a := newTestIAM(t, f)
		r := decodeIAM(t, iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid))
		r.Headers["Content-Type"] = []string{"text/plain"}
		_, err := a.Authenticate(iamRequest(encodeIAM(r)))
		wantReason(t, err, "iam_sts_rejected")
	})
	t.Run("sts down", func(t *testing.T) {
		f := newFakeSTS(t)
		f.status = http.StatusServiceUnavailable
		a := newTestIAM(t, f)
		_, err := a.Authenticate(iamRequest(iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid)))
		if !fault.Is(err, fault.BackendUnavailable) {
			t.Fatal(err)
		}
	})
	t.Run("role id pin", func(t *testing.T) {
		f := newFakeSTS(t)
		a := newTestIAM(t, f)
		a.cfg.Principals[0].RoleID = "AROARECREATEDROLE0001"
		_, err := a.Authenticate(iamRequest(iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", sid)))
		wantReason(t, err, "iam_role_id_mismatch")
	})
}

func TestIAMEndpointAllowList(t *testing.T) {
	for e, want := range map[string]string{
		"https://sts.amazonaws.com/":                  "us-east-1",
		"https://sts.amazonaws.com":                   "us-east-1",
		"https://sts.us-west-2.amazonaws.com/":        "us-west-2",
		"https://sts.us-gov-west-1.amazonaws.com/":    "us-gov-west-1",
		"https://sts.cn-north-1.amazonaws.com.cn/":    "cn-north-1",
		"https://sts.amazonaws.com.cn/":               "",
		"http://sts.amazonaws.com/":                   "",
		"https://sts.amazonaws.com.evil.example/":     "",
		"https://evil.example/sts.amazonaws.com/":     "",
		"https://127.0.0.1:8443/":                     "",
		"https://sts.us-east-1.amazonaws.com/?a=b":    "",
		"https://sts.evil.example.amazonaws.com.x/":   "",
		"https://sts.us-east-1.amazonaws.com:8443/":   "",
		"https://user@sts.us-east-1.amazonaws.com/":   "",
		"https://sts.us-east-1.amazonaws.com/path/x/": "",
	} {
		got, ok := stsEndpointRegion(e)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", e, got, ok, want)
		}
	}
	c := IAMConfig{STSEndpoints: []string{"https://localhost:9000/"}}
	c.ApplyDefaults()
	p := validateProblems()
	c.Validate(p, "auth.iam")
	got := problemPaths(p)
	for _, want := range []string{"auth.iam.server_id", "auth.iam.sts_endpoints[0]", "auth.iam.principals"} {
		if !got[want] {
			t.Errorf("missing %s in %v", want, got)
		}
	}
}

// TestIAMReplayCache: with replay_cache a signed request authenticates
// once per replica; without it (the default) it does so until it is
// max_skew old. A request STS refuses is not remembered.
func TestIAMReplayCache(t *testing.T) {
	f := newFakeSTS(t)
	h := iamHeader(t, "https://sts.amazonaws.com/", "us-east-1", "https://dispenser.example.com")
	off := newTestIAM(t, f)
	for i := 0; i < 2; i++ {
		if _, err := off.Authenticate(iamRequest(h)); err != nil {
			t.Fatalf("without the cache, use %d: %v", i+1, err)
		}
	}
	cfg := off.cfg
	cfg.ReplayCache = true
	on, err := NewIAM(cfg, f.client(), func() time.Time { return iamNow })
	if err != nil {
		t.Fatal(err)
	}
	// STS refuses this one (status forced): it must not use up the header.
	f.status = http.StatusForbidden
	if _, err := on.Authenticate(iamRequest(h)); err == nil {
		t.Fatal("STS refused, yet authenticated")
	}
	f.status = 0
	if _, err := on.Authenticate(iamRequest(h)); err != nil {
		t.Fatalf("first use after a refused attempt: %v", err)
	}
	_, err = on.Authenticate(iamRequest(h))
	if fe := fault.From(err); fe == nil || fe.Code != fault.Unauthorized || fe.Reason != "iam_replayed" {
		t.Fatalf("replay = %v, want 401 iam_replayed", err)
	}
	// A fresh signature still works.
	if _, err := on.Authenticate(iamRequest(iamHeader(t, "https://sts.eu-west-1.amazonaws.com/", "eu-west-1", "https://dispenser.example.com"))); err != nil {
		t.Fatalf("another signed request: %v", err)
	}
}
