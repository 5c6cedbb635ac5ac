package iampolicy

import "testing"

func objectReq(action, bucket, key string) Request {
	return Request{Action: action, Resource: "arn:aws:s3:::" + bucket + "/" + key}
}

// listReq builds ListBucket; prefix nil means a request without a prefix.
func listReq(bucket string, prefix *string) Request {
	r := Request{Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + bucket}
	if prefix != nil {
		r.Context = map[string]string{"s3:prefix": *prefix}
	}
	return r
}

func ptr(s string) *string { return &s }

func mustParse(t *testing.T, policy string) *Policy {
	t.Helper()
	p, err := Parse(policy)
	if err != nil {
		t.Fatalf("Parse(%s): %v", policy, err)
	}
	return p
}

func TestEvaluator(t *testing.T) {
	const hand = `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/in/*"},
		{"Effect":"Allow","Action":["s3:PutObject"],"Resource":["arn:aws:s3:::b/lit${*}/x?z"]},
		{"Effect":"Allow","Action":"s3:Get*","Resource":"arn:aws:s3:::wild/a${$}${?}"},
		{"Sid":"List","Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{"StringLike":{"s3:prefix":["in/*","exact"]}}},
		{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/in/secret/*"}
	]}`
	p := mustParse(t, hand)
	tests := []struct {
		req  Request
		want bool
	}{
		{objectReq("s3:GetObject", "b", "in/x"), true},
		{objectReq("s3:getobject", "b", "in/deep/er/x"), true}, // actions are case-insensitive; '*' crosses '/'
		{objectReq("s3:GetObject", "b", "in"), false},
		{objectReq("s3:GetObject", "b", "index/x"), false},
		{objectReq("s3:GetObject", "b2", "in/x"), false},
		{objectReq("s3:GetObject", "B", "in/x"), false}, // resources are case-sensitive
		{objectReq("s3:PutObject", "b", "in/x"), false},
		{objectReq("s3:GetObject", "b", "in/secret/k"), false}, // explicit deny wins
		{objectReq("s3:PutObject", "b", "lit*/xyz"), true},
		{objectReq("s3:PutObject", "b", "lit*/xéz"), true},  // '?' is one character, not one byte
		{objectReq("s3:PutObject", "b", "litX/xyz"), false}, // ${*} is a literal star
		{objectReq("s3:PutObject", "b", "lit*/xz"), false},
		{objectReq("s3:PutObject", "b", "lit*/xyyz"), false},
		{objectReq("s3:GetObjectTagging", "wild", "a$?"), true},
		{objectReq("s3:GetObject", "wild", "a$x"), false},
		{objectReq("s3:GetObject", "wild", "a$?x"), false},
		{listReq("b", ptr("in/")), true},
		{listReq("b", ptr("in/sub/")), true},
		{listReq("b", ptr("exact")), true},
		{listReq("b", ptr("exact2")), false},
		{listReq("b", ptr("")), false},
		{listReq("b", nil), false}, // a missing condition key fails StringLike
		{Request{Action: "s3:ListBucket", Resource: "arn:aws:s3:::b", Context: map[string]string{"S3:Prefix": "in/x"}}, true}, // condition keys are case-insensitive
		{listReq("other", ptr("in/")), false},
		{Request{Action: "s3:DeleteObject", Resource: "arn:aws:s3:::b/in/x"}, false},
	}
	for _, tt := range tests {
		if got := p.Allows(tt.req); got != tt.want {
			t.Errorf("%s: allowed=%v, want %v", tt.req, got, tt.want)
		}
	}
	if mustParse(t, `{"Version":"2012-10-17","Statement":[]}`).Allows(objectReq("s3:GetObject", "b", "k")) {
		t.Error("an empty policy allowed a request; default must be deny")
	}
}

// TestParseRefuses: a construct the evaluator does not implement is an
// error, never a guess.
func TestParseRefuses(t *testing.T) {
	for _, bad := range []string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"s3:GetObject","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","NotResource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:username}/*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{"StringEquals":{"s3:prefix":"x"}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{"StringLike":{"s3:prefix":[]}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"s3:GetObject","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":7,"Resource":"*"}]}`,
		`{"Version":"2008-10-17","Statement":[]}`,
		`{"Version":"2012-10-17","Statement":[]} {}`,
		`{"Version":"2012-10-17","Statement":[`,
		``,
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse accepted a policy it cannot evaluate faithfully: %s", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "a/b/c", true},
		{"a*", "a", true},
		{"a*c", "abc/def/c", true},
		{"a*c", "abcd", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a?c", "abbc", false},
		{"${*}", "*", true},
		{"${*}", "x", false},
		{"${?}", "?", true},
		{"${?}", "x", false},
		{"${$}{${*}}", "${x}", false},
		{"${$}{${*}}", "${*}", true},
		{"**", "x", true},
		{"ÿ?", "ÿé", true},
		{"*é", "aéé", true},
		{"${x}", "${x}", false}, // an unsupported variable matches nothing
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func BenchmarkAllows(b *testing.B) {
	p, err := Parse(`{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::media/acme/in/*"]},{"Sid":"List","Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::media"],"Condition":{"StringLike":{"s3:prefix":["acme/in/*"]}}},{"Sid":"Location","Effect":"Allow","Action":["s3:GetBucketLocation"],"Resource":["arn:aws:s3:::media"]}]}`)
	if err != nil {
		b.Fatal(err)
	}
	req := objectReq("s3:GetObject", "media", "acme/in/2026/03/01/some-longer-object-name.mp4")
	for b.Loop() {
		if !p.Allows(req) {
			b.Fatal("denied")
		}
	}
}
