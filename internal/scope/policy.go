package scope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// MaxPolicyChars is STS's limit on the plaintext inline session policy.
const MaxPolicyChars = 2048

// policyEscaper escapes IAM wildcard and variable characters in one pass.
// Replacing '*' first and '$' afterwards would corrupt "${*}" into "${$}{*}".
var policyEscaper = strings.NewReplacer("*", "${*}", "?", "${?}", "$", "${$}")

// EscapePolicyString makes s match itself literally in an ARN or a
// StringLike condition value.
func EscapePolicyString(s string) string { return policyEscaper.Replace(s) }

// PolicyDocument is an IAM policy. Field order is the canonical order of the
// compact JSON sent to STS.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement. Action and Resource are always
// lists so the evaluator in the tests reads one shape.
type Statement struct {
	Sid       string                         `json:"Sid,omitempty"`
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// PolicyOptions are tenant switches that widen the default policies.
type PolicyOptions struct {
	// CheckAllowsGet adds s3:GetObject to check (HEAD needs GetObject).
	CheckAllowsGet bool
}

// BuildPolicy returns the compact JSON session policy for op on loc, or on
// exactly keys when keys is non-empty. When the exact-key form is longer than
// MaxPolicyChars it falls back to the longest common directory of the keys
// (still inside loc); when even that is too long it returns an error.
func BuildPolicy(op Operation, loc Location, keys []string, opt PolicyOptions) (string, error) {
	if len(keys) > 0 {
		doc := policyFor(op, loc.Bucket, loc.Prefix, keys, opt)
		s, err := encodePolicy(doc)
		if err != nil {
			return "", err
		}
		if len(s) <= MaxPolicyChars {
			return s, nil
		}
		loc = Location{Bucket: loc.Bucket, Prefix: commonDir(keys, loc.Prefix)}
	}
	s, err := encodePolicy(policyFor(op, loc.Bucket, loc.Prefix, nil, opt))
	if err != nil {
		return "", err
	}
	if len(s) > MaxPolicyChars {
		return "", fmt.Errorf("the session policy for this request is %d characters, over the STS limit of %d; use a shorter location", len(s), MaxPolicyChars)
	}
	return s, nil
}

func policyFor(op Operation, bucket, prefix string, keys []string, opt PolicyOptions) PolicyDocument {
	bucketARN := "arn:aws:s3:::" + bucket
	var objects, listPrefixes []string
	if len(keys) > 0 {
		uniq := append([]string(nil), keys...)
		sort.Strings(uniq)
		uniq = compactSorted(uniq)
		for _, k := range uniq {
			objects = append(objects, bucketARN+"/"+EscapePolicyString(k))
			listPrefixes = append(listPrefixes, EscapePolicyString(k))
		}
	} else {
		objects = []string{bucketARN + "/" + EscapePolicyString(prefix) + "*"}
		listPrefixes = []string{EscapePolicyString(prefix) + "*"}
	}
	list := Statement{
		Sid: "List", Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{bucketARN},
		Condition: map[string]map[string][]string{"StringLike": {"s3:prefix": listPrefixes}},
	}
	location := Statement{Sid: "Location", Effect: "Allow", Action: []string{"s3:GetBucketLocation"}, Resource: []string{bucketARN}}
	var st []Statement
	switch op {
	case OpGet:
		st = []Statement{{Sid: "Read", Effect: "Allow", Action: []string{"s3:GetObject"}, Resource: objects}, list, location}
	case OpPut:
		st = []Statement{{Sid: "Write", Effect: "Allow", Action: []string{"s3:PutObject", "s3:AbortMultipartUpload"}, Resource: objects}, list, location}
	case OpCheck:
		if opt.CheckAllowsGet {
			st = append(st, Statement{Sid: "Head", Effect: "Allow", Action: []string{"s3:GetObject"}, Resource: objects})
		}
		st = append(st, list, location)
	case OpTag:
		st = []Statement{{Sid: "Tag", Effect: "Allow", Action: []string{"s3:PutObjectTagging"}, Resource: objects}, location}
	}
	return PolicyDocument{Version: "2012-10-17", Statement: st}
}

func encodePolicy(doc PolicyDocument) (string, error) {
	if len(doc.Statement) == 0 {
		// Never send an empty policy: STS would grant the role's full permissions.
		return "", fmt.Errorf("refusing to build an empty session policy")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return "", fmt.Errorf("encode session policy: %w", err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func compactSorted(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// commonDir returns the longest prefix ending in '/' shared by all keys,
// never shorter than floor (the location's own prefix).
func commonDir(keys []string, floor string) string {
	p := keys[0]
	for _, k := range keys[1:] {
		for !strings.HasPrefix(k, p) {
			p = p[:len(p)-1]
		}
	}
	if i := strings.LastIndex(p, "/"); i >= 0 {
		p = p[:i+1]
	} else {
		p = ""
	}
	if len(p) < len(floor) {
		return floor
	}
	return p
}
