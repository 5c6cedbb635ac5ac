package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/vtk/dispenser/internal/validate"
)

// Exit codes of `dispenser credentials`, so scripts can tell a refusal
// from a dispenser they could not reach.
const (
	credsExitRefused   = 1 // the dispenser answered with an error
	credsExitUsage     = 2 // bad flags, unreadable token or CA file, missing keys
	credsExitTransport = 3 // no usable answer: connection, TLS, timeout, an answer not from the dispenser

	// credsHelp is what parseCredentialsArgs returns when -h or --help
	// printed the flags: nothing to fetch, exit 0.
	credsHelp = -1
)

// maxCredentialsBody bounds what is read of an answer.
const maxCredentialsBody = 1 << 20

// processOutput is exactly what credential_process must print.
type processOutput struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken"`
	Expiration      string `json:"Expiration"`
}

// cmdCredentials fetches credentials from a dispenser for
// credential_process and scripts: it prints the credential_process JSON,
// or, on any refusal, the dispenser's "code: message" on stderr and exits
// non-zero (what the AWS CLI and SDKs show their user). The bearer token is
// read from its file on every call, so a rotated token just works. No
// secret (token, signature, credentials) is ever written to stderr.
func cmdCredentials(args []string, stdout, stderr io.Writer) int {
	ca, code := parseCredentialsArgs(args, stderr)
	if code == credsHelp {
		return 0
	}
	if code != 0 {
		return code
	}
	client, err := credentialsClient(ca.caFile, ca.timeout)
	if err != nil {
		return credsUsage(stderr, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ca.timeout)
	defer cancel()
	req, code := ca.request(ctx, stderr)
	if code != 0 {
		return code
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "credentials: %s\n", transportProblem(err, ca.u, ca.timeout))
		return credsExitTransport
	}
	defer resp.Body.Close()
	return ca.answer(resp, stdout, stderr)
}

// credentialsArgs are the flags of dispenser credentials, checked.
type credentialsArgs struct {
	u                                  *url.URL
	tokenFile, region, service, caFile string
	sigv4                              bool
	timeout                            time.Duration
}

// credsUsage says what is wrong with the command line; it returns
// credsExitUsage.
func credsUsage(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "credentials: "+format+"\n", a...)
	return credsExitUsage
}

// parseCredentialsArgs parses and checks the flags; a non-zero code is
// the exit code, what is wrong said on stderr.
func parseCredentialsArgs(args []string, stderr io.Writer) (credentialsArgs, int) {
	var ca credentialsArgs
	fs := newFlags("credentials", stderr)
	rawURL := fs.String("url", "", "the dispenser's /credentials URL with the task's query (operation, location, ...)")
	fs.StringVar(&ca.tokenFile, "token-file", "", "file holding the bearer token (re-read on every call)")
	fs.BoolVar(&ca.sigv4, "sigv4", false, "sign with the dispenser-issued key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
	fs.StringVar(&ca.region, "region", "", "SigV4 region (default $AWS_REGION, then $AWS_DEFAULT_REGION)")
	fs.StringVar(&ca.service, "service", "execute-api", "SigV4 service (the dispenser's auth.sigv4.service)")
	fs.StringVar(&ca.caFile, "ca-file", "", "PEM bundle of the CA that signed the dispenser's certificate (instead of the system roots)")
	fs.DurationVar(&ca.timeout, "timeout", 20*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ca, credsHelp
		}
		return ca, credsExitUsage
	}
	if fs.NArg() > 0 {
		return ca, credsUsage(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if *rawURL == "" {
		return ca, credsUsage(stderr, "--url is required (https://DISPENSER/credentials?operation=...&location=s3://...)")
	}
	if err := validate.ServiceURL(*rawURL); err != nil {
		return ca, credsUsage(stderr, "--url %v", err)
	}
	ca.u, _ = url.Parse(*rawURL)
	if (ca.tokenFile == "") == !ca.sigv4 {
		return ca, credsUsage(stderr, "set exactly one of --token-file and --sigv4")
	}
	if ca.timeout <= 0 {
		return ca, credsUsage(stderr, "--timeout must be positive")
	}
	// The answer must be in credential_process shape; any other format
	// the URL asks for is replaced.
	q := ca.u.Query()
	if q.Get("format") != "process" {
		q.Set("format", "process")
		ca.u.RawQuery = q.Encode()
	}
	return ca, 0
}

// request builds the authenticated GET; a non-zero code is the exit code.
func (ca credentialsArgs) request(ctx context.Context, stderr io.Writer) (*http.Request, int) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ca.u.String(), nil)
	if err != nil {
		return nil, credsUsage(stderr, "--url: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dispenser-credentials/"+version)
	if ca.tokenFile != "" {
		tok, err := readToken(ca.tokenFile)
		if err != nil {
			return nil, credsUsage(stderr, "%v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if code := signCredentialsRequest(req, ca.region, ca.service, stderr); code != 0 {
		return nil, code
	}
	return req, 0
}

// answer prints the credentials of a 200 in credential_process shape, or
// says why there are none; it returns the exit code.
func (ca credentialsArgs) answer(resp *http.Response, stdout, stderr io.Writer) int {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCredentialsBody))
	if err != nil {
		fmt.Fprintf(stderr, "credentials: reading the answer of %s: %s\n", endpoint(ca.u), transportProblem(err, ca.u, ca.timeout))
		return credsExitTransport
	}
	if resp.StatusCode != http.StatusOK {
		line, fromDispenser := refusal(resp, body, ca.u)
		fmt.Fprintln(stderr, line)
		if !fromDispenser {
			return credsExitTransport
		}
		return credsExitRefused
	}
	out, err := processAnswer(body)
	if err != nil {
		fmt.Fprintf(stderr, "credentials: %s answered 200 but %v\n", endpoint(ca.u), err)
		return credsExitTransport
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "credentials: writing the answer: %v\n", err)
		return credsExitTransport
	}
	return 0
}

// credentialsClient is an HTTP client that follows no redirect (a
// redirected request could carry the token elsewhere) and trusts only the
// given CA bundle when one is named.
func credentialsClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// readToken reads the bearer token, without its trailing newline.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimRight(string(b), "\r\n")
	tok = strings.TrimPrefix(tok, "Bearer ")
	if strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	if strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("--token-file %s holds more than one line", path)
	}
	return tok, nil
}

// signCredentialsRequest signs req with SigV4 and the key in the
// environment; it returns a non-zero exit code after reporting a problem.
func signCredentialsRequest(req *http.Request, region, service string, stderr io.Writer) int {
	id, sk := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if id == "" || sk == "" {
		fmt.Fprintln(stderr, "credentials: --sigv4 needs the dispenser-issued key in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
		return credsExitUsage
	}
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		fmt.Fprintln(stderr, "credentials: --sigv4 needs --region (the dispenser's auth.sigv4.region) or AWS_REGION")
		return credsExitUsage
	}
	if service == "" {
		fmt.Fprintln(stderr, "credentials: --service must not be empty")
		return credsExitUsage
	}
	// Dispenser keys are long-term keys: no session token is sent (the
	// dispenser refuses one), whatever AWS_SESSION_TOKEN holds.
	sum := sha256.Sum256(nil)
	creds := aws.Credentials{AccessKeyID: id, SecretAccessKey: sk}
	if err := v4.NewSigner().SignHTTP(req.Context(), creds, req, hex.EncodeToString(sum[:]), service, region, time.Now()); err != nil {
		fmt.Fprintf(stderr, "credentials: signing the request: %v\n", err)
		return credsExitUsage
	}
	return 0
}

// endpoint names the dispenser in messages: scheme, host and path (the
// query is the task's, long and not needed to find the server).
func endpoint(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// transportProblem is one line on why no answer came.
func transportProblem(err error, u *url.URL, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) || (ue != nil && ue.Timeout()) {
		return fmt.Sprintf("no answer from %s within %s", endpoint(u), timeout)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return fmt.Sprintf("cannot verify the certificate of %s: %v (a private CA? pass --ca-file)", endpoint(u), ce.Err)
	}
	return fmt.Sprintf("cannot reach %s: %v", endpoint(u), err)
}

// refusal is the line the AWS CLI and SDKs show for a non-200 answer: the
// dispenser's "code: message" (fromDispenser), or the HTTP status when the
// answer is not the dispenser's error shape (a proxy in front of a
// dispenser that is down, a wrong URL, a redirect).
func refusal(resp *http.Response, body []byte, u *url.URL) (line string, fromDispenser bool) {
	var e struct{ Code, Message string }
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/json" && json.Unmarshal(body, &e) == nil && e.Code != "" {
		line := oneLine(e.Code) + ": " + oneLine(e.Message)
		if ra := resp.Header.Get("Retry-After"); ra != "" && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			line += " (retry after " + oneLine(ra) + "s)"
		}
		return line, true
	}
	return fmt.Sprintf("credentials: %s answered HTTP %s without the dispenser's error body (is --url the dispenser's /credentials?)", endpoint(u), oneLine(resp.Status)), false
}

// oneLine keeps a server-supplied string on one bounded line.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}

// processAnswer checks a 200 answer and keeps exactly the
// credential_process fields.
func processAnswer(body []byte) (processOutput, error) {
	var in processOutput
	if err := json.Unmarshal(body, &in); err != nil {
		return processOutput{}, errors.New("the body is not credential_process JSON")
	}
	if in.Version != 1 {
		return processOutput{}, fmt.Errorf("with Version %d, not 1", in.Version)
	}
	if in.AccessKeyID == "" || in.SecretAccessKey == "" {
		return processOutput{}, errors.New("without AccessKeyId and SecretAccessKey")
	}
	if _, err := time.Parse(time.RFC3339, in.Expiration); err != nil {
		return processOutput{}, errors.New("without a valid Expiration")
	}
	return in, nil
}
