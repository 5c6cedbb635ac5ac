package scope

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The fuzz targets run their seed corpora as ordinary tests; explore with
//
//	go test ./internal/scope -run '^$' -fuzz FuzzParseLocation -fuzztime 1m

// tailOf reports whether loc was taken entirely from the end of s (up to
// the '/' ParseLocation appends), starting after a '/' or an '@', i.e. not
// from anything before it.
func tailOf(s string, loc Location) bool {
	out := strings.TrimSuffix(loc.Bucket+"/"+loc.Prefix, "/")
	t := strings.TrimSuffix(s, "/")
	if !strings.HasSuffix(t, out) {
		return false
	}
	i := len(t) - len(out)
	return i == 0 || t[i-1] == '/' || t[i-1] == '@'
}

func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{
		"s3://media/acme/in/", "s3://media/acme/in", "s3://media", "s3://media/", "s3://",
		"s3://KEY:SECRET@media/acme/", "s3://KEY:se/cr@et@media/x/", "s3://{secret}@media/p/", "s3://tok@media/p/",
		"s3://media/a*/b?/$/${*}/", "s3://media/../", "s3://media//x", "s3://media/ÿ/", "s3://media/\x00/",
		"s3://192.168.0.1/x", "s3://xn--a/x", "s3://a.mrap/x", "s3://KEY:S@media/u@example.com/", "s3://{a}@b}@media/",
		"s3://media/" + strings.Repeat("a/", 600),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := ParseLocation(raw)
		if err != nil {
			if (loc != Location{}) {
				t.Fatalf("error with a location: %+v", loc)
			}
			if strings.Contains(err.Error(), raw) && len(raw) > 8 {
				t.Fatalf("error echoes the location: %v", err)
			}
			return
		}
		if err := validateBucket(loc.Bucket); err != nil {
			t.Fatalf("returned bucket is invalid: %v", err)
		}
		if err := validateKeyPart("prefix", loc.Prefix); err != nil {
			t.Fatalf("returned prefix is invalid: %v", err)
		}
		if loc.Prefix != "" && !strings.HasSuffix(loc.Prefix, "/") || len(loc.Prefix) > MaxKeyBytes {
			t.Fatalf("prefix %q", loc.Prefix)
		}
		if !tailOf(raw, loc) {
			t.Fatalf("%s is not the tail of %q: userinfo leaked into it", loc, raw)
		}
		again, err := ParseLocation(loc.String())
		if err != nil || again != loc {
			t.Fatalf("round trip of %s = %+v, %v", loc, again, err)
		}
	})
}

// FuzzUserinfo: whatever the secret (with '/', '@', ':' ...), no part of it
// reaches a parsed location or an error message. The secret is wrapped in
// markers that no message contains.
func FuzzUserinfo(f *testing.F) {
	for _, s := range [][2]string{
		{"SECRET", "media/acme/in/"},
		{"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "media/acme/"},
		{"a@media/b", "media/x/"},
		{"x@mediazz/k", "Media/acme/"},
		{"@", "media/u@example.com/"},
		{"/", ""},
		{"a:b@c/d", "media"},
		{"", "media/../"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, secret, rest string) {
		const open, end = "Q9", "Z7"
		if strings.Contains(rest, open) || strings.Contains(rest, end) {
			return
		}
		sec := open + secret + end
		for _, raw := range []string{
			"s3://AKIAEXAMPLE:" + sec + "@" + rest,
			"s3://{" + strings.ReplaceAll(sec, "}", "") + "}@" + rest,
		} {
			loc, err := ParseLocation(raw)
			if err != nil {
				if strings.Contains(err.Error(), open) || strings.Contains(err.Error(), end) || strings.Contains(err.Error(), "AKIAEXAMPLE") {
					t.Fatalf("error %q carries part of the userinfo of %q", err, raw)
				}
				continue
			}
			s := loc.String()
			if strings.Contains(s, open) || strings.Contains(s, end) || strings.Contains(s, "AKIAEXAMPLE") || !tailOf(rest, loc) {
				t.Fatalf("ParseLocation(%q) = %s: not taken from after the userinfo", raw, s)
			}
		}
	})
}

func FuzzBuildPolicy(f *testing.F) {
	f.Add(uint8(0), "acme/in/", "a.mp4", "sub/b.mp4", uint8(0), false)
	f.Add(uint8(1), "a*/", "*", "?", uint8(3), false)
	f.Add(uint8(2), "", "$", "${*}", uint8(0), true)
	f.Add(uint8(3), "ÿé/", "x", "y", uint8(200), false)
	f.Add(uint8(0), strings.Repeat("$", 400), "f", "g", uint8(0), false)
	f.Add(uint8(1), "deep/", strings.Repeat("k", 900), "", uint8(0), false)
	f.Add(uint8(4), "x/", "", "", uint8(0), false)
	f.Fuzz(func(t *testing.T, opi uint8, prefix, f1, f2 string, n uint8, checkGet bool) {
		loc, err := ParseLocation("s3://media/" + prefix)
		if err != nil {
			return
		}
		var keys []string
		names := []string{f1, f2}
		for i := range int(n) % 201 {
			names = append(names, fmt.Sprintf("%s-%d", f1, i))
		}
		for _, name := range names {
			if k, err := ParseFile(loc, name); err == nil {
				keys = append(keys, k)
			}
		}
		op := Operation("bogus")
		if int(opi)%5 < len(Operations) {
			op = Operations[int(opi)%5]
		}
		policy, compacted, err := BuildPolicy(op, loc, keys, PolicyOptions{CheckAllowsGet: checkGet})
		if op == "bogus" {
			if err == nil {
				t.Fatal("policy for an unknown operation")
			}
			return
		}
		if err != nil {
			if !strings.Contains(err.Error(), "2048") {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		checkPolicyShape(t, policy)
		exp := expectation{op: op, checkGet: checkGet, bucket: loc.Bucket, prefix: loc.Prefix}
		if len(keys) > 0 {
			exp.keys = slices.Compact(slices.Sorted(slices.Values(keys)))
		}
		if compacted {
			exp.prefix, exp.keys = commonDir(exp.keys, loc.Prefix), nil
			if !strings.HasPrefix(exp.prefix, loc.Prefix) {
				t.Fatalf("compacted to %q outside %q", exp.prefix, loc.Prefix)
			}
		}
		sample := keys[:min(len(keys), 4)]
		if d := disagreements(t, policy, exp, fewerRequests(requestsFor(loc, sample), loc.Bucket)); len(d) > 0 {
			t.Fatalf("policy %s\n  %s", policy, strings.Join(d[:min(len(d), 5)], "\n  "))
		}
	})
}

// FuzzDecidePrincipal: a {principal} template grants the principal's own
// directory and nothing else, whatever the principal and location.
func FuzzDecidePrincipal(f *testing.F) {
	for _, s := range [][2]string{
		{"alice", "s3://media/home/alice/"}, {"*", "s3://media/home/*/"}, {"a/b", "s3://media/home/a/b/"},
		{"..", "s3://media/home/../"}, {"", "s3://media/home/"}, {"a*", "s3://media/home/a*/x/"},
	} {
		f.Add(s[0], s[1])
	}
	r := testRules(f, Tenant{Org: "acme", Grants: []GrantRule{
		{Bucket: "media", Prefixes: []string{"home/{principal}/"}, Operations: []string{"get"}},
	}})
	f.Fuzz(func(t *testing.T, principal, location string) {
		g, err := r.Decide(Subject{Principal: principal, Org: "acme"}, Request{Operation: "get", Location: location})
		if err != nil {
			return
		}
		if !plainSegment(principal) || !strings.HasPrefix(g.Prefix, "home/"+principal+"/") || g.Bucket != "media" {
			t.Fatalf("principal %q got %s/%s", principal, g.Bucket, g.Prefix)
		}
		exp := expectation{op: OpGet, bucket: "media", prefix: g.Prefix}
		if d := disagreements(t, g.Policy, exp, fewerRequests(requestsFor(Location{Bucket: g.Bucket, Prefix: g.Prefix}, nil), g.Bucket)); len(d) > 0 {
			t.Fatalf("policy %s\n  %s", g.Policy, strings.Join(d[:min(len(d), 5)], "\n  "))
		}
	})
}

// fewerRequests keeps the requests on bucket and one other bucket, for the
// actions a policy grants plus one it never does, so fuzzing runs fast.
func fewerRequests(reqs []s3Request, bucket string) []s3Request {
	keep := []string{"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectTagging", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation"}
	var out []s3Request
	for _, r := range reqs {
		b, _, _ := strings.Cut(strings.TrimPrefix(r.Resource, "arn:aws:s3:::"), "/")
		if (b == bucket || b == "other-bucket") && slices.Contains(keep, r.Action) {
			out = append(out, r)
		}
	}
	return out
}
