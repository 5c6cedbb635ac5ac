package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/auth/authtest"
)

// TestE2ESigV4BotocoreURL: a worker signing the README's unencoded URL the
// way botocore does gets credentials from the running app; the same
// signature over a changed query is refused, and a repeated location
// (where the order of the pieces, which neither signing form covers, would
// change the meaning) is refused by the API.
func TestE2ESigV4BotocoreURL(t *testing.T) {
	dir := t.TempDir()
	path := e2eConfig(t, dir, `  sigv4:
    region: us-east-1
    keys: {type: file, path: keys.json}`, "")
	a, _ := startAuthnApp(t, path)
	srv := httptest.NewServer(a.server.Handler())
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"keys", "create", "--config", path, "--name", "worker-1", "--org", "acme"}, &out, &errb); code != 0 {
		t.Fatalf("keys create: %d %s", code, errb.String())
	}
	var key struct{ AccessKeyId, SecretAccessKey string }
	must(t, json.Unmarshal(out.Bytes(), &key))
	host := mustURL(t, srv.URL).Host
	do := func(signedQuery, sentQuery string) (int, vended) {
		authz, amzDate := authtest.BotocoreSign("GET", host, "/credentials", signedQuery, key.AccessKeyId, key.SecretAccessKey, "us-east-1", "execute-api", time.Now())
		req, _ := http.NewRequest("GET", srv.URL+"/credentials?"+sentQuery, nil)
		req.Header.Set("Authorization", authz)
		req.Header.Set("X-Amz-Date", amzDate)
		return doJSON(t, srv.Client(), req)
	}
	const q = "operation=get&location=s3://media/acme/in/&job_id=J1&task_id=T1"
	if code, v := do(q, q); code != 200 || v.AccessKeyID == "" {
		t.Fatalf("botocore-signed README URL: %d %+v", code, v)
	}
	if code, v := do(q, "operation=get&location=s3://media/other/&job_id=J1&task_id=T1"); code != 401 || v.Code != "Unauthorized" {
		t.Fatalf("changed location: %d %+v", code, v)
	}
	const twice = "operation=get&location=s3://media/acme/in/&location=s3://media/other/"
	if code, v := do(twice, "operation=get&location=s3://media/other/&location=s3://media/acme/in/"); code != 400 || v.Code != "InvalidRequest" {
		t.Fatalf("repeated location, reordered: %d %+v", code, v)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	must(t, err)
	return u
}
