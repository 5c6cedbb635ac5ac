package auth

import (
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/auth/authtest"
)

// botocoreSigned signs GET https://d.example.com/credentials?<rawQuery> as
// botocore's SigV4Auth does and returns the request the server receives
// with the query sent as sendQuery (the same bytes unless a test tampers
// with them).
func botocoreSigned(t *testing.T, rawQuery, sendQuery string, at time.Time) *http.Request {
	t.Helper()
	authz, amzDate := authtest.BotocoreSign("GET", "d.example.com", "/credentials", rawQuery, testAKID, testSecret, "us-east-1", "execute-api", at)
	target := "/credentials"
	if sendQuery != "" {
		target += "?" + sendQuery
	}
	r := httptest.NewRequest("GET", target, nil)
	r.Host = "d.example.com"
	r.Header.Set("X-Amz-Date", amzDate)
	r.Header.Set("Authorization", authz)
	return r
}

// TestBotocoreQueryMatchesBotocore pins the helper to botocore's own
// output for inputs where a plain string sort would differ.
func TestBotocoreQueryMatchesBotocore(t *testing.T) {
	for in, want := range map[string]string{
		"operation=get&location=s3://media/acme/in/": "location=s3://media/acme/in/&operation=get",
		"a=1&a-b=2": "a=1&a-b=2", // tuples: "a" < "a-b"; strings: "a-b=2" < "a=1"
		"b=2&&a":    "=&a=&b=2",
		"x=2&x=1":   "x=1&x=2",
	} {
		if got := authtest.BotocoreQuery(in); got != want {
			t.Errorf("authtest.BotocoreQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSigV4AcceptsTheQueryAsSent: a signature over the query string exactly
// as sent (botocore with an unencoded URL) is accepted, as is the canonical
// re-encoded form the Go SDK signs.
func TestSigV4AcceptsTheQueryAsSent(t *testing.T) {
	a := newTestSigV4(t, nil)
	for name, q := range map[string]string{
		"README URL":            "operation=get&location=s3://media/acme/in/",
		"job and task":          "location=s3://media/acme/in/&operation=get&job_id=J1&task_id=T1&format=process",
		"repeated files":        "file=b.mp4&operation=get&file=a.mp4&location=s3://media/acme/in/",
		"tuple order":           "a=1&a-b=2&operation=get",
		"lower-case escapes":    "operation=get&location=s3%3a%2f%2fmedia%2facme%2fin%2f",
		"plus":                  "operation=get&location=s3://media/acme/a+b/",
		"empty piece, bare key": "operation=get&&dry_run",
		"no query":              "",
	} {
		t.Run(name, func(t *testing.T) {
			id, err := a.Authenticate(botocoreSigned(t, q, q, sigNow))
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.Org != "acme" || id.Principal != "worker-1" {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	// The Go SDK signer (canonical form) on the same README URL.
	r := signed(t, "GET", "https://d.example.com/credentials?operation=get&location=s3://media/acme/in/", nil, nil, "us-east-1", "execute-api", sigNow)
	if !strings.Contains(r.URL.RawQuery, "s3%3A%2F%2F") {
		t.Fatalf("the SDK did not send the canonical form: %q", r.URL.RawQuery)
	}
	if _, err := a.Authenticate(r); err != nil {
		t.Fatalf("canonical form: %v", err)
	}
}

// TestSigV4RawQueryTampering: with a signature over the raw query, any
// change to the bytes the dispenser reads is refused: a changed value, an
// extra or a removed parameter, the same value encoded differently, a
// piece boundary moved. Reordering pieces is accepted only because it
// leaves the meaning unchanged (repeated parameters other than file are
// refused by the API, and the order of files does not matter).
func TestSigV4RawQueryTampering(t *testing.T) {
	a := newTestSigV4(t, nil)
	const signedQ = "operation=get&location=s3://media/acme/in/&file=a.mp4"
	for name, sent := range map[string]string{
		"changed value":        "operation=get&location=s3://media/acme/out/&file=a.mp4",
		"changed operation":    "operation=put&location=s3://media/acme/in/&file=a.mp4",
		"extra parameter":      signedQ + "&dry_run=true",
		"extra file":           signedQ + "&file=b.mp4",
		"removed parameter":    "operation=get&location=s3://media/acme/in/",
		"encoded differently":  "operation=get&location=s3%3A%2F%2Fmedia%2Facme%2Fin%2F&file=a.mp4",
		"boundary moved":       "operation=get&location=s3://media/acme/in/%26file=a.mp4",
		"key and value joined": "operation=get&location=s3://media/acme/in/&file%3Da.mp4",
		"trailing piece":       signedQ + "&",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Authenticate(botocoreSigned(t, signedQ, sent, sigNow))
			wantReason(t, err, "sigv4_bad_signature")
		})
	}
	if _, err := a.Authenticate(botocoreSigned(t, signedQ, "file=a.mp4&location=s3://media/acme/in/&operation=get", sigNow)); err != nil {
		t.Fatalf("reordered pieces (same meaning): %v", err)
	}
}

// TestSigV4PresignedStaysCanonical: a presigned URL must be signed over the
// canonical query (what every SDK presigner does); the raw form is not
// accepted there.
func TestSigV4PresignedStaysCanonical(t *testing.T) {
	a := newTestSigV4(t, nil)
	amzDate := sigNow.Format("20060102T150405Z")
	scope := amzDate[:8] + "/us-east-1/execute-api/aws4_request"
	q := "operation=get&location=s3://media/acme/in/&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + testAKID + "/" + scope +
		"&X-Amz-Date=" + amzDate + "&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
	canonical := strings.Join([]string{"GET", "/credentials", authtest.BotocoreQuery(q), "host:d.example.com\n", "host", "UNSIGNED-PAYLOAD"}, "\n")
	sig := hex.EncodeToString(authtest.SigV4(testSecret, amzDate[:8], "us-east-1", "execute-api", amzDate, scope, canonical))
	r := httptest.NewRequest("GET", "/credentials?"+q+"&X-Amz-Signature="+sig, nil)
	r.Host = "d.example.com"
	_, err := a.Authenticate(r)
	wantReason(t, err, "sigv4_bad_signature")
	// The same parameters signed canonically pass (the helper is right).
	u, _ := url.Parse("https://d.example.com/credentials?operation=get&location=s3://media/acme/in/")
	if _, err := a.Authenticate(presigned(t, "GET", u.String(), 5*time.Minute, sigNow, unsignedPayload)); err != nil {
		t.Fatalf("canonical presigned: %v", err)
	}
}
