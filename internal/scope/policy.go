package scope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxPolicyChars is STS's limit on the plaintext inline session policy. It
// is checked against the policy's length in bytes, which is never less than
// its length in characters, so a policy that passes here passes at STS.
const MaxPolicyChars = 2048

// policyEscaper escapes IAM wildcard and variable characters in one pass.
// Replacing '*' first and '$' afterwards would corrupt "${*}" into "${$}{*}".
var policyEscaper = strings.NewReplacer("*", "${*}", "?", "${?}", "$", "${$}")

// EscapePolicyString makes s match itself literally in a resource ARN or a
// StringLike condition value.
func EscapePolicyString(s string) string { return policyEscaper.Replace(s) }

// PolicyDocument is an IAM policy. Field order is the canonical order of the
// compact JSON sent to STS.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement. Action and Resource are always
// lists so every reader (operators, the evaluator in the tests) sees one
// shape.
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
// exactly keys when keys is non-empty (every key must lie under loc.Prefix).
//
// The exact-key form lists each object ARN. When it is longer than
// MaxPolicyChars the keys are compacted to their longest common directory,
// which is never above loc.Prefix, so the policy stays inside the location
// the rules allowed; compacted reports that this happened. When even the
// prefix form is too long, the error names the limit. BuildPolicy never
// returns an empty policy: STS would grant a session without one the role's
// full permissions.
//
// It is the entry point for inputs that were not parsed here (the policy
// fuzzer, tests building the policy a grant should carry): it validates
// them, then builds exactly as Rules.Decide does (through the policy cache,
// on inputs ParseLocation and ParseFile already validated).
func BuildPolicy(op Operation, loc Location, keys []string, opt PolicyOptions) (policy string, compacted bool, err error) {
	if _, ok := opIndex(op); !ok {
		return "", false, fmt.Errorf("no session policy is defined for operation %q", truncate(string(op), 40))
	}
	// Callers may pass anything: check what buildPolicy relies on.
	if err := validateBucket(loc.Bucket); err != nil {
		return "", false, err
	}
	if err := validateKeyPart("location prefix", loc.Prefix); err != nil {
		return "", false, err
	}
	if loc.Prefix != "" && !strings.HasSuffix(loc.Prefix, "/") {
		return "", false, errors.New("location prefix must end in '/'")
	}
	if len(keys) > 0 {
		keys = slices.Compact(slices.Sorted(slices.Values(keys)))
		for _, k := range keys {
			if !strings.HasPrefix(k, loc.Prefix) || k == loc.Prefix || strings.HasSuffix(k, "/") {
				return "", false, errors.New("every file must name an object under the location")
			}
			if err := validateKeyPart("file name", k); err != nil {
				return "", false, err
			}
		}
	}
	return buildPolicy(op, loc, keys, opt)
}

// buildPolicy is BuildPolicy for inputs already validated by ParseLocation
// and ParseFile, with keys sorted and unique.
func buildPolicy(op Operation, loc Location, keys []string, opt PolicyOptions) (policy string, compacted bool, err error) {
	if len(keys) > 0 {
		// Each key appears at least once as a quoted object ARN: when even
		// that lower bound is over the limit, skip encoding a long list.
		lower := 0
		for _, k := range keys {
			lower += len(`"arn:aws:s3:::/",`) + len(loc.Bucket) + len(k)
		}
		if lower <= MaxPolicyChars {
			s, err := encodePolicy(policyFor(op, loc.Bucket, "", keys, opt))
			if err != nil {
				return "", false, err
			}
			if len(s) <= MaxPolicyChars {
				return s, false, nil
			}
		}
		loc.Prefix, compacted = commonDir(keys, loc.Prefix), true
	}
	s, err := encodePolicy(policyFor(op, loc.Bucket, loc.Prefix, nil, opt))
	if err != nil {
		return "", false, err
	}
	if len(s) > MaxPolicyChars {
		what := "a shorter location"
		if compacted {
			what = "fewer or shorter file names, or files that share a deeper directory"
		}
		return "", false, fmt.Errorf("the session policy for this request would be %d bytes, over the STS limit of %d characters; use %s", len(s), MaxPolicyChars, what)
	}
	return s, compacted, nil
}

// policyFor builds the statements for op on prefix, or on exactly keys.
func policyFor(op Operation, bucket, prefix string, keys []string, opt PolicyOptions) PolicyDocument {
	bucketARN := "arn:aws:s3:::" + bucket
	var objects, listPrefixes []string
	if len(keys) > 0 {
		for _, k := range keys {
			e := EscapePolicyString(k)
			objects = append(objects, bucketARN+"/"+e)
			listPrefixes = append(listPrefixes, e)
		}
	} else {
		e := EscapePolicyString(prefix)
		objects = []string{bucketARN + "/" + e + "*"}
		listPrefixes = []string{e + "*"}
	}
	list := Statement{Sid: "List", Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{bucketARN}}
	if len(keys) > 0 || prefix != "" {
		list.Condition = map[string]map[string][]string{"StringLike": {"s3:prefix": listPrefixes}}
	}
	// GetBucketLocation reveals only the bucket's region; SDKs and the
	// toolkit's minimal policies use it to pick the endpoint.
	location := Statement{Sid: "Location", Effect: "Allow", Action: []string{"s3:GetBucketLocation"}, Resource: []string{bucketARN}}
	var st []Statement
	switch op {
	case OpGet:
		st = []Statement{{Sid: "Read", Effect: "Allow", Action: []string{"s3:GetObject"}, Resource: objects}, list, location}
	case OpPut:
		// ListBucket lets non-overwriting uploads check for an existing object.
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

// encodePolicy writes doc as compact JSON with HTML escaping off (so '&',
// '<', '>' in keys stay one character and the length check counts what STS
// sees).
func encodePolicy(doc PolicyDocument) (string, error) {
	if len(doc.Statement) == 0 {
		// Never send an empty policy: STS would grant the role's full permissions.
		return "", errors.New("refusing to build an empty session policy")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return "", fmt.Errorf("encode session policy: %w", err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// commonDir returns the longest prefix ending in '/' shared by all keys,
// never shorter than floor (the location's own prefix, which every key
// starts with).
func commonDir(keys []string, floor string) string {
	p := keys[0]
	for _, k := range keys[1:] {
		n := 0
		for n < len(p) && n < len(k) && p[n] == k[n] {
			n++
		}
		p = p[:n]
	}
	p = p[:strings.LastIndex(p, "/")+1]
	if len(p) < len(floor) {
		return floor
	}
	return p
}
