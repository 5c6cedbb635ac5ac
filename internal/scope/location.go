package scope

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxKeyBytes is S3's object key limit; a prefix or a file key longer than
// this can never name an object.
const MaxKeyBytes = 1024

// maxLocationBytes bounds the raw location (userinfo included) so parsing
// work stays small whatever a caller sends.
const maxLocationBytes = 4096

// Location is a parsed s3://bucket/prefix/ with any userinfo removed.
// Prefix is "" (whole bucket) or ends in "/".
type Location struct {
	Bucket string
	Prefix string
}

// String renders the location without userinfo.
func (l Location) String() string { return "s3://" + l.Bucket + "/" + l.Prefix }

// Location errors. They are fixed strings on purpose: nothing a caller sent
// (which may hold a secret in its userinfo) is ever echoed back.
var (
	errLocationEmpty     = errors.New("location is required (s3://bucket/prefix/)")
	errLocationScheme    = errors.New("location must start with s3://")
	errLocationTooLong   = errors.New("location is longer than " + strconv.Itoa(maxLocationBytes) + " bytes")
	errUserinfoAmbiguous = errors.New("location userinfo is ambiguous (an '@' after it could also end it); remove the userinfo, the dispenser does not use it")
	errUserinfoUnended   = errors.New("location userinfo is not followed by a valid bucket name (with userinfo, the path must not contain '@')")
)

// ParseLocation parses an S3 URL as the storage tools write it: s3://BUCKET/
// or s3://BUCKET/PREFIX, where PREFIX is always treated as a prefix ("in"
// becomes "in/") so a grant can never reach a sibling such as "index/".
//
// Userinfo is dropped and never appears in the returned value or in an error
// message. The forms the storage tools write are understood even when the
// secret contains '/' or '@' (AWS secret keys contain '/'):
//
//	s3://{secret-name}@bucket/prefix/   userinfo ends at the first "}@"
//	s3://KEY:SECRET@bucket/prefix/      userinfo ends at the last '@'
//	s3://token@bucket/prefix/           userinfo ends at the last '@' before the first '/'
//
// In the KEY:SECRET form, when more than one '@' could end the userinfo
// (the secret or the path contains "@name/"), the location is refused
// rather than guessed: a wrong guess could turn part of the secret into the
// prefix. A bare token containing '/' is read by URL grammar (the bucket
// ends at the first '/'); the storage tools never write that form.
func ParseLocation(raw string) (Location, error) {
	if raw == "" {
		return Location{}, errLocationEmpty
	}
	if len(raw) > maxLocationBytes {
		return Location{}, errLocationTooLong
	}
	rest, ok := strings.CutPrefix(raw, "s3://")
	if !ok {
		return Location{}, errLocationScheme
	}
	rest, err := stripUserinfo(rest)
	if err != nil {
		return Location{}, err
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := validateBucket(bucket); err != nil {
		return Location{}, err
	}
	if err := validateKeyPart("location prefix", prefix); err != nil {
		return Location{}, err
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if len(prefix) > MaxKeyBytes {
		return Location{}, errors.New("location prefix is longer than " + strconv.Itoa(MaxKeyBytes) + " bytes")
	}
	return Location{Bucket: bucket, Prefix: prefix}, nil
}

// stripUserinfo removes "userinfo@" from rest (the location after "s3://").
// Bucket names contain neither '@', ':', '{' nor '}', which is what makes
// the userinfo recognisable.
func stripUserinfo(rest string) (string, error) {
	authority, _, _ := strings.Cut(rest, "/")
	switch {
	case strings.HasPrefix(rest, "{"):
		// {secret-name}@: secret names may contain '/' and '@' but not '}'.
		if i := strings.Index(rest, "}@"); i >= 0 {
			return rest[i+2:], nil
		}
		if strings.Contains(rest, "@") {
			return "", errUserinfoUnended
		}
		return rest, nil // no userinfo; the bucket check refuses '{'
	case strings.Contains(authority, ":"):
		// KEY:SECRET@ where SECRET may contain '/' and '@'. The userinfo
		// ends at the last '@', so the location is always taken from after
		// the whole secret. An earlier '@' that is also followed by a valid
		// bucket name makes the split ambiguous: refuse rather than guess.
		end := strings.LastIndex(rest, "@")
		if end < 0 {
			return "", errUserinfoUnended
		}
		if b, _, _ := strings.Cut(rest[end+1:], "/"); validateBucket(b) != nil {
			return "", errUserinfoUnended
		}
		for i := strings.IndexByte(rest, '@'); i >= 0 && i < end; i += 1 + strings.IndexByte(rest[i+1:], '@') {
			if b, _, _ := strings.Cut(rest[i+1:], "/"); validateBucket(b) == nil {
				return "", errUserinfoAmbiguous
			}
		}
		return rest[end+1:], nil
	case strings.Contains(authority, "@"):
		// Plain URL grammar: the authority ends at the first '/', and its
		// last '@' ends the userinfo.
		return rest[strings.LastIndex(authority, "@")+1:], nil
	}
	return rest, nil
}

// validateBucket applies the S3 general purpose bucket naming rules. It
// never includes the name in its error.
func validateBucket(b string) error {
	if b == "" {
		return errors.New("location has no bucket name")
	}
	if len(b) < 3 || len(b) > 63 {
		return errors.New("bucket name must be 3 to 63 characters")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(isAlnum(c) || c == '.' || c == '-') {
			return errors.New("bucket name may contain only lower-case letters, digits, '.' and '-'")
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return errors.New("bucket name must begin and end with a letter or digit")
	}
	if strings.Contains(b, "..") || strings.Contains(b, ".-") || strings.Contains(b, "-.") {
		return errors.New("bucket name must not contain adjacent periods or a period next to a hyphen")
	}
	if net.ParseIP(b) != nil {
		return errors.New("bucket name must not be formatted as an IP address")
	}
	for _, p := range reservedBucketPrefixes {
		if strings.HasPrefix(b, p) {
			return errors.New("bucket name must not start with " + p)
		}
	}
	for _, s := range reservedBucketSuffixes {
		if strings.HasSuffix(b, s) {
			return errors.New("bucket name must not end with " + s)
		}
	}
	return nil
}

// Reserved by S3 for other bucket kinds and access points.
var (
	reservedBucketPrefixes = []string{"xn--", "sthree-", "amzn-s3-demo-"}
	reservedBucketSuffixes = []string{"-s3alias", "--ol-s3", "--x-s3", "--table-s3", ".mrap"}
)

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// validateKeyPart checks a prefix or file key against what S3 keys and IAM
// session policies can express safely. Messages name the rule, never the
// value.
func validateKeyPart(what, s string) error {
	if s == "" {
		return nil
	}
	if !utf8.ValidString(s) {
		return errors.New(what + " is not valid UTF-8")
	}
	if len(s) > MaxKeyBytes {
		return errors.New(what + " is longer than " + strconv.Itoa(MaxKeyBytes) + " bytes")
	}
	if strings.HasPrefix(s, "/") {
		return errors.New(what + " must not start with '/'")
	}
	if strings.Contains(s, "//") {
		return errors.New(what + " must not contain '//'")
	}
	for _, r := range s {
		if !policySafe(r) {
			return errors.New(what + " contains a control character or a character outside U+0020–U+00FF, which a session policy cannot express")
		}
	}
	for seg := range strings.SplitSeq(strings.TrimSuffix(s, "/"), "/") {
		if seg == "." || seg == ".." {
			return errors.New(what + " must not contain '.' or '..' segments")
		}
	}
	return nil
}

// policySafe reports whether r may appear in a key that goes into a session
// policy. STS accepts U+0020–U+00FF (plus tab and newlines, which have no
// place in a key); DEL and the C1 controls are refused as well because a
// control character in a key is a log-injection vector.
func policySafe(r rune) bool {
	return r >= 0x20 && r <= 0xFF && !(r >= 0x7F && r < 0xA0)
}

// ParseFile validates a file name relative to loc and returns the full
// object key. A file must name an object: it may contain '/' (a
// subdirectory of the location) but must not end in one.
func ParseFile(loc Location, file string) (string, error) {
	if file == "" {
		return "", errors.New("file names must not be empty")
	}
	if err := validateKeyPart("file name", file); err != nil {
		return "", err
	}
	if strings.HasSuffix(file, "/") {
		return "", errors.New("file name must name an object, not end in '/'")
	}
	key := loc.Prefix + file
	if len(key) > MaxKeyBytes {
		return "", errors.New("object key (location prefix + file) is longer than " + strconv.Itoa(MaxKeyBytes) + " bytes")
	}
	return key, nil
}
