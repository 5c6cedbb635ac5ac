package api

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// TestNoSecretsInLogsOrRecords runs a scripted mix of successes, denials and
// failures with a debug-level logger and asserts that no secret access key,
// session token, bearer token (or its signature) or location userinfo
// appears in any log line or audit record.
func TestNoSecretsInLogsOrRecords(t *testing.T) {
	h := newHarness(t, nil)
	good := h.token("worker-1", "acme", nil)
	bound := h.token("worker-1", "acme", map[string]any{"job_id": "J1", "task_id": "T1"})
	other := h.token("worker-2", "globex", nil)
	expired := h.token("worker-1", "acme", map[string]any{"exp": h.now.Add(-time.Hour).Unix()})
	const (
		userKey    = "AKIAUSERINFOKEY00001"
		userSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYUSERINFO"
		braced     = "{my-secret-name}"
	)
	json1 := map[string]string{"Content-Type": "application/json"}
	script := []struct {
		method, target, authz, body string
		hdr                         map[string]string
	}{
		{"GET", okQuery, good, "", nil},
		{"GET", okQuery + "&format=process", "Bearer " + good, "", nil},
		{"GET", "/credentials?operation=get&location=s3://" + userKey + ":" + userSecret + "@media/acme/in/", "Bearer " + good, "", nil},
		{"GET", "/credentials?operation=put&location=s3://" + userKey + ":" + userSecret + "@media/other/", "Bearer " + good, "", nil},
		{"GET", "/credentials?operation=get&location=s3://" + braced + "@media/acme/x/", good, "", nil},
		{"GET", "/credentials?operation=get&location=s3://" + userKey + ":" + userSecret + "@bad..bucket/x/", good, "", nil},
		{"POST", "/credentials", good, `{"operation":"get","location":"s3://` + userKey + `:` + userSecret + `@media/acme/in/"}`, json1},
		{"GET", okQuery + "&dry_run=true", good, "", nil},
		{"GET", okQuery, bound, "", nil},
		{"GET", "/credentials?operation=get&location=s3://media/acme/in/&job_id=J2", bound, "", nil},
		{"GET", okQuery, other, "", nil},
		{"GET", okQuery, expired, "", nil},
		{"GET", okQuery, "Bearer " + good[:len(good)-4] + "AAAA", "", nil},
		{"GET", "/v1/whoami", good, "", nil},
		{"PUT", okQuery, good, "", nil},
	}
	run := func() {
		for _, s := range script {
			h.do(s.method, s.target, s.authz, s.body, s.hdr)
		}
	}
	run()
	// Vended but unrecorded: the withheld credentials must not be logged.
	h.rec.err = errors.New("audit store down")
	h.do("GET", okQuery, good, "", nil)
	h.rec.err = nil
	// Backend failure with a detailed internal cause.
	h.vendor.fn = func(context.Context, scope.Grant) (vend.Credentials, error) {
		return vend.Credentials{}, fault.Wrap(errors.New("upstream said: "+userSecret), fault.BackendUnavailable, "sts_error", "STS failed")
	}
	h.do("GET", okQuery, good, "", nil)

	var secrets []string
	for _, c := range h.vendor.issued {
		secrets = append(secrets, c.SecretAccessKey.Reveal(), c.SessionToken.Reveal())
	}
	if len(secrets) < 10 {
		t.Fatalf("script issued only %d credentials; it no longer exercises the success path", len(secrets)/2)
	}
	for _, tok := range []string{good, bound, other, expired} {
		secrets = append(secrets, tok, tok[strings.LastIndex(tok, ".")+1:])
	}
	// The upstream cause is logged by design (operators need it), so only
	// user-supplied userinfo is checked, not the fake backend's message.
	userinfo := []string{userKey, "wJalrXUtnFEMI", "my-secret-name"}

	logs := h.logs.String()
	if !strings.Contains(logs, "credentials issued") || !strings.Contains(logs, "credentials refused") {
		t.Fatalf("the log lacks decision events:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log contains a secret %q…", s[:8])
		}
	}
	for _, s := range userinfo {
		// The backend-failure line legitimately wraps the fake upstream error.
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, s) && !strings.Contains(line, "upstream said") {
				t.Errorf("log line contains userinfo %q: %s", s, line)
			}
		}
	}
	recs := h.rec.all()
	b, _ := json.Marshal(recs)
	for _, s := range append(secrets, append(userinfo, "upstream said")...) {
		if strings.Contains(string(b), s) {
			t.Errorf("audit records contain %q…", s[:8])
		}
	}
}
