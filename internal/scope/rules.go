package scope

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// Rules are the compiled tenant configuration. Build them once with Compile;
// Decide does no parsing of configuration per request.
type Rules struct {
	tenants map[string]*compiledTenant
}

type compiledTenant struct {
	Tenant
	rules []compiledRule
}

type compiledRule struct {
	bucket   string
	patterns []pattern
	ops      map[Operation]bool
}

// pattern is a prefix pattern split into segments; "" means whole bucket.
type pattern struct{ segs []string }

// Compile validates tenants and returns Rules. Backends, when non-nil, lists
// the configured backend names a tenant may refer to.
func Compile(tenants []Tenant, backends map[string]bool) (*Rules, error) {
	var p validate.Problems
	r := &Rules{tenants: map[string]*compiledTenant{}}
	for i := range tenants {
		t := tenants[i]
		t.ApplyDefaults()
		path := validate.Join("tenants", i)
		t.Validate(&p, path, backends)
		if _, dup := r.tenants[t.Org]; dup {
			p.Addf(validate.Join(path, "org"), "org %q is configured twice", t.Org)
		}
		ct := &compiledTenant{Tenant: t}
		for _, g := range t.Grants {
			cr := compiledRule{bucket: g.Bucket, ops: map[Operation]bool{}}
			for _, pre := range g.Prefixes {
				if pat, err := compilePattern(pre); err == nil {
					cr.patterns = append(cr.patterns, pat)
				}
			}
			for _, o := range g.Operations {
				if op, err := ParseOperation(o); err == nil {
					cr.ops[op] = true
				}
			}
			ct.rules = append(ct.rules, cr)
		}
		r.tenants[t.Org] = ct
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

func compilePattern(s string) (pattern, error) {
	if s == "" {
		return pattern{}, nil
	}
	if !strings.HasSuffix(s, "/") {
		return pattern{}, fmt.Errorf("prefix %q must end in '/' (otherwise %q would also match %q)", s, strings.TrimSuffix(s, "/"), s+"x/")
	}
	segs := strings.Split(strings.TrimSuffix(s, "/"), "/")
	for _, seg := range segs {
		switch {
		case seg == "":
			return pattern{}, fmt.Errorf("prefix %q must not start with '/' or contain '//'", s)
		case seg == "." || seg == "..":
			return pattern{}, fmt.Errorf("prefix %q must not contain '.' or '..' segments", s)
		case seg == "*" || seg == "{org}" || seg == "{principal}":
		case strings.ContainsAny(seg, "*{}"):
			return pattern{}, fmt.Errorf("prefix %q: '*', {org} and {principal} must each be a whole segment", s)
		}
	}
	return pattern{segs: segs}, nil
}

// matches reports whether prefix (ending in '/' or "") lies under the pattern.
// A template value that is not one plain segment never matches, so a
// principal such as "*" or "a/b" cannot widen a grant.
func (p pattern) matches(prefix string, s Subject) bool {
	if len(p.segs) == 0 {
		return true
	}
	if prefix == "" {
		return false
	}
	got := strings.Split(strings.TrimSuffix(prefix, "/"), "/")
	if len(got) < len(p.segs) {
		return false
	}
	for i, want := range p.segs {
		switch want {
		case "*":
			continue
		case "{org}":
			want = s.Org
		case "{principal}":
			want = s.Principal
		}
		if !plainSegment(want) || got[i] != want {
			return false
		}
	}
	return true
}

func plainSegment(v string) bool {
	return v != "" && v != "." && v != ".." && v != "*" && !strings.Contains(v, "/")
}

// Tenant returns the tenant for org.
func (r *Rules) Tenant(org string) (Tenant, bool) {
	t, ok := r.tenants[org]
	if !ok {
		return Tenant{}, false
	}
	return t.Tenant, true
}

// Orgs returns the number of configured tenants.
func (r *Rules) Orgs() int { return len(r.tenants) }

// Decide maps a task to a Grant or refuses it. Errors are *fault.Error:
// InvalidRequest for malformed input, AccessDenied when no rule allows it.
func (r *Rules) Decide(s Subject, req Request) (Grant, error) {
	op, err := ParseOperation(req.Operation)
	if err != nil {
		return Grant{}, fault.Wrap(err, fault.InvalidRequest, "bad_operation", "%v", err)
	}
	loc, err := ParseLocation(req.Location)
	if err != nil {
		return Grant{}, fault.Wrap(err, fault.InvalidRequest, "bad_location", "invalid location: %v", err)
	}
	var keys []string
	for _, f := range req.Files {
		k, err := ParseFile(loc, f)
		if err != nil {
			return Grant{}, fault.Wrap(err, fault.InvalidRequest, "bad_file", "invalid file: %v", err)
		}
		keys = append(keys, k)
	}
	if len(keys) > 1000 {
		return Grant{}, fault.New(fault.InvalidRequest, "too_many_files", "at most 1000 files per request, got %d", len(keys))
	}
	for _, id := range []struct{ name, v string }{{"job_id", req.JobID}, {"task_id", req.TaskID}} {
		if len(id.v) > 128 || !idRe.MatchString(id.v) {
			return Grant{}, fault.New(fault.InvalidRequest, "bad_"+id.name, "%s must be at most 128 characters of letters, digits and -_.:@", id.name)
		}
	}
	t, ok := r.tenants[s.Org]
	if !ok {
		return Grant{}, fault.New(fault.AccessDenied, "unknown_org", "no tenant is configured for org %s", s.Org)
	}
	if !t.allows(op, loc, s) {
		return Grant{}, fault.New(fault.AccessDenied, "no_matching_grant", "operation %s is not allowed on %s for org %s", op, loc, s.Org)
	}
	d := t.DefaultDuration.D()
	if req.Duration != 0 {
		if req.Duration < MinDuration {
			return Grant{}, fault.New(fault.InvalidRequest, "bad_duration", "duration_seconds must be at least %d", int(MinDuration.Seconds()))
		}
		d = min(req.Duration, t.MaxDuration.D())
	}
	policy, err := BuildPolicy(op, loc, keys, PolicyOptions{CheckAllowsGet: t.CheckAllowsGet})
	if err != nil {
		return Grant{}, fault.Wrap(err, fault.InvalidRequest, "policy_too_large", "%v", err)
	}
	g := Grant{
		Org: s.Org, Principal: s.Principal, Operation: op,
		Bucket: loc.Bucket, Prefix: loc.Prefix, Keys: keys,
		Compacted: len(keys) > 0 && !strings.Contains(policy, `"`+"arn:aws:s3:::"+loc.Bucket+"/"+EscapePolicyString(keys[0])+`"`),
		JobID:     req.JobID, TaskID: req.TaskID,
		Backend: t.Backend, RoleARN: t.RoleARN, ExternalID: t.ExternalID,
		Policy: policy, Duration: d,
		TransitiveTagKeys: t.TransitiveTagKeys,
	}
	vars := strings.NewReplacer("{org}", s.Org, "{principal}", s.Principal, "{job_id}", req.JobID,
		"{task_id}", req.TaskID, "{operation}", string(op), "{bucket}", loc.Bucket)
	for _, k := range sortedKeys(t.SessionTags) {
		v := vars.Replace(t.SessionTags[k])
		if v == "" {
			continue
		}
		g.Tags = append(g.Tags, Tag{Key: k, Value: sanitizeTagValue(v)})
	}
	g.SourceIdentity = SanitizeName(vars.Replace(t.SourceIdentity))
	g.SessionName = SessionName(g)
	return g, nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9_.:@-]*$`)

func (t *compiledTenant) allows(op Operation, loc Location, s Subject) bool {
	for _, r := range t.rules {
		if r.bucket != loc.Bucket || !r.ops[op] {
			continue
		}
		for _, p := range r.patterns {
			if p.matches(loc.Prefix, s) {
				return true
			}
		}
	}
	return false
}

// SessionName derives the STS RoleSessionName: the job and task ids (so
// CloudTrail shows which task a session served) plus a hash of the whole
// grant, so it is unique per distinct task grant yet identical for a retry
// of the same task (which lets the credential cache collapse retries).
func SessionName(g Grant) string {
	h := sha256.New()
	for _, s := range []string{g.Org, g.Principal, string(g.Operation), g.Bucket, g.Prefix, g.Policy, g.JobID, g.TaskID, g.RoleARN} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:12]
	base := "vtk"
	if g.JobID != "" || g.TaskID != "" {
		base = sanitizeName(g.JobID) + "." + sanitizeName(g.TaskID)
	}
	if len(base) > 64-13 {
		base = base[:64-13]
	}
	return base + "-" + sum
}

var nameBad = regexp.MustCompile(`[^\w+=,.@-]`)

func sanitizeName(s string) string { return nameBad.ReplaceAllString(s, "_") }

// SanitizeName makes s a valid SourceIdentity/RoleSessionName: 2–64
// characters of [\w+=,.@-], never starting with "aws:" (':' is replaced).
func SanitizeName(s string) string {
	s = sanitizeName(s)
	if len(s) > 64 {
		s = s[:64]
	}
	for len(s) < 2 {
		s += "_"
	}
	return s
}

func sanitizeTagValue(v string) string {
	if len(v) > 256 {
		v = v[:256]
	}
	return v
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// Expiry is a helper for callers that need the deadline of a grant.
func (g Grant) Expiry(now time.Time) time.Time { return now.Add(g.Duration) }
