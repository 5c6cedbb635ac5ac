package scope

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// This file holds a small IAM policy evaluator, independent of the code that
// builds policies, so tests can check what a generated session policy
// actually allows. It implements the subset of the policy language the
// dispenser may emit and refuses everything else (so a new construct in a
// generated policy fails the tests instead of being silently misread):
//
//   - Effect Allow and Deny; an explicit Deny wins, otherwise default deny.
//   - Action: exact names or wildcards, case-insensitive.
//   - Resource: ARNs with '*' (any run of characters, '/' included) and '?'
//     (exactly one character); ${*}, ${?} and ${$} stand for the literal
//     characters; any other ${...} policy variable is an error.
//   - Condition: StringLike only, with the same wildcard rules; the values
//     of one key are ORed; a key missing from the request fails the
//     condition.

// s3Request is one S3 call as IAM authorises it.
type s3Request struct {
	Action   string
	Resource string            // arn:aws:s3:::bucket or arn:aws:s3:::bucket/key
	Context  map[string]string // condition keys, e.g. s3:prefix
}

func (r s3Request) String() string {
	s := r.Action + " " + r.Resource
	if len(r.Context) > 0 {
		s += fmt.Sprint(" ", r.Context)
	}
	return s
}

// objectReq builds an object-level request.
func objectReq(action, bucket, key string) s3Request {
	return s3Request{Action: action, Resource: "arn:aws:s3:::" + bucket + "/" + key}
}

// listReq builds ListBucket; prefix nil means a request without a prefix.
func listReq(bucket string, prefix *string) s3Request {
	r := s3Request{Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + bucket}
	if prefix != nil {
		r.Context = map[string]string{"s3:prefix": *prefix}
	}
	return r
}

func ptr(s string) *string { return &s }

// stringOrList decodes an IAM field that may be a string or a list.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

type evalStatement struct {
	Sid       string                             `json:"Sid"`
	Effect    string                             `json:"Effect"`
	Action    stringOrList                       `json:"Action"`
	Resource  stringOrList                       `json:"Resource"`
	Condition map[string]map[string]stringOrList `json:"Condition"`
}

type evalPolicy struct {
	Version   string          `json:"Version"`
	Statement []evalStatement `json:"Statement"`
	compiled  []compiledStatement
}

// compiledStatement is a statement with every pattern compiled once.
type compiledStatement struct {
	deny      bool
	actions   [][]iamToken // lower-cased
	resources [][]iamToken
	like      map[string][][]iamToken // StringLike key -> ORed values
}

// parseEvalPolicy decodes a policy strictly: unknown fields (NotAction,
// NotResource, Principal, ...) are errors.
func parseEvalPolicy(policy string) (evalPolicy, error) {
	dec := json.NewDecoder(strings.NewReader(policy))
	dec.DisallowUnknownFields()
	var p evalPolicy
	if err := dec.Decode(&p); err != nil {
		return p, err
	}
	if dec.More() {
		return p, fmt.Errorf("trailing data after the policy")
	}
	if p.Version != "2012-10-17" {
		return p, fmt.Errorf("version %q", p.Version)
	}
	for i, st := range p.Statement {
		if st.Effect != "Allow" && st.Effect != "Deny" {
			return p, fmt.Errorf("statement %d: effect %q", i, st.Effect)
		}
		if len(st.Action) == 0 || len(st.Resource) == 0 {
			return p, fmt.Errorf("statement %d: no action or resource", i)
		}
		cs := compiledStatement{deny: st.Effect == "Deny", like: map[string][][]iamToken{}}
		for _, a := range st.Action {
			toks, err := compileIAMPattern(strings.ToLower(a))
			if err != nil {
				return p, fmt.Errorf("statement %d: %v", i, err)
			}
			cs.actions = append(cs.actions, toks)
		}
		for _, r := range st.Resource {
			toks, err := compileIAMPattern(r)
			if err != nil {
				return p, fmt.Errorf("statement %d: %v", i, err)
			}
			cs.resources = append(cs.resources, toks)
		}
		for op, kv := range st.Condition {
			if op != "StringLike" {
				return p, fmt.Errorf("statement %d: unsupported condition operator %s", i, op)
			}
			for key, vals := range kv {
				if len(vals) == 0 {
					return p, fmt.Errorf("statement %d: condition %s has no values", i, key)
				}
				for _, v := range vals {
					toks, err := compileIAMPattern(v)
					if err != nil {
						return p, fmt.Errorf("statement %d: %v", i, err)
					}
					cs.like[key] = append(cs.like[key], toks)
				}
			}
		}
		p.compiled = append(p.compiled, cs)
	}
	return p, nil
}

// evaluate returns whether policy allows req.
func evaluate(p evalPolicy, req s3Request) bool {
	action, resource := []rune(strings.ToLower(req.Action)), []rune(req.Resource)
	allowed := false
	for _, st := range p.compiled {
		if !anyMatch(st.actions, action) || !anyMatch(st.resources, resource) || !conditionsHold(st.like, req.Context) {
			continue
		}
		if st.deny {
			return false
		}
		allowed = true
	}
	return allowed
}

func anyMatch(patterns [][]iamToken, s []rune) bool {
	for _, p := range patterns {
		if matchTokens(p, s) {
			return true
		}
	}
	return false
}

func conditionsHold(like map[string][][]iamToken, ctx map[string]string) bool {
	for key, vals := range like {
		got, ok := ctx[key]
		if !ok || !anyMatch(vals, []rune(got)) {
			return false
		}
	}
	return true
}

// iamToken is a compiled pattern element: a literal rune, or a wildcard.
type iamToken struct {
	r    rune
	star bool
	one  bool
}

func compileIAMPattern(p string) ([]iamToken, error) {
	var out []iamToken
	for i := 0; i < len(p); {
		if strings.HasPrefix(p[i:], "${") {
			end := strings.IndexByte(p[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated policy variable in %q", p)
			}
			switch v := p[i+2 : i+end]; v {
			case "*", "?", "$":
				out = append(out, iamToken{r: rune(v[0])})
			default:
				return nil, fmt.Errorf("unexpected policy variable ${%s}", v)
			}
			i += end + 1
			continue
		}
		r, size := utf8.DecodeRuneInString(p[i:])
		switch r {
		case '*':
			out = append(out, iamToken{star: true})
		case '?':
			out = append(out, iamToken{one: true})
		default:
			out = append(out, iamToken{r: r})
		}
		i += size
	}
	return out, nil
}

// iamMatch matches s against an IAM wildcard pattern (character-wise).
func iamMatch(pattern, s string) bool {
	toks, err := compileIAMPattern(pattern)
	if err != nil {
		return false // parseEvalPolicy has already refused such policies
	}
	return matchTokens(toks, []rune(s))
}

// matchTokens is the classic wildcard match with single-star backtracking:
// linear for the patterns policies contain, never exponential.
func matchTokens(toks []iamToken, s []rune) bool {
	ti, si := 0, 0
	starT, starS := -1, 0
	for si < len(s) {
		switch {
		case ti < len(toks) && toks[ti].star:
			starT, starS = ti, si
			ti++
		case ti < len(toks) && (toks[ti].one || toks[ti].r == s[si]):
			ti++
			si++
		case starT >= 0:
			starS++
			ti, si = starT+1, starS
		default:
			return false
		}
	}
	for ti < len(toks) && toks[ti].star {
		ti++
	}
	return ti == len(toks)
}

// mustEval parses policy and evaluates req, failing the test on a policy
// the evaluator does not understand.
func mustEval(t testing.TB, policy string, req s3Request) bool {
	t.Helper()
	p, err := parseEvalPolicy(policy)
	if err != nil {
		t.Fatalf("evaluator cannot read policy %s: %v", policy, err)
	}
	return evaluate(p, req)
}

func TestEvaluatorItself(t *testing.T) {
	const hand = `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/in/*"},
		{"Effect":"Allow","Action":["s3:PutObject"],"Resource":["arn:aws:s3:::b/lit${*}/x?z"]},
		{"Effect":"Allow","Action":"s3:Get*","Resource":"arn:aws:s3:::wild/a${$}${?}"},
		{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{"StringLike":{"s3:prefix":["in/*","exact"]}}},
		{"Effect":"Deny","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/in/secret/*"}
	]}`
	tests := []struct {
		req  s3Request
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
		{listReq("b", nil), false}, // missing condition key fails StringLike
		{listReq("other", ptr("in/")), false},
		{s3Request{Action: "s3:DeleteObject", Resource: "arn:aws:s3:::b/in/x"}, false},
	}
	for _, tt := range tests {
		if got := mustEval(t, hand, tt.req); got != tt.want {
			t.Errorf("%s: allowed=%v, want %v", tt.req, got, tt.want)
		}
	}
	if mustEval(t, `{"Version":"2012-10-17","Statement":[]}`, objectReq("s3:GetObject", "b", "k")) {
		t.Error("an empty policy allowed a request; default must be deny")
	}
	for _, bad := range []string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"s3:GetObject","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:username}/*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{"StringEquals":{"s3:prefix":"x"}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"s3:GetObject","Resource":"*"}]}`,
		`{"Version":"2008-10-17","Statement":[]}`,
	} {
		if _, err := parseEvalPolicy(bad); err == nil {
			t.Errorf("evaluator accepted a policy it cannot evaluate faithfully: %s", bad)
		}
	}
}

func TestIAMMatch(t *testing.T) {
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
	}
	for _, tt := range tests {
		if got := iamMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("iamMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}
