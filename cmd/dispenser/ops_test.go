package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/metrics"
)

const adminToken = "test-admin-token-0123456789abcdef0123456789"

// opsTestConfig writes a configuration (local.yaml's shape with absolute paths)
// plus extra YAML, and returns its path.
func opsTestConfig(t *testing.T, dir, audit, extra string) string {
	t.Helper()
	root, _ := filepath.Abs("../..")
	if audit == "" {
		audit = "audit:\n  type: sqlite\n  path: " + filepath.Join(dir, "audit.db") + "\n"
	}
	cfg := fmt.Sprintf(`server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  min_remaining: 20m
log: {level: info, format: console}
auth:
  jwt:
    issuer: https://dispenser.local/dev
    audience: dispenser
    keys:
      - kid: dev-1
        public_key_file: %[1]s/examples/dev-jwt-verify.DEV-ONLY.pub.pem
        algorithms: [EdDSA]
    org_claim: org
    signing_key_file: %[1]s/examples/dev-jwt-signing.DEV-ONLY.pem
    signing_key_id: dev-1
admin:
  tokens:
    - name: ops
      token_env: DISPENSER_TEST_ADMIN_TOKEN
backends:
  default: {type: mock, account_id: "111122223333"}
tenants:
  - org: acme
    role_arn: arn:aws:iam::111122223333:role/vtk-dispenser-target
    max_duration: 1h
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get, put]
%[2]s%[3]s`, root, audit, extra)
	path := filepath.Join(dir, "dispenser.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startOpsApp(t *testing.T, path string) (*app, *httptest.Server) {
	t.Helper()
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	a := testApp(t, path)
	srv := httptest.NewServer(a.server.Handler())
	t.Cleanup(srv.Close)
	return a, srv
}

func token(t *testing.T, subject, org string) string {
	t.Helper()
	root, _ := filepath.Abs("../..")
	key, method, err := auth.LoadSigningKey(filepath.Join(root, "examples/dev-jwt-signing.DEV-ONLY.pem"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := jwt.NewWithClaims(method, jwt.MapClaims{"iss": "https://dispenser.local/dev", "aud": "dispenser", "sub": subject, "org": org,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	tok.Header["kid"] = "dev-1"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func opsCall(t *testing.T, srv *httptest.Server, method, path, bearer, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, a *app) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(adminHandler(a.metrics, a.server.ReadyState))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	sum := 0.0
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func TestMetricsAfterScriptedRun(t *testing.T) {
	dir := t.TempDir()
	path := opsTestConfig(t, dir, "", `rate_limits:
  per_principal: {rate: 0.001, burst: 3}
`)
	a, srv := startOpsApp(t, path)
	const principal = "worker-secret-name-7"
	tok := token(t, principal, "acme")
	creds := "/credentials?operation=get&location=s3://media/acme/in/&job_id=job-1234&task_id=task-5678"
	for i := 0; i < 2; i++ {
		if code, body := opsCall(t, srv, "GET", creds, tok, ""); code != 200 {
			t.Fatalf("issue %d: %d %s", i, code, body)
		}
	}
	if code, _ := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/other/", tok, ""); code != 403 {
		t.Fatalf("out-of-scope request: %d", code)
	}
	if code, _ := opsCall(t, srv, "GET", creds, "not-a-jwt", ""); code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	if code, _ := opsCall(t, srv, "GET", creds, tok, ""); code != 200 { // third and last token
		t.Fatalf("third issue: %d", code)
	}
	if code, _ := opsCall(t, srv, "GET", creds, tok, ""); code != 429 {
		t.Fatalf("over the limit: %d", code)
	}
	if code, body := opsCall(t, srv, "POST", "/v1/revocations", adminToken, `{"kind":"job","value":"job-1234","reason":"test"}`); code != 201 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, _ := opsCall(t, srv, "GET", creds, tok, ""); code != 403 {
		t.Fatalf("revoked job: %d", code)
	}
	if err := a.reload(); err != nil {
		t.Fatal(err)
	}

	fams := scrape(t, a)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"dispenser_issuances_total", map[string]string{"tenant": "acme", "outcome": "issued", "operation": "get", "backend": "default"}, 3},
		{"dispenser_issuances_total", map[string]string{"tenant": "acme", "outcome": "denied", "reason": "rate_limited_principal"}, 1},
		{"dispenser_issuances_total", map[string]string{"tenant": "acme", "outcome": "denied", "reason": "revoked"}, 1},
		{"dispenser_issuances_total", map[string]string{"outcome": "denied"}, 4},
		{"dispenser_rate_limited_total", map[string]string{"scope": "principal"}, 1},
		{"dispenser_revocation_hits_total", map[string]string{"kind": "job"}, 1},
		{"dispenser_auth_failures_total", nil, 1},
		{"dispenser_http_requests_total", map[string]string{"route": "/credentials", "status": "200"}, 3},
		{"dispenser_http_requests_total", map[string]string{"route": "/credentials", "status": "429"}, 1},
		{"dispenser_http_requests_total", map[string]string{"route": "/v1/revocations", "method": "POST", "status": "201"}, 1},
		{"dispenser_request_duration_seconds", map[string]string{"outcome": "issued"}, 3},
		{"dispenser_served_credential_remaining_seconds", nil, 3},
		{"dispenser_config_reloads_total", map[string]string{"result": "ok"}, 1},
		{"dispenser_rate_limiter_backend", map[string]string{"backend": "local"}, 1},
		{"dispenser_build_info", map[string]string{"version": version}, 1},
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("Go and process collectors are missing")
	}
	// Label cardinality: no label value may carry the principal, job, task,
	// session name or key ids.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if strings.Contains(v, principal) || strings.Contains(v, "job-1234") || strings.Contains(v, "task-5678") || strings.HasPrefix(v, "ASIA") {
					t.Errorf("%s has high-cardinality label %s=%q", name, l.GetName(), v)
				}
			}
		}
	}
}

func TestAdminListenerProbes(t *testing.T) {
	var state atomic.Value
	state.Store("starting")
	srv := httptest.NewServer(adminHandler(newMetricsForTest(), func() string { return state.Load().(string) }))
	defer srv.Close()
	body := ""
	get := func(p string) int {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode
	}
	if get("/healthz") != 200 || get("/readyz") != 503 || body != `{"status":"starting"}`+"\n" {
		t.Fatal("probes before ready")
	}
	state.Store("ready")
	if get("/readyz") != 200 || get("/metrics") != 200 || get("/credentials") != 404 {
		t.Fatal("probes after ready")
	}
	// A replica whose revocation list went stale cannot vend: not ready.
	state.Store("revocations_stale")
	if get("/readyz") != 503 || body != `{"status":"revocations_stale"}`+"\n" {
		t.Fatalf("stale revocation list: /readyz %s", body)
	}
}

// TestReloadUnderLoad reloads a good and then a bad configuration while
// requests are in flight: no request may fail, the good reload takes
// effect and the bad one is rejected with the old configuration serving.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := opsTestConfig(t, dir, "", "")
	a, srv := startOpsApp(t, path)
	tok := token(t, "worker-1", "acme")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures, total atomic.Int64
	var firstFailure atomic.Value
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/acme/in/", tok, "")
				total.Add(1)
				if code != 200 {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", code, body))
				}
			}
		}()
	}
	waitFor := func(n int64) {
		for deadline := time.Now().Add(10 * time.Second); total.Load() < n && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(20)
	// Good: a second grant (put under acme/out/ was already allowed; add
	// a new bucket).
	good := strings.Replace(readFile(t, path), `        operations: [get, put]
`, `        operations: [get, put]
      - bucket: archive
        prefixes: ["acme/"]
        operations: [get]
`, 1)
	writeFile(t, path, good)
	if err := a.reload(); err != nil {
		t.Fatalf("good reload rejected: %v", err)
	}
	waitFor(total.Load() + 20)
	// Bad: an unknown backend, and a JWT key file that does not exist.
	bad := strings.Replace(good, "dev-jwt-verify.DEV-ONLY.pub.pem", "missing.pem", 1)
	bad = strings.Replace(bad, "    max_duration: 1h\n", "    max_duration: 1h\n    backend: nowhere\n", 1)
	writeFile(t, path, bad)
	err := a.reload()
	if err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("bad reload: %v, want it rejected naming the unknown backend", err)
	}
	waitFor(total.Load() + 20)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", failures.Load(), total.Load(), firstFailure.Load())
	}
	// The good configuration is the one serving.
	if code, body := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://archive/acme/x/", tok, ""); code != 200 {
		t.Fatalf("grant added by the good reload: %d %s", code, body)
	}
	fams := scrape(t, a)
	if ok, rej := value(fams, "dispenser_config_reloads_total", map[string]string{"result": "ok"}), value(fams, "dispenser_config_reloads_total", map[string]string{"result": "rejected"}); ok != 1 || rej != 1 {
		t.Fatalf("config_reloads_total ok=%v rejected=%v, want 1 and 1", ok, rej)
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, p, s string) {
	// Write then rename, as editors and ConfigMaps do.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func TestRevokeCLI(t *testing.T) {
	dir := t.TempDir()
	path := opsTestConfig(t, dir, "", "")
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	var out, errb strings.Builder
	if code := run([]string{"revoke", "add", "--config", path, "--kind", "task", "--value", "task-1", "--reason", "stuck", "--expires-in", "1h"}, &out, &errb); code != 0 {
		t.Fatalf("add: %d %s", code, errb.String())
	}
	id := strings.Fields(out.String())[0]
	out.Reset()
	if code := run([]string{"revoke", "list", "--config", path}, &out, &errb); code != 0 || !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "task-1") {
		t.Fatalf("list: %d %q %s", code, out.String(), errb.String())
	}
	// A server on the same database refuses the task.
	_, srv := startOpsApp(t, path)
	tok := token(t, "worker-1", "acme")
	if code, _ := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/acme/in/&task_id=task-1", tok, ""); code != 403 {
		t.Fatalf("task revoked by the CLI served: %d", code)
	}
	out.Reset()
	if code := run([]string{"revoke", "delete", "--config", path, "--id", id}, &out, &errb); code != 0 {
		t.Fatalf("delete: %d %s", code, errb.String())
	}
	if code := run([]string{"revoke", "delete", "--config", path, "--id", id}, &out, &errb); code != 1 {
		t.Fatalf("second delete: %d, want 1", code)
	}
	if code := run([]string{"revoke", "add", "--config", path, "--kind", "tenant", "--value", "x", "--reason", "r"}, &out, &errb); code != 1 {
		t.Fatalf("bad kind: %d, want 1", code)
	}
}

func newMetricsForTest() *metrics.Metrics { return metrics.New("test") }
