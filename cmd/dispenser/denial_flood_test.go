package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/getkin/kin-openapi/openapi3"
	"go.uber.org/zap"

	dispenser "github.com/vtk/dispenser"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
)

// fromAddr is an HTTP client whose connections leave from src, an address
// of 127.0.0.0/8 (Linux routes the whole block to loopback), so one test
// process can be many clients.
func fromAddr(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// loopback returns the i-th address of 127.<block>.0.0/16.
func loopback(block, i int) string { return fmt.Sprintf("127.%d.%d.%d", block, 1+i/250, 1+i%250) }

// summaryDetail is the part of a summary record's detail the tests read.
type summaryDetail struct {
	Outcome         string         `json:"outcome"`
	Reason          string         `json:"reason"`
	Count           int            `json:"count"`
	DistinctClients int            `json:"distinct_clients"`
	ClientsSample   []string       `json:"clients_sample"`
	From            time.Time      `json:"from"`
	Until           time.Time      `json:"until"`
	FoldedBy        map[string]int `json:"folded_by"`
}

// trailAfterClose reads every record of the closed app's audit trail.
func trailAfterClose(t *testing.T, cfg *config.Config) []audit.Record {
	t.Helper()
	ctx := context.Background()
	trail, err := openTrail(ctx, cfg, trailCLI, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	var out []audit.Record
	f := audit.Filter{Limit: audit.MaxLimit}
	for {
		p, err := trail.Query(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Records...)
		if p.Next == "" {
			return out
		}
		f.Cursor = p.Next
	}
}

// tally sorts a trail into individual refusals and summaries, and checks
// that every refusal sent is in it exactly once: individually or counted
// by a summary.
func tally(t *testing.T, recs []audit.Record, sent int) (individual int, summaries []summaryDetail) {
	t.Helper()
	folded := 0
	for _, r := range recs {
		switch r.Outcome {
		case audit.Denied, audit.Failed:
			individual++
		case audit.Summarized:
			var d summaryDetail
			if err := r.Detail.Decode(&d); err != nil {
				t.Fatalf("summary %+v: %v", r, err)
			}
			if d.Count < 1 || d.Reason != r.Reason || d.Until.Before(d.From) || len(d.ClientsSample) > 10 || d.DistinctClients < len(d.ClientsSample) {
				t.Fatalf("malformed summary %+v", d)
			}
			folded += d.Count
			summaries = append(summaries, d)
		}
	}
	if individual+folded != sent {
		t.Fatalf("%d refusals recorded individually and %d in %d summaries, want %d in all (none lost, none twice)", individual, folded, len(summaries), sent)
	}
	return individual, summaries
}

// flood sends n requests from each of the addresses, 32 at a time, and
// returns how many got each status.
func flood(t *testing.T, addrs []string, n int, send func(c *http.Client, i int) int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, a := range addrs {
		c := fromAddr(a)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				code := send(c, i)
				mu.Lock()
				got[code]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return got
}

func bearer(url, token string) func(c *http.Client, i int) int {
	return func(c *http.Client, i int) int {
		req, _ := http.NewRequest("GET", url+"/credentials?operation=get&location=s3://media/acme/in/", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

// TestDenialFloodFromManyAddressesIsBounded: 200 loopback addresses each
// sending bad tokens (under the per-address failed-authentication budget)
// wrote one audit record per request. The trail now holds at most the
// global denial budget (default burst 100, 10 a second) individually, and
// the rest in summaries (flushed at shutdown), so every refusal is still
// accounted for.
func TestDenialFloodFromManyAddressesIsBounded(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	a := testApp(t, opsTestConfig(t, dir, "", ""))
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	var addrs []string
	for i := range 200 {
		addrs = append(addrs, loopback(1, i))
	}
	start := time.Now()
	got := flood(t, addrs, 20, bearer(srv.URL, "not-a-jwt"))
	if got[401] != 4000 {
		t.Fatalf("statuses %v, want 4000 × 401", got)
	}
	cfg := a.current.Load()
	a.close() // flushes the summaries
	elapsed := time.Since(start)
	recs := trailAfterClose(t, cfg)
	individual, summaries := tally(t, recs, 4000)
	if limit := 100 + int(10*elapsed.Seconds()) + 1; individual > limit {
		t.Fatalf("%d individual denial records in %s, want at most %d (burst 100 + 10/s)", individual, elapsed, limit)
	}
	clients := 0
	for _, s := range summaries {
		if s.Reason != "jwt_malformed" || s.Outcome != "denied" || s.FoldedBy["record_budget"] != s.Count {
			t.Fatalf("summary %+v", s)
		}
		clients = max(clients, s.DistinctClients)
	}
	if len(summaries) == 0 || clients < 10 || clients > 200 {
		t.Fatalf("%d summaries, most distinct clients %d: want summaries naming many of the 200 addresses", len(summaries), clients)
	}
}

// gatewayConfig is a dispenser behind a gateway trusted from 127.0.0.0/8.
func gatewayConfig(t *testing.T, dir string) string {
	return e2eConfig(t, dir, `  gateway:
    header: X-Dispenser-Caller-Arn
    trusted_proxies: [127.0.0.0/8]
    principals:
      - arn: arn:aws:sts::873682911326:assumed-role/VTKWorker/*
        org: acme`, "")
}

func asCaller(url, arn string) func(c *http.Client, i int) int {
	return func(c *http.Client, i int) int {
		req, _ := http.NewRequest("GET", url+"/credentials?operation=get&location=s3://media/acme/in/", nil)
		req.Header.Set("X-Dispenser-Caller-Arn", strings.ReplaceAll(arn, "{i}", fmt.Sprint(i)))
		resp, err := c.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

// TestGatewayFailedAuthBudget: behind a gateway every request comes from
// the gateway's address, so the failed-authentication budget was off by
// default there (120 failures, no 429). It is on, keyed on the caller the
// gateway asserts: a caller the dispenser refuses is throttled, another
// caller through the same gateway is not. A flood of made-up callers
// (each under its own budget) is bounded by the global denial budget.
func TestGatewayFailedAuthBudget(t *testing.T) {
	dir := t.TempDir()
	a, cfg := startAuthnApp(t, gatewayConfig(t, dir))
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	gw := fromAddr("127.0.3.1")
	unknown := asCaller(srv.URL, "arn:aws:sts::999999999999:assumed-role/Intruder/x")
	got := map[int]int{}
	began := time.Now()
	for i := range 120 {
		got[unknown(gw, i)]++
	}
	// The default budget: a burst of 50, refilled at 5 a second.
	if refill := int(5*time.Since(began).Seconds()) + 1; got[401] < 50 || got[401] > 50+refill || got[429] != 120-got[401] {
		t.Fatalf("one refused caller through the gateway: %v, want 50 × 401 (the default burst, +%d refilled) then 429", got, refill)
	}
	if code := asCaller(srv.URL, "arn:aws:sts::873682911326:assumed-role/VTKWorker/i-1")(gw, 0); code != 200 {
		t.Fatalf("a valid caller through the same gateway: %d, want 200 (the budget is the other caller's)", code)
	}
	// Made-up callers, one request each, from one gateway address.
	spread := flood(t, []string{"127.0.3.2"}, 1000, asCaller(srv.URL, "arn:aws:sts::999999999999:assumed-role/Intruder/{i}"))
	if spread[401] != 1000 {
		t.Fatalf("made-up callers: %v, want 1000 × 401", spread)
	}
	a.close()
	elapsed := time.Since(began) // the global budget's first use
	individual, summaries := tally(t, trailAfterClose(t, cfg), 120+1000)
	if limit := 100 + int(10*elapsed.Seconds()) + 1; individual > limit || len(summaries) == 0 {
		t.Fatalf("%d individual denial records, %d summaries, want at most %d individually", individual, len(summaries), limit)
	}
}

// TestIAMWithSTSDownIsBudgeted: with STS unreachable every well-formed
// (forged) IAM request was a 503 and a record, outside the failed-auth
// budget. A dependency outage now counts like any failed authentication.
func TestIAMWithSTSDownIsBudgeted(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	dir := t.TempDir()
	path := e2eConfig(t, dir, `  iam:
    server_id: https://dispenser.example.com
    sts_endpoints: [https://sts.eu-west-1.amazonaws.com/]
    timeout: 2s
    principals:
      - arn: arn:aws:sts::873682911326:assumed-role/VTKWorker/*
        org: acme`, "")
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	down := &stsRedirect{to: freePort(t)} // nothing listens there
	a, err := newAppWith(cfg, zap.NewNop(), appDeps{STSClient: &http.Client{Transport: down}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.close() })
	a.run(context.Background())
	if err := a.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	forged := aws.Credentials{AccessKeyID: "ASIAFORGED0000000001", SecretAccessKey: "forged-secret", SessionToken: "forged"}
	c := fromAddr("127.0.4.1")
	var got = map[int]int{}
	var calls atomic.Int64
	began := time.Now()
	for range 80 {
		h, err := auth.SignIAMRequest(context.Background(), forged, "https://sts.eu-west-1.amazonaws.com/", "eu-west-1", "https://dispenser.example.com", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", nil)
		req.Header.Set(auth.DefaultIAMRequestHeader, h)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got[resp.StatusCode]++
		calls.Add(1)
	}
	if refill := int(5*time.Since(began).Seconds()) + 1; got[503] < 50 || got[503] > 50+refill || got[429] != 80-got[503] {
		t.Fatalf("forged IAM requests with STS down: %v, want 50 × 503 (the default burst, +%d refilled) then 429", got, refill)
	}
	a.close()
	tally(t, trailAfterClose(t, cfg), int(calls.Load()))
}

// TestLowAuditVolumeKeepsIssuingAndSummarisesRefusals: with the SQLite
// volume under audit.min_free_space (reported by an injected reader, no
// disk is filled), refusals are summaries only and the gauge the critical
// alert watches is 1, while issuance goes on and is recorded. Once space
// is back, refusals are recorded again.
func TestLowAuditVolumeKeepsIssuingAndSummarisesRefusals(t *testing.T) {
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	dir := t.TempDir()
	cfg, err := loadConfig(opsTestConfig(t, dir, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	var free atomic.Uint64
	free.Store(100 << 20) // under the 256 MiB default
	var paths sync.Map
	a, err := newAppWith(cfg, zap.NewNop(), appDeps{FreeSpace: func(p string) (uint64, error) { paths.Store(p, true); return free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.close() })
	a.run(context.Background())
	if err := a.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := paths.Load(dir); !ok {
		t.Fatalf("the guard did not read the audit database's directory %s", dir)
	}
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	c := fromAddr("127.0.7.1")
	for i := range 5 {
		if code := bearer(srv.URL, "not-a-jwt")(c, i); code != 401 {
			t.Fatalf("refusal: %d", code)
		}
	}
	if code := bearer(srv.URL, token(t, "worker-1", "acme"))(c, 0); code != 200 {
		t.Fatalf("issuance with the volume low: %d, want 200", code)
	}
	fams := scrape(t, a)
	if v := value(fams, "dispenser_audit_volume_low", nil); v != 1 {
		t.Fatalf("dispenser_audit_volume_low = %v, want 1", v)
	}
	if v := value(fams, "dispenser_denial_records_folded_total", map[string]string{"cause": "volume_low"}); v != 5 {
		t.Fatalf("folded for volume_low = %v, want 5", v)
	}
	free.Store(10 << 30)
	waitFor(t, "the guard to see the space back", func() bool {
		return value(scrape(t, a), "dispenser_audit_volume_low", nil) == 0
	}, &lockedBuffer{})
	if code := bearer(srv.URL, "not-a-jwt")(c, 0); code != 401 {
		t.Fatalf("refusal: %d", code)
	}
	a.close()
	recs := trailAfterClose(t, cfg)
	individual, sums := tally(t, recs, 6)
	issued := 0
	for _, r := range recs {
		if r.Outcome == audit.Issued {
			issued++
		}
	}
	if issued != 1 || individual != 1 || len(sums) != 1 || sums[0].FoldedBy["volume_low"] != 5 {
		t.Fatalf("trail: %d issued, %d refusals recorded, summaries %+v; want the issuance, the refusal after recovery, and the 5 low-volume refusals summarised", issued, individual, sums)
	}
}

// TestSummariesAreQueryable: summaries are written every
// denial_summary_interval while the dispenser runs, and the admin API
// finds them with outcome=summarized, detail included, in the shape
// openapi.yaml documents.
func TestSummariesAreQueryable(t *testing.T) {
	dir := t.TempDir()
	_, srv := startOpsApp(t, opsTestConfig(t, dir, "", `rate_limits:
  denial_records: {rate: 0.001, burst: 1}
  denial_summary_interval: 1s
`))
	c := fromAddr("127.0.13.1")
	for i := range 3 {
		if code := bearer(srv.URL, "not-a-jwt")(c, i); code != 401 {
			t.Fatalf("refusal %d: %d", i, code)
		}
	}
	doc, err := openapi3.NewLoader().LoadFromData(dispenser.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var body string
	waitFor(t, "a summary in the audit API", func() bool {
		var code int
		code, body = opsCall(t, srv, "GET", "/v1/audit?outcome=summarized", adminToken, "")
		return code == 200 && strings.Contains(body, `"outcome":"summarized"`)
	}, &lockedBuffer{})
	var page struct {
		Records []audit.Record `json:"records"`
	}
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Records) != 1 {
		t.Fatalf("page %s: %v", body, err)
	}
	var d summaryDetail
	if err := page.Records[0].Detail.Decode(&d); err != nil || d.Count != 2 || d.Reason != "jwt_malformed" || d.ClientsSample[0] != "127.0.13.1" {
		t.Fatalf("summary detail %+v (%v) in %s", d, err, body)
	}
	schema := doc.Components.Schemas["AuditPage"].Value
	var v any
	_ = json.Unmarshal([]byte(body), &v)
	if err := schema.VisitJSON(v); err != nil {
		t.Fatalf("the page does not match openapi.yaml's AuditPage: %v", err)
	}
}
