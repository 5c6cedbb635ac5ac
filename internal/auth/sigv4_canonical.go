package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file implements the parts of AWS Signature Version 4 that both the
// SigV4 authenticator and the IAM (GetCallerIdentity) authenticator need:
// parsing the Authorization header and the presigned query, and building the
// canonical request, string to sign and signature. It follows "Create a
// signed AWS API request" (AWS IAM User Guide): canonical URI = the
// URI-encoded absolute path (encoded once more for non-S3 services, as the
// SDKs do), canonical query = every parameter name and value URI-encoded
// (RFC 3986 unreserved characters left as they are, space as %20), sorted by
// name then value, canonical headers = lower-case names, trimmed values with
// inner runs of spaces collapsed, repeated headers joined with commas. The
// query as sent, sorted (rawSortedQuery), is accepted as well: botocore
// signs that form for a URL that is not percent-encoded.

const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	sigV4TimeFormat = "20060102T150405Z"
	sigV4DateFormat = "20060102"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// emptySHA256 is the hex SHA-256 of the empty string.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// sigV4Parts are the fields of a SigV4 Authorization header or presigned
// query.
type sigV4Parts struct {
	AccessKeyID   string
	Date          string // yyyymmdd from the credential scope
	Region        string
	Service       string
	SignedHeaders []string
	Signature     string
}

var errMalformed = errors.New("malformed SigV4 authorization")

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
// SignedHeaders=a;b, Signature=hex". Each component must appear exactly once.
func parseAuthorization(h string) (sigV4Parts, error) {
	rest, ok := strings.CutPrefix(h, sigV4Algorithm+" ")
	if !ok {
		return sigV4Parts{}, errMalformed
	}
	var cred, signed, sig string
	var seen [3]bool
	for _, comp := range strings.Split(rest, ",") {
		comp = strings.TrimSpace(comp)
		k, v, ok := strings.Cut(comp, "=")
		if !ok {
			return sigV4Parts{}, errMalformed
		}
		var i int
		switch k {
		case "Credential":
			i, cred = 0, v
		case "SignedHeaders":
			i, signed = 1, v
		case "Signature":
			i, sig = 2, v
		default:
			return sigV4Parts{}, errMalformed
		}
		if seen[i] {
			return sigV4Parts{}, errMalformed
		}
		seen[i] = true
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return sigV4Parts{}, errMalformed
	}
	return buildParts(cred, signed, sig)
}

func buildParts(cred, signed, sig string) (sigV4Parts, error) {
	f := strings.Split(cred, "/")
	if len(f) != 5 || f[4] != "aws4_request" || f[0] == "" || f[2] == "" || f[3] == "" {
		return sigV4Parts{}, errMalformed
	}
	if _, err := time.Parse(sigV4DateFormat, f[1]); err != nil || len(f[1]) != 8 {
		return sigV4Parts{}, errMalformed
	}
	if len(sig) != 64 {
		return sigV4Parts{}, errMalformed
	}
	if _, err := hex.DecodeString(sig); err != nil || strings.ToLower(sig) != sig {
		return sigV4Parts{}, errMalformed
	}
	headers := strings.Split(signed, ";")
	for i, name := range headers {
		// Names must be lower case, non-empty, strictly sorted (which also
		// rules out duplicates).
		if name == "" || strings.ToLower(name) != name || (i > 0 && headers[i-1] >= name) || !validToken(name) {
			return sigV4Parts{}, errMalformed
		}
	}
	return sigV4Parts{AccessKeyID: f[0], Date: f[1], Region: f[2], Service: f[3], SignedHeaders: headers, Signature: sig}, nil
}

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// queryParam is one decoded query parameter, in request order.
type queryParam struct{ Name, Value string }

// parseQuery decodes a raw query string keeping order and repeated names.
// '+' decodes to a space, as the SDKs' url.Values parsing does before they
// re-encode for signing.
func parseQuery(raw string) ([]queryParam, error) {
	if raw == "" {
		return nil, nil
	}
	var out []queryParam
	for _, piece := range strings.Split(raw, "&") {
		if piece == "" {
			continue
		}
		k, v, _ := strings.Cut(piece, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		out = append(out, queryParam{dk, dv})
	}
	return out, nil
}

// uriEncode percent-encodes every byte except the RFC 3986 unreserved
// characters (and '/' when keepSlash), with upper-case hex.
func uriEncode(s string, keepSlash bool) string {
	const hexdig = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || (keepSlash && c == '/') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexdig[c>>4])
		b.WriteByte(hexdig[c&15])
	}
	return b.String()
}

// canonicalQuery encodes params (minus any named skip), sorted by encoded
// name then encoded value.
func canonicalQuery(params []queryParam, skip string) string {
	enc := make([]queryParam, 0, len(params))
	for _, p := range params {
		if p.Name == skip {
			continue
		}
		enc = append(enc, queryParam{uriEncode(p.Name, false), uriEncode(p.Value, false)})
	}
	return joinSorted(enc, 0)
}

// rawSortedQuery is the query string as sent, in the form botocore signs
// when a URL carries its own query (SigV4Auth._canonical_query_string_url):
// the raw pieces between '&' (empty ones included), each split at its
// first '=' ("k" becomes "k="), sorted by key then value, joined with '&';
// nothing is decoded or re-encoded. Every byte of the query the dispenser
// reads is covered; only the order of the pieces is not, as in the
// canonical form (which sorts too).
func rawSortedQuery(raw string) string {
	if raw == "" {
		return ""
	}
	pieces := strings.Split(raw, "&")
	pairs := make([]queryParam, len(pieces))
	for i, piece := range pieces {
		k, v, _ := strings.Cut(piece, "=")
		pairs[i] = queryParam{k, v}
	}
	return joinSorted(pairs, len(raw)+len(pairs))
}

// joinSorted sorts pairs by name then value and joins them as
// "name=value&…", the shape both query forms share; size is a hint.
func joinSorted(pairs []queryParam, size int) string {
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].Name != pairs[j].Name {
			return pairs[i].Name < pairs[j].Name
		}
		return pairs[i].Value < pairs[j].Value
	})
	var b strings.Builder
	b.Grow(size)
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.Name)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	return b.String()
}

// canonicalURI is the request's escaped path encoded once more (every
// non-S3 service signs the double-encoded path).
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	return uriEncode(p, true)
}

// canonicalHeaderValue trims a value and collapses inner runs of spaces.
func canonicalHeaderValue(v string) string {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "  ") {
		return v
	}
	return strings.Join(strings.Fields(v), " ")
}

// canonicalHeaders renders the signed headers. host is the Host the request
// was sent to; headers absent from the request are an error (a signature
// over a header the request does not carry cannot be checked).
func canonicalHeaders(signed []string, host string, h http.Header, contentLength int64) (string, error) {
	var b strings.Builder
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		switch name {
		case "host":
			b.WriteString(canonicalHeaderValue(host))
		case "content-length":
			v := h.Get("Content-Length")
			if v == "" && contentLength >= 0 {
				v = strconv.FormatInt(contentLength, 10)
			}
			b.WriteString(canonicalHeaderValue(v))
		default:
			vals := h.Values(name)
			if len(vals) == 0 {
				return "", errors.New("signed header " + name + " is missing")
			}
			for i, v := range vals {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(canonicalHeaderValue(v))
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// stringToSign builds the canonical request and the string to sign.
func stringToSign(method, uri, query, headers string, signed []string, payloadHash, amzDate, scope string) string {
	cr := strings.Join([]string{method, uri, query, headers, strings.Join(signed, ";"), payloadHash}, "\n")
	sum := sha256.Sum256([]byte(cr))
	return sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives the SigV4 signing key from a secret access key.
func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

// sigV4Signature returns the hex signature of sts with the derived key.
func sigV4Signature(key []byte, sts string) string {
	return hex.EncodeToString(hmacSHA256(key, sts))
}

// signatureEqual compares two hex signatures in constant time.
func signatureEqual(a, b string) bool {
	return hmac.Equal([]byte(a), []byte(b))
}

// canonicalHost returns the Host a client signed: the SDKs drop the default
// port of the scheme before signing. Both default ports are dropped because
// behind a TLS-terminating proxy the scheme the client used is not known
// here; a client that signed a non-default port 80/443 fails closed.
func canonicalHost(r *http.Request) string {
	host := strings.TrimSuffix(r.Host, ":443")
	return strings.TrimSuffix(host, ":80")
}
