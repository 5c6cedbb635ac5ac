package scope

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// allActions are the S3 actions the matrix asks about: everything a policy
// grants plus neighbours it must not.
var allActions = []string{
	"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectAcl",
	"s3:PutObject", "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:DeleteObject",
	"s3:DeleteObjectTagging", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
	"s3:ListMultipartUploadParts", "s3:RestoreObject",
}

var bucketActions = []string{
	"s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads",
	"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucket",
}

// expectation is the independent statement of least privilege: what a task
// of op on a scope needs, and nothing more.
type expectation struct {
	op       Operation
	checkGet bool
	bucket   string
	prefix   string   // prefix scope (when keys is empty)
	keys     []string // exact-key scope
}

func (e expectation) inScope(key string) bool {
	if len(e.keys) > 0 {
		return slices.Contains(e.keys, key)
	}
	return strings.HasPrefix(key, e.prefix)
}

func (e expectation) objectActions() []string {
	switch e.op {
	case OpGet:
		return []string{"s3:GetObject"}
	case OpPut:
		return []string{"s3:PutObject", "s3:AbortMultipartUpload"}
	case OpCheck:
		if e.checkGet {
			return []string{"s3:GetObject"}
		}
	case OpTag:
		return []string{"s3:PutObjectTagging"}
	}
	return nil
}

// allowed is the oracle: whether a least-privilege policy allows req.
func (e expectation) allowed(req s3Request) bool {
	bucketARN := "arn:aws:s3:::" + e.bucket
	if key, ok := strings.CutPrefix(req.Resource, bucketARN+"/"); ok {
		return slices.Contains(e.objectActions(), req.Action) && e.inScope(key)
	}
	if req.Resource != bucketARN {
		return false
	}
	switch req.Action {
	case "s3:GetBucketLocation":
		return true
	case "s3:ListBucket":
		if e.op == OpTag {
			return false
		}
		p, ok := req.Context["s3:prefix"]
		if len(e.keys) == 0 && e.prefix == "" {
			return true // whole bucket: listing without a prefix is in scope
		}
		return ok && e.inScope(p)
	}
	return false
}

// requestsFor builds the request table for a scope: inside and outside the
// prefix, siblings, parents, other buckets, every action.
func requestsFor(loc Location, keys []string) []s3Request {
	p := loc.Prefix
	bare := strings.TrimSuffix(p, "/")
	keySet := []string{
		p + "x", p + "sub/x", p + "sub/deeper/x.mp4", p, bare, bare + "x", bare + "dex/x", bare + "-other/x",
		bare + "/", "x", "other/x", p + "../x", p + "*", p + "?", p + "$", p + "${*}",
		strings.ReplaceAll(p, "*", "X") + "x", strings.ReplaceAll(p, "?", "Q") + "x",
		strings.ReplaceAll(p, "$", "D") + "x", strings.ToUpper(p) + "x", p + strings.Repeat("k", 1000),
	}
	if i := strings.LastIndex(bare, "/"); i >= 0 {
		keySet = append(keySet, bare[:i+1]+"x", bare[:i+1]+"zz/x")
	}
	// Every key is allowed or not by exact match; the neighbours of a few
	// of them suffice to show the match is exact.
	for i, k := range keys {
		keySet = append(keySet, k)
		if i < 6 {
			keySet = append(keySet, k+"x", k+"/x", k[:len(k)-1], strings.ReplaceAll(k, "*", "Z"))
		}
	}
	buckets := []string{loc.Bucket, loc.Bucket + "2", loc.Bucket[:len(loc.Bucket)-1], "other-bucket"}
	var reqs []s3Request
	for _, b := range buckets {
		for _, k := range keySet {
			for _, a := range allActions {
				reqs = append(reqs, objectReq(a, b, k))
			}
		}
		listPrefixes := append([]string{"", p, p + "sub/", bare, bare + "dex/", bare + "-other/", "*", "other/", p + "*"}, keys...)
		for _, k := range keys[:min(len(keys), 6)] {
			listPrefixes = append(listPrefixes, k+"x", k[:len(k)-1])
		}
		reqs = append(reqs, listReq(b, nil))
		for _, lp := range listPrefixes {
			reqs = append(reqs, listReq(b, ptr(lp)))
		}
		for _, a := range bucketActions[1:] {
			reqs = append(reqs, s3Request{Action: a, Resource: "arn:aws:s3:::" + b})
		}
	}
	return reqs
}

// disagreements evaluates policy against every request and returns those
// where it differs from the oracle.
func disagreements(t testing.TB, policy string, exp expectation, reqs []s3Request) []string {
	t.Helper()
	p, err := parseEvalPolicy(policy)
	if err != nil {
		t.Fatalf("evaluator cannot read policy %s: %v", policy, err)
	}
	var out []string
	for _, r := range reqs {
		if got, want := evaluate(p, r), exp.allowed(r); got != want {
			out = append(out, fmt.Sprintf("%s: policy allows=%v, least privilege=%v", r, got, want))
		}
	}
	return out
}

// checkPolicyShape asserts what every generated policy must satisfy.
func checkPolicyShape(t testing.TB, policy string) {
	t.Helper()
	if len(policy) > MaxPolicyChars {
		t.Fatalf("policy is %d bytes, over %d", len(policy), MaxPolicyChars)
	}
	for _, r := range policy {
		if r < 0x20 || r > 0xFF {
			t.Fatalf("policy contains %U, which STS refuses", r)
		}
	}
	var doc PolicyDocument
	if err := json.Unmarshal([]byte(policy), &doc); err != nil {
		t.Fatalf("policy is not JSON: %v", err)
	}
	if len(doc.Statement) == 0 {
		t.Fatal("empty policy")
	}
	for _, st := range doc.Statement {
		if st.Effect != "Allow" || len(st.Action) == 0 || len(st.Resource) == 0 {
			t.Fatalf("malformed statement %+v", st)
		}
	}
}

var matrixLocations = []string{
	"s3://media/acme/in/",
	"s3://media/acme/in", // becomes acme/in/: never index/ or in-other/
	"s3://media/",
	"s3://media",
	"s3://media/in/",
	"s3://media/acme/a*/",
	"s3://media/acme/a?b/",
	"s3://media/$/",
	"s3://media/acme/${*}/x${?}${$}/",
	"s3://media/*/",
	"s3://media/acme/ÿé à\u00a0¿/",
	"s3://media/acme/a b/\"q\"\\/",
	"s3://AKIAEXAMPLE:se/cr@et@media/acme/in/",
	"s3://{vault-secret}@media/acme/in/",
	"s3://media.example-1/acme/in/",
	"s3://media/" + strings.Repeat("p", 300) + "/",
}

var matrixFiles = [][]string{
	nil,
	{"a.mp4"},
	{"a.mp4", "sub/b.mp4", "a.mp4"},
	{"a*", "q?", "$x", "${*}", "*"},
	{"ÿ.mp4", "x y.mp4"},
	{"deep/" + strings.Repeat("f", 600)}, // long key: compacts to deep/
	manyFiles("batch/seg-%04d.m4s", 150), // compacts to batch/
	append(manyFiles("one/seg-%04d.m4s", 60), manyFiles("two/seg-%04d.m4s", 60)...), // compacts to the location
}

func manyFiles(format string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf(format, i))
	}
	return out
}

// TestLeastPrivilegeMatrix evaluates every generated policy against a table
// of S3 requests and requires it to allow exactly what the task needs.
func TestLeastPrivilegeMatrix(t *testing.T) {
	evaluated, compactedSeen, tooLong := 0, 0, 0
	for _, raw := range matrixLocations {
		loc, err := ParseLocation(raw)
		if err != nil {
			t.Fatalf("ParseLocation: %v", err)
		}
		// A file whose whole key is 1,000 characters, wherever the location is.
		thousand := []string{"deep/" + strings.Repeat("k", 1000-len(loc.Prefix)-len("deep/"))}
		for _, files := range append(matrixFiles, thousand) {
			var keys []string
			for _, f := range files {
				k, err := ParseFile(loc, f)
				if err != nil {
					t.Fatalf("ParseFile: %v", err)
				}
				keys = append(keys, k)
			}
			reqs := requestsFor(loc, keys)
			for _, op := range Operations {
				for _, checkGet := range []bool{false, true} {
					if checkGet && op != OpCheck {
						continue
					}
					name := fmt.Sprintf("%s %s files=%d checkGet=%v", op, loc, len(files), checkGet)
					policy, compacted, err := BuildPolicy(op, loc, keys, PolicyOptions{CheckAllowsGet: checkGet})
					if err != nil {
						if !strings.Contains(err.Error(), "2048") {
							t.Errorf("%s: %v", name, err)
						}
						tooLong++
						continue
					}
					checkPolicyShape(t, policy)
					exp := expectation{op: op, checkGet: checkGet, bucket: loc.Bucket, prefix: loc.Prefix}
					if len(keys) > 0 {
						exp.keys = slices.Compact(slices.Sorted(slices.Values(keys)))
					}
					if compacted {
						compactedSeen++
						exp.prefix, exp.keys = commonDir(exp.keys, loc.Prefix), nil
						if !strings.HasPrefix(exp.prefix, loc.Prefix) {
							t.Fatalf("%s: compacted to %q, outside the location", name, exp.prefix)
						}
					}
					if d := disagreements(t, policy, exp, reqs); len(d) > 0 {
						t.Errorf("%s: policy %s\n  %s", name, policy, strings.Join(d[:min(len(d), 8)], "\n  "))
					}
					evaluated++
				}
			}
		}
	}
	// The matrix must exercise compaction and every other path, or it proves less than it claims.
	if evaluated < 300 || compactedSeen < 20 {
		t.Fatalf("matrix too small: evaluated=%d compacted=%d", evaluated, compactedSeen)
	}
	t.Logf("evaluated %d policies (%d compacted, %d refused as too long)", evaluated, compactedSeen, tooLong)
}

// TestMatrixCatchesWeakPolicies shows the matrix is not vacuous: policies
// with the classic mistakes (no escaping, no trailing '/', two-pass escaping,
// an unconditioned ListBucket, an extra action) are caught.
func TestMatrixCatchesWeakPolicies(t *testing.T) {
	mutants := []struct {
		name, location string
		op             Operation
		mutate         func(string) string
	}{
		{"unescaped star", "s3://media/acme/a*/", OpGet, func(p string) string { return strings.ReplaceAll(p, "${*}", "*") }},
		{"unescaped question mark", "s3://media/acme/a?b/", OpGet, func(p string) string { return strings.ReplaceAll(p, "${?}", "?") }},
		{"two-pass escaping", "s3://media/acme/a*/", OpPut, func(p string) string { return strings.ReplaceAll(p, "${*}", "${$}{${*}}") }},
		{"no trailing slash", "s3://media/acme/in/", OpGet, func(p string) string { return strings.ReplaceAll(p, "in/*", "in*") }},
		{"unconditioned list", "s3://media/acme/in/", OpCheck, func(p string) string {
			return strings.Replace(p, `,"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}`, "", 1)
		}},
		{"extra delete", "s3://media/acme/in/", OpPut, func(p string) string {
			return strings.Replace(p, `"s3:AbortMultipartUpload"`, `"s3:AbortMultipartUpload","s3:DeleteObject"`, 1)
		}},
		{"whole bucket", "s3://media/acme/in/", OpTag, func(p string) string { return strings.ReplaceAll(p, "media/acme/in/*", "media/*") }},
	}
	for _, m := range mutants {
		loc, err := ParseLocation(m.location)
		if err != nil {
			t.Fatal(err)
		}
		policy, _, err := BuildPolicy(m.op, loc, nil, PolicyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		exp := expectation{op: m.op, bucket: loc.Bucket, prefix: loc.Prefix}
		reqs := requestsFor(loc, nil)
		if d := disagreements(t, policy, exp, reqs); len(d) > 0 {
			t.Fatalf("%s: the real policy already disagrees: %v", m.name, d)
		}
		weak := m.mutate(policy)
		if weak == policy {
			t.Fatalf("%s: mutation did not change the policy %s", m.name, policy)
		}
		if d := disagreements(t, weak, exp, reqs); len(d) == 0 {
			t.Errorf("%s: the matrix did not notice the weakened policy %s", m.name, weak)
		}
	}
}

func TestBuildPolicyExact(t *testing.T) {
	loc := Location{Bucket: "media", Prefix: "acme/in/"}
	tests := []struct {
		op   Operation
		keys []string
		opt  PolicyOptions
		want string
	}{
		{OpGet, nil, PolicyOptions{}, `{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::media/acme/in/*"]},{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
		{OpPut, nil, PolicyOptions{}, `{"Version":"2012-10-17","Statement":[{"Sid":"Write","Effect":"Allow","Action":["s3:PutObject","s3:AbortMultipartUpload"],"Resource":["arn:aws:s3:::media/acme/in/*"]},{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
		{OpCheck, nil, PolicyOptions{}, `{"Version":"2012-10-17","Statement":[{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
		{OpCheck, nil, PolicyOptions{CheckAllowsGet: true}, `{"Version":"2012-10-17","Statement":[{"Sid":"Head","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::media/acme/in/*"]},{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
		{OpTag, nil, PolicyOptions{}, `{"Version":"2012-10-17","Statement":[{"Sid":"Tag","Effect":"Allow","Action":["s3:PutObjectTagging"],"Resource":["arn:aws:s3:::media/acme/in/*"]},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
		{OpGet, []string{"acme/in/b*", "acme/in/a$"}, PolicyOptions{}, `{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::media/acme/in/a${$}","arn:aws:s3:::media/acme/in/b${*}"]},{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/a${$}","acme/in/b${*}"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`},
	}
	for _, tt := range tests {
		got, compacted, err := BuildPolicy(tt.op, loc, tt.keys, tt.opt)
		if err != nil || compacted || got != tt.want {
			t.Errorf("BuildPolicy(%s, %v) = %s, %v, %v\nwant %s", tt.op, tt.keys, got, compacted, err, tt.want)
		}
	}
	// Whole bucket: ListBucket carries no condition (a StringLike on "*"
	// would refuse a listing without a prefix).
	got, _, err := BuildPolicy(OpGet, Location{Bucket: "media"}, nil, PolicyOptions{})
	if err != nil || strings.Contains(got, "Condition") || !strings.Contains(got, `"arn:aws:s3:::media/*"`) {
		t.Errorf("whole-bucket policy = %s, %v", got, err)
	}
}

func TestEscapeOnePass(t *testing.T) {
	tests := map[string]string{
		"a*":    "a${*}",
		"a?b":   "a${?}b",
		"$":     "${$}",
		"${*}":  "${$}{${*}}",
		"*?$":   "${*}${?}${$}",
		"plain": "plain",
		"ÿ{}":   "ÿ{}",
	}
	for in, want := range tests {
		if got := EscapePolicyString(in); got != want {
			t.Errorf("EscapePolicyString(%q) = %q, want %q", in, got, want)
		}
		// The escaped form matches exactly the literal input.
		if !iamMatch(EscapePolicyString(in), in) || iamMatch(EscapePolicyString(in), in+"x") {
			t.Errorf("escaped %q does not match exactly itself", in)
		}
	}
}

func TestBuildPolicyRefusals(t *testing.T) {
	loc := Location{Bucket: "media", Prefix: "acme/in/"}
	long := Location{Bucket: "media", Prefix: strings.Repeat("$", 900) + "/"} // escapes to 3,600+ characters
	tests := []struct {
		name string
		op   Operation
		loc  Location
		keys []string
		want string
	}{
		{"unknown op", "delete", loc, nil, "no session policy"},
		{"empty op", "", loc, nil, "no session policy"},
		{"too long prefix", OpGet, long, nil, "over the STS limit of 2048"},
		{"too long even compacted", OpGet, Location{Bucket: "media", Prefix: strings.Repeat("$", 500) + "/"}, []string{strings.Repeat("$", 500) + "/a", strings.Repeat("$", 500) + "/b"}, "over the STS limit of 2048"},
		{"key outside location", OpGet, loc, []string{"acme/out/x"}, "under the location"},
		{"key equal to location", OpGet, loc, []string{"acme/in/"}, "under the location"},
		{"bad bucket", OpGet, Location{Bucket: "Media"}, nil, "bucket name"},
		{"prefix without slash", OpGet, Location{Bucket: "media", Prefix: "acme"}, nil, "end in '/'"},
		{"dot-dot prefix", OpGet, Location{Bucket: "media", Prefix: "acme/../"}, nil, "'..'"},
	}
	for _, tt := range tests {
		got, _, err := BuildPolicy(tt.op, tt.loc, tt.keys, PolicyOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || got != "" {
			t.Errorf("%s: BuildPolicy = %q, %v; want error containing %q", tt.name, got, err, tt.want)
		}
	}
}

func TestCompaction(t *testing.T) {
	loc := Location{Bucket: "media", Prefix: "acme/in/"}
	keys := manyFiles("acme/in/show/ep1/seg-%04d.m4s", 100)
	keys = append(keys, manyFiles("acme/in/show/ep2/seg-%04d.m4s", 100)...)
	policy, compacted, err := BuildPolicy(OpGet, loc, keys, PolicyOptions{})
	if err != nil || !compacted {
		t.Fatalf("BuildPolicy = %v, %v; want compacted", compacted, err)
	}
	if !strings.Contains(policy, `"arn:aws:s3:::media/acme/in/show/*"`) {
		t.Errorf("compacted to the wrong prefix: %s", policy)
	}
	// A short list is not compacted.
	if _, compacted, _ := BuildPolicy(OpGet, loc, keys[:3], PolicyOptions{}); compacted {
		t.Error("three keys were compacted")
	}
	for _, tt := range []struct {
		keys        []string
		floor, want string
	}{
		{[]string{"a/b/c", "a/b/d"}, "a/", "a/b/"},
		{[]string{"a/b/c", "a/x/d"}, "a/", "a/"},
		{[]string{"a/bc/1", "a/bd/2"}, "a/", "a/"}, // never a partial segment
		{[]string{"a/b/c"}, "", "a/b/"},
		{[]string{"x", "y"}, "", ""},
		{[]string{"a/ÿ/1", "a/ÿ/2"}, "a/", "a/ÿ/"},
		{[]string{"a/\u00e9x/1", "a/\u00e8x/1"}, "a/", "a/"}, // shares a UTF-8 lead byte only
	} {
		if got := commonDir(tt.keys, tt.floor); got != tt.want {
			t.Errorf("commonDir(%q, %q) = %q, want %q", tt.keys, tt.floor, got, tt.want)
		}
	}
}
