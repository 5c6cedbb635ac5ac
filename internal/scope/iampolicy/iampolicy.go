// Package iampolicy evaluates the subset of the IAM policy language the
// dispenser's session policies use, so that tests can check what a
// generated policy allows and the CloudTrail correlator can judge whether a
// recorded call was inside the policy that was issued with its key.
//
// It refuses everything it does not implement instead of guessing, so a new
// construct in a policy is an error rather than a silent misreading:
//
//   - Version 2012-10-17; Effect Allow and Deny; an explicit Deny wins,
//     otherwise default deny.
//   - Action: names or wildcards, case-insensitive.
//   - Resource: ARNs with '*' (any run of characters, '/' included) and '?'
//     (exactly one character); ${*}, ${?} and ${$} stand for the literal
//     characters; any other ${...} policy variable is an error.
//   - Condition: StringLike only, with the same wildcard rules; the values
//     of one key are ORed, keys are ANDed and compared case-insensitively;
//     a key missing from the request fails the condition (as in IAM).
//   - NotAction, NotResource, Principal and every other field are errors.
package iampolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Request is one call as IAM authorises it.
type Request struct {
	Action   string            // e.g. s3:GetObject
	Resource string            // e.g. arn:aws:s3:::bucket/key
	Context  map[string]string // condition keys, e.g. s3:prefix
}

// String renders r for messages.
func (r Request) String() string {
	s := r.Action + " " + r.Resource
	if len(r.Context) > 0 {
		s += fmt.Sprint(" ", r.Context)
	}
	return s
}

// Policy is a parsed policy with every pattern compiled once. It is
// immutable and safe for concurrent use.
type Policy struct {
	statements []statement
}

// statement is one compiled statement.
type statement struct {
	deny      bool
	actions   []pattern // lower-cased
	resources []pattern
	like      []condition
}

// condition is one StringLike key with its ORed values.
type condition struct {
	key    string // lower-cased
	values []pattern
}

// stringOrList decodes an IAM field that may be a string or a list.
type stringOrList []string

// UnmarshalJSON reads a string or a list of strings.
func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or a list of strings")
	}
	*s = many
	return nil
}

type document struct {
	Version   string          `json:"Version"`
	Statement []jsonStatement `json:"Statement"`
}

type jsonStatement struct {
	Sid       string                             `json:"Sid"`
	Effect    string                             `json:"Effect"`
	Action    stringOrList                       `json:"Action"`
	Resource  stringOrList                       `json:"Resource"`
	Condition map[string]map[string]stringOrList `json:"Condition"`
}

// Parse decodes and compiles a policy strictly. It returns an error for
// anything the evaluator cannot evaluate faithfully: unknown fields
// (NotAction, NotResource, Principal, ...), condition operators other than
// StringLike, policy variables other than ${*}, ${?} and ${$}, another
// Version, trailing data.
func Parse(policy string) (*Policy, error) {
	dec := json.NewDecoder(strings.NewReader(policy))
	dec.DisallowUnknownFields()
	var d document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("iampolicy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("iampolicy: trailing data after the policy")
	}
	if d.Version != "2012-10-17" {
		return nil, fmt.Errorf("iampolicy: version %q (only 2012-10-17 is evaluated)", d.Version)
	}
	p := &Policy{statements: make([]statement, 0, len(d.Statement))}
	for i, st := range d.Statement {
		cs, err := compileStatement(st)
		if err != nil {
			return nil, fmt.Errorf("iampolicy: statement %d: %w", i, err)
		}
		p.statements = append(p.statements, cs)
	}
	return p, nil
}

func compileStatement(st jsonStatement) (statement, error) {
	if st.Effect != "Allow" && st.Effect != "Deny" {
		return statement{}, fmt.Errorf("effect %q", st.Effect)
	}
	if len(st.Action) == 0 || len(st.Resource) == 0 {
		return statement{}, errors.New("no action or resource")
	}
	cs := statement{deny: st.Effect == "Deny"}
	for _, a := range st.Action {
		pt, err := compile(strings.ToLower(a))
		if err != nil {
			return statement{}, err
		}
		cs.actions = append(cs.actions, pt)
	}
	for _, r := range st.Resource {
		pt, err := compile(r)
		if err != nil {
			return statement{}, err
		}
		cs.resources = append(cs.resources, pt)
	}
	for op, kv := range st.Condition {
		if op != "StringLike" {
			return statement{}, fmt.Errorf("unsupported condition operator %s", op)
		}
		for key, vals := range kv {
			if len(vals) == 0 {
				return statement{}, fmt.Errorf("condition %s has no values", key)
			}
			c := condition{key: strings.ToLower(key)}
			for _, v := range vals {
				pt, err := compile(v)
				if err != nil {
					return statement{}, err
				}
				c.values = append(c.values, pt)
			}
			cs.like = append(cs.like, c)
		}
	}
	return cs, nil
}

// Allows reports whether p allows r: some Allow statement matches it and no
// Deny statement does.
func (p *Policy) Allows(r Request) bool {
	action := strings.ToLower(r.Action)
	allowed := false
	for i := range p.statements {
		st := &p.statements[i]
		if !anyMatch(st.actions, action) || !anyMatch(st.resources, r.Resource) || !st.conditionsHold(r.Context) {
			continue
		}
		if st.deny {
			return false
		}
		allowed = true
	}
	return allowed
}

func (st *statement) conditionsHold(ctx map[string]string) bool {
	for _, c := range st.like {
		got, ok := lookup(ctx, c.key)
		if !ok || !anyMatch(c.values, got) {
			return false
		}
	}
	return true
}

// lookup finds key (lower-case) in ctx; condition keys are
// case-insensitive.
func lookup(ctx map[string]string, key string) (string, bool) {
	if v, ok := ctx[key]; ok {
		return v, true
	}
	for k, v := range ctx {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

func anyMatch(patterns []pattern, s string) bool {
	for _, p := range patterns {
		if p.match(s) {
			return true
		}
	}
	return false
}

// Match matches s against one IAM wildcard pattern (character-wise, with
// the ${*}, ${?} and ${$} escapes). A pattern Parse would refuse matches
// nothing.
func Match(pattern, s string) bool {
	pt, err := compile(pattern)
	if err != nil {
		return false
	}
	return pt.match(s)
}

// Wildcards in a compiled pattern: values no rune can take.
const (
	anyRun rune = -1 // '*'
	anyOne rune = -2 // '?'
)

// pattern is a compiled pattern: literal runes, anyRun and anyOne.
type pattern []rune

func compile(p string) (pattern, error) {
	out := make(pattern, 0, len(p))
	for i := 0; i < len(p); {
		if strings.HasPrefix(p[i:], "${") {
			end := strings.IndexByte(p[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated policy variable in %q", p)
			}
			switch v := p[i+2 : i+end]; v {
			case "*", "?", "$":
				out = append(out, rune(v[0]))
			default:
				return nil, fmt.Errorf("unsupported policy variable ${%s}", v)
			}
			i += end + 1
			continue
		}
		r, size := utf8.DecodeRuneInString(p[i:])
		switch r {
		case '*':
			out = append(out, anyRun)
		case '?':
			out = append(out, anyOne)
		default:
			out = append(out, r)
		}
		i += size
	}
	return out, nil
}

// match is the classic wildcard match with single-star backtracking over
// the runes of s: linear for the patterns policies contain, never
// exponential.
func (p pattern) match(s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		r, size := utf8.DecodeRuneInString(s[si:])
		switch {
		case pi < len(p) && p[pi] == anyRun:
			starP, starS = pi, si
			pi++
		case pi < len(p) && (p[pi] == anyOne || p[pi] == r):
			pi++
			si += size
		case starP >= 0:
			_, skip := utf8.DecodeRuneInString(s[starS:])
			starS += skip
			pi, si = starP+1, starS
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == anyRun {
		pi++
	}
	return pi == len(p)
}
