package main

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vtk/dispenser/internal/ststest"
)

// TestCachedRepeatsAreRateLimited: repeats of one grant served from the
// credential cache (assume-role backend in front of a fake STS) count
// against per_principal like any issuance: each is a durable audit record,
// so an exemption let one caller write thousands of records a second.
// Past the burst the caller gets 429 with Retry-After; STS saw one call.
func TestCachedRepeatsAreRateLimited(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	fake := ststest.New(t)
	dir := t.TempDir()
	path := opsTestConfig(t, dir, "", `rate_limits:
  per_principal: {rate: 5, burst: 10}
`)
	b := readFile(t, path)
	b = replaceOnce(t, b, `backends:
  default: {type: mock, account_id: "111122223333"}`, `backends:
  default:
    type: assume-role
    region: eu-central-1
    endpoint: `+fake.URL+`
    budget: {enabled: false}`)
	writeFile(t, path, b)
	_, srv := startOpsApp(t, path)
	tok := token(t, "worker-1", "acme")
	ok, limited := 0, 0
	for range 30 {
		req, _ := http.NewRequest("GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/&job_id=J1&task_id=T1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Fatalf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// 10 from the burst, perhaps one more refilled while the loop ran.
	if ok < 10 || ok > 12 || limited != 30-ok {
		t.Fatalf("%d served, %d refused with 429; want the burst of 10 (±refill) served and the rest refused", ok, limited)
	}
	if n := fake.Count("AssumeRole"); n != 1 {
		t.Fatalf("STS saw %d AssumeRole calls, want 1 (the rest were cache hits)", n)
	}
}
