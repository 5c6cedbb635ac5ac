package scope

import (
	"fmt"
	"net"
	"strings"
	"unicode/utf8"
)

// MaxKeyBytes is S3's object key limit; a prefix or a file key longer than
// this can never name an object.
const MaxKeyBytes = 1024

// Location is a parsed s3://bucket/prefix/ with any userinfo removed.
// Prefix is "" (whole bucket) or ends in "/".
type Location struct {
	Bucket string
	Prefix string
}

// String renders the location without userinfo.
func (l Location) String() string { return "s3://" + l.Bucket + "/" + l.Prefix }

// ParseLocation parses an S3 URL as the storage tools write it. Userinfo
// (s3://KEY:SECRET@bucket/..., s3://{secret}@bucket/...) is dropped and never
// appears in the returned value or in an error message.
func ParseLocation(raw string) (Location, error) {
	if raw == "" {
		return Location{}, fmt.Errorf("location is required (s3://bucket/prefix/)")
	}
	if !strings.HasPrefix(raw, "s3://") {
		return Location{}, fmt.Errorf("location must start with s3://")
	}
	rest := stripUserinfo(raw[len("s3://"):])
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := validateBucket(bucket); err != nil {
		return Location{}, err
	}
	if err := validateKeyPart("location prefix", prefix, true); err != nil {
		return Location{}, err
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if len(prefix) > MaxKeyBytes {
		return Location{}, fmt.Errorf("location prefix is longer than %d bytes", MaxKeyBytes)
	}
	return Location{Bucket: bucket, Prefix: prefix}, nil
}

// stripUserinfo removes "userinfo@" from the authority. Bucket names cannot
// contain '@' or ':', so an '@' before the first '/' is userinfo; a ':' before
// the first '/' means KEY:SECRET userinfo whose secret itself contains '/'.
func stripUserinfo(rest string) string {
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return rest
	}
	slash := strings.Index(rest, "/")
	if slash < 0 || at < slash {
		return rest[at+1:]
	}
	if strings.Contains(rest[:slash], ":") || strings.HasPrefix(rest, "{") {
		// The userinfo ends at the first '@' followed by a valid-looking
		// bucket; secrets may contain '/', so search from the left.
		for i := strings.Index(rest, "@"); i >= 0 && i < len(rest); {
			cand := rest[i+1:]
			b, _, _ := strings.Cut(cand, "/")
			if validateBucket(b) == nil {
				return cand
			}
			j := strings.Index(cand, "@")
			if j < 0 {
				break
			}
			i += j + 1
		}
		// Unparseable userinfo: return something that fails bucket
		// validation without echoing any of it.
		return "\x00"
	}
	return rest
}

func validateBucket(b string) error {
	if b == "" || b == "\x00" {
		return fmt.Errorf("location has no valid bucket name")
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name must be 3 to 63 characters")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("bucket name may contain only lower-case letters, digits, '.' and '-'")
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name must begin and end with a letter or digit")
	}
	if strings.Contains(b, "..") || strings.Contains(b, ".-") || strings.Contains(b, "-.") {
		return fmt.Errorf("bucket name must not contain adjacent periods or a period next to a hyphen")
	}
	if net.ParseIP(b) != nil {
		return fmt.Errorf("bucket name must not be formatted as an IP address")
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(b, p) {
			return fmt.Errorf("bucket name must not start with %q", p)
		}
	}
	for _, s := range []string{"-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"} {
		if strings.HasSuffix(b, s) {
			return fmt.Errorf("bucket name must not end with %q", s)
		}
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validateKeyPart checks a prefix or file key against what S3 keys and IAM
// policies can express safely. Messages name the rule, never the value.
func validateKeyPart(what, s string, isPrefix bool) error {
	if s == "" {
		return nil
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	if len(s) > MaxKeyBytes {
		return fmt.Errorf("%s is longer than %d bytes", what, MaxKeyBytes)
	}
	if strings.HasPrefix(s, "/") {
		return fmt.Errorf("%s must not start with '/'", what)
	}
	if strings.Contains(s, "//") {
		return fmt.Errorf("%s must not contain '//'", what)
	}
	for _, r := range s {
		// A session policy may contain only U+0020–U+00FF (plus tab and
		// newlines, which have no place in a key), and control
		// characters in a key are a log-injection vector.
		if r < 0x20 || r > 0xFF || (r >= 0x7F && r < 0xA0) {
			return fmt.Errorf("%s contains a character outside U+0020–U+00FF (or a control character), which a session policy cannot express", what)
		}
	}
	segs := strings.Split(strings.TrimSuffix(s, "/"), "/")
	for _, seg := range segs {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%s must not contain '.' or '..' segments", what)
		}
	}
	if !isPrefix && strings.HasSuffix(s, "/") {
		return fmt.Errorf("%s must name an object, not end in '/'", what)
	}
	return nil
}

// ParseFile validates a file name relative to a location and returns the
// full object key.
func ParseFile(loc Location, file string) (string, error) {
	if file == "" {
		return "", fmt.Errorf("file names must not be empty")
	}
	if err := validateKeyPart("file name", file, false); err != nil {
		return "", err
	}
	key := loc.Prefix + file
	if len(key) > MaxKeyBytes {
		return "", fmt.Errorf("object key (location prefix + file) is longer than %d bytes", MaxKeyBytes)
	}
	return key, nil
}
