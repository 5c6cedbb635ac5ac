package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"

	"github.com/vtk/dispenser/internal/auth/authtest"
)

// capturedCommand runs a credential_process command line as the Go SDK
// does (sh -c), keeping what the process writes to stderr (what the SDK
// shows its user) and its exit code.
type capturedCommand struct {
	line   string
	stderr *bytes.Buffer
	cmd    *exec.Cmd
}

func (c *capturedCommand) NewCommand(ctx context.Context) (*exec.Cmd, error) {
	c.stderr.Reset()
	c.cmd = exec.CommandContext(ctx, "sh", "-c", c.line)
	c.cmd.Env = os.Environ()
	c.cmd.Stderr = c.stderr
	return c.cmd, nil
}

func (c *capturedCommand) exitCode() int { return c.cmd.ProcessState.ExitCode() }

// credentialsLine is the credential_process line of the README's recipe.
func credentialsLine(bin, url string, args ...string) string {
	return fmt.Sprintf("%s credentials --url '%s' %s", bin, url, strings.Join(args, " "))
}

// TestCredentialProcessEndToEnd runs the built binary as the Go SDK's
// process credential provider against the running dispenser: the README's
// ~/.aws/config profile yields credentials; a denial exits 1 with the
// dispenser's "code: message" on stderr; a token rotated in its file is
// used on the next call; no secret reaches stderr.
func TestCredentialProcessEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	path := testConfig(t, true)
	srv := startApp(t, path)
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	// As `dispenser token > file` writes it: with a trailing newline.
	must(t, os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600))
	good := srv.URL + "/credentials?operation=get&location=s3://media/acme/in/"

	t.Run("README profile", func(t *testing.T) {
		isolateSDK(t)
		cfgFile := filepath.Join(t.TempDir(), "config")
		must(t, os.WriteFile(cfgFile, []byte("[profile dispenser]\ncredential_process = "+credentialsLine(bin, good, "--token-file", tokenFile)+"\n"), 0o600))
		t.Setenv("AWS_CONFIG_FILE", cfgFile)
		cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithSharedConfigProfile("dispenser"))
		must(t, err)
		creds, err := cfg.Credentials.Retrieve(context.Background())
		if err != nil {
			t.Fatalf("Retrieve: %v", err)
		}
		if !akidRe.MatchString(creds.AccessKeyID) || len(creds.SecretAccessKey) != 40 || creds.SessionToken == "" || creds.Source != processcreds.ProviderName {
			t.Fatalf("credentials %+v", creds)
		}
		if !creds.CanExpire || time.Until(creds.Expires) < 40*time.Minute {
			t.Fatalf("expiry %v", creds.Expires)
		}
	})

	t.Run("exactly the credential_process fields", func(t *testing.T) {
		out, err := exec.Command(bin, "credentials", "--url", good, "--token-file", tokenFile).Output()
		must(t, err)
		var m map[string]any
		must(t, json.Unmarshal(out, &m))
		if len(m) != 5 || m["Version"] != float64(1) || m["AccessKeyId"] == nil || m["SecretAccessKey"] == nil || m["SessionToken"] == nil || m["Expiration"] == nil {
			t.Fatalf("output %s", out)
		}
	})

	t.Run("denial", func(t *testing.T) {
		c := &capturedCommand{line: credentialsLine(bin, srv.URL+"/credentials?operation=put&location=s3://media/other/", "--token-file", tokenFile), stderr: &bytes.Buffer{}}
		_, err := processcreds.NewProviderCommand(c).Retrieve(context.Background())
		if err == nil {
			t.Fatal("denied request returned credentials")
		}
		if c.exitCode() != credsExitRefused {
			t.Errorf("exit %d, want %d", c.exitCode(), credsExitRefused)
		}
		if got := c.stderr.String(); got != "AccessDenied: operation put is not allowed on s3://media/other/ for org acme\n" {
			t.Errorf("stderr %q", got)
		}
		if strings.Contains(c.stderr.String(), tok) {
			t.Error("the token reached stderr")
		}
	})

	t.Run("token rotation", func(t *testing.T) {
		c := &capturedCommand{line: credentialsLine(bin, good, "--token-file", tokenFile), stderr: &bytes.Buffer{}}
		p := processcreds.NewProviderCommand(c)
		stale := "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c3RhbGU"
		must(t, os.WriteFile(tokenFile, []byte(stale+"\n"), 0o600))
		if _, err := p.Retrieve(context.Background()); err == nil {
			t.Fatal("a stale token was accepted")
		}
		if c.exitCode() != credsExitRefused || !strings.HasPrefix(c.stderr.String(), "Unauthorized: ") || strings.Contains(c.stderr.String(), stale) {
			t.Fatalf("exit %d stderr %q", c.exitCode(), c.stderr.String())
		}
		// The rotated token, written over the file: the same provider's
		// next call reads it.
		replaceFile(t, tokenFile, tok+"\n")
		creds, err := p.Retrieve(context.Background())
		if err != nil || !akidRe.MatchString(creds.AccessKeyID) {
			t.Fatalf("after rotation: %+v %v (stderr %q)", creds, err, c.stderr.String())
		}
	})
}

// TestCredentialsSigV4AndPrivateCA: --sigv4 signs with the dispenser-issued
// key from the environment over TLS with a private CA (--ca-file); without
// the CA the certificate is refused with a hint, exit 3.
func TestCredentialsSigV4AndPrivateCA(t *testing.T) {
	dir := t.TempDir()
	path := e2eConfig(t, dir, `  sigv4:
    region: eu-west-1
    keys: {type: file, path: keys.json}`, "")
	a, _ := startAuthnApp(t, path)
	ca := authtest.NewCA(t, "private-ca")
	cert, _, _ := ca.Issue(t, authtest.Leaf{CN: "localhost", DNS: []string{"localhost"}, Server: true})
	srv := httptest.NewUnstartedServer(a.server.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	caFile := authtest.WriteFile(t, dir, "ca.pem", ca.PEM)
	var out, errb bytes.Buffer
	if code := run([]string{"keys", "create", "--config", path, "--name", "worker-1", "--org", "acme"}, &out, &errb); code != 0 {
		t.Fatalf("keys create: %s", errb.String())
	}
	var key struct{ AccessKeyId, SecretAccessKey string }
	must(t, json.Unmarshal(out.Bytes(), &key))
	t.Setenv("AWS_ACCESS_KEY_ID", key.AccessKeyId)
	t.Setenv("AWS_SECRET_ACCESS_KEY", key.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "not-sent")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	u := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/credentials?operation=get&location=s3://media/acme/in/&format=container"

	code, stdout, stderr := runCmd("credentials", "--url", u, "--sigv4", "--region", "eu-west-1", "--ca-file", caFile)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var p processOutput
	if err := json.Unmarshal([]byte(stdout), &p); err != nil || p.Version != 1 || !akidRe.MatchString(p.AccessKeyID) {
		t.Fatalf("output %q: %v", stdout, err)
	}
	// The region from the environment.
	t.Setenv("AWS_REGION", "eu-west-1")
	if code, _, stderr := runCmd("credentials", "--url", u, "--sigv4", "--ca-file", caFile); code != 0 {
		t.Fatalf("region from AWS_REGION: %d %s", code, stderr)
	}
	// A wrong region is the dispenser's refusal, not a transport error.
	code, _, stderr = runCmd("credentials", "--url", u, "--sigv4", "--region", "us-east-1", "--ca-file", caFile)
	if code != credsExitRefused || !strings.HasPrefix(stderr, "Unauthorized: SigV4: the credential scope must use region \"eu-west-1\"") {
		t.Fatalf("wrong region: %d %q", code, stderr)
	}
	code, _, stderr = runCmd("credentials", "--url", u, "--sigv4")
	if code != credsExitTransport || !strings.Contains(stderr, "cannot verify the certificate") || !strings.Contains(stderr, "--ca-file") {
		t.Fatalf("unknown CA: %d %q", code, stderr)
	}
	for _, out := range []string{stderr} {
		if strings.Contains(out, key.SecretAccessKey) || strings.Contains(out, "Signature=") {
			t.Errorf("a secret reached stderr: %q", out)
		}
	}
}

// TestCredentialsUsageAndTransportErrors: bad flags exit 2 with one clear
// line; an unreachable or silent dispenser exits 3, as does an answer that
// is not the dispenser's (it names the HTTP status); a redirect is not
// followed.
func TestCredentialsUsageAndTransportErrors(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	const secretToken = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzZWNyZXQifQ.c2VjcmV0LXNpZw"
	must(t, os.WriteFile(tokenFile, []byte(secretToken+"\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	must(t, os.WriteFile(empty, []byte("\n"), 0o600))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")

	hang := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer silent.Close()
	defer close(hang)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway "+r.Header.Get("Authorization")+"</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/credentials", http.StatusFound)
	}))
	defer redirect.Close()
	closed := "http://" + freePort(t) + "/credentials?operation=get&location=s3://b/p/"

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no url", []string{"--token-file", tokenFile}, credsExitUsage, "--url is required"},
		{"no auth", []string{"--url", closed}, credsExitUsage, "exactly one of --token-file and --sigv4"},
		{"both auths", []string{"--url", closed, "--token-file", tokenFile, "--sigv4"}, credsExitUsage, "exactly one of"},
		{"plain http beyond loopback", []string{"--url", "http://dispenser.example.com/credentials", "--token-file", tokenFile}, credsExitUsage, "loopback"},
		{"credentials in the url", []string{"--url", "https://u:p@dispenser.example.com/credentials", "--token-file", tokenFile}, credsExitUsage, "--url must not carry credentials"},
		{"missing token file", []string{"--url", closed, "--token-file", filepath.Join(dir, "nope")}, credsExitUsage, "--token-file: open"},
		{"empty token file", []string{"--url", closed, "--token-file", empty}, credsExitUsage, "is empty"},
		{"sigv4 without keys", []string{"--url", closed, "--sigv4", "--region", "us-east-1"}, credsExitUsage, "AWS_ACCESS_KEY_ID"},
		{"bad ca file", []string{"--url", closed, "--token-file", tokenFile, "--ca-file", tokenFile}, credsExitUsage, "holds no PEM certificate"},
		{"unreachable", []string{"--url", closed, "--token-file", tokenFile}, credsExitTransport, "cannot reach http://" + strings.TrimPrefix(strings.SplitN(closed, "/credentials", 2)[0], "http://") + "/credentials"},
		{"silent", []string{"--url", silent.URL + "/credentials", "--token-file", tokenFile, "--timeout", "300ms"}, credsExitTransport, "no answer from " + silent.URL + "/credentials within 300ms"},
		{"not the dispenser", []string{"--url", proxy.URL + "/credentials", "--token-file", tokenFile}, credsExitTransport, "answered HTTP 502 Bad Gateway without the dispenser's error body"},
		{"redirect", []string{"--url", redirect.URL + "/credentials", "--token-file", tokenFile}, credsExitTransport, "answered HTTP 302 Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(append([]string{"credentials"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d stderr %q; want %d and %q", code, stderr, tc.code, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("more than one line: %q", stderr)
			}
			if strings.Contains(stderr, secretToken) || strings.Contains(stderr, "c2VjcmV0LXNpZw") {
				t.Errorf("the token reached stderr: %q", stderr)
			}
		})
	}
}

// TestCredentialsRefusalShapes: the dispenser's error answer becomes
// "code: message" (with the retry hint of a 429/503), on one line even if
// the message held control characters; a 200 that is not credential_process
// JSON is a transport error.
func TestCredentialsRefusalShapes(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokenFile, []byte("tok"), 0o600))
	var status int
	var body, retry string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") != "process" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "wrong request", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		status      int
		body, retry string
		code        int
		want        string
	}{
		{429, `{"code":"Throttled","message":"rate limit exceeded"}`, "3", credsExitRefused, "Throttled: rate limit exceeded (retry after 3s)\n"},
		{503, `{"code":"BackendUnavailable","message":"STS is throttling;\nretry shortly"}`, "5", credsExitRefused, "BackendUnavailable: STS is throttling; retry shortly (retry after 5s)\n"},
		{403, `{"code":"AccessDenied","message":"no"}`, "", credsExitRefused, "AccessDenied: no\n"},
		{200, `{"Version":2}`, "", credsExitTransport, "answered 200 but with Version 2, not 1"},
		{200, `{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"soon"}`, "", credsExitTransport, "without a valid Expiration"},
		{200, `not json`, "", credsExitTransport, "not credential_process JSON"},
	} {
		status, body, retry = tc.status, tc.body, tc.retry
		// format=container in the URL is replaced: the answer must be
		// credential_process JSON.
		code, _, stderr := runCmd("credentials", "--url", srv.URL+"/credentials?operation=get&format=container", "--token-file", tokenFile)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%d %s: exit %d stderr %q; want %d %q", tc.status, tc.body, code, stderr, tc.code, tc.want)
		}
		if strings.Contains(stderr, `"S"`) || strings.Contains(stderr, `"T"`) {
			t.Errorf("credentials on stderr: %q", stderr)
		}
	}
}
