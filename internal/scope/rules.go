package scope

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

// MaxFiles bounds the file list of one request; longer lists could never fit
// a session policy as exact ARNs anyway.
const MaxFiles = 1000

// maxIDLen bounds job and task ids.
const maxIDLen = 128

// Rules are the compiled tenant configuration. Build them once with Compile;
// Decide only parses the request and matches it against precompiled rules.
// Rules are immutable and safe for concurrent use.
type Rules struct {
	tenants  map[string]*tenantRules
	policies policyCache
}

// tenantRules is one tenant with everything Decide needs precomputed.
type tenantRules struct {
	Tenant
	byBucket       map[string][]compiledRule
	tags           []tagTemplate // sorted by key, so grants are deterministic
	sourceIdentity template      // nil when source identity is disabled
	policy         PolicyOptions
}

type tagTemplate struct {
	key   string
	value template
}

type compiledRule struct {
	ops      uint8 // bit opIndex(op) set when op is allowed
	patterns []pattern
}

// segKind is what one segment of a prefix pattern matches.
type segKind uint8

const (
	segLiteral   segKind = iota
	segAny               // "*": any one segment
	segOrg               // "{org}": the caller's org
	segPrincipal         // "{principal}": the caller's principal
)

type patternSeg struct {
	kind segKind
	lit  string
}

// pattern is a prefix pattern split into segments; no segments means the
// whole bucket.
type pattern []patternSeg

// Compile validates tenants and returns Rules. Backends, when non-nil, lists
// the configured backend names a tenant may refer to. The error is a
// *validate.Error listing every problem with its field path.
func Compile(tenants []Tenant, backends map[string]bool) (*Rules, error) {
	var p validate.Problems
	r := &Rules{tenants: make(map[string]*tenantRules, len(tenants))}
	for i := range tenants {
		t := tenants[i]
		t.ApplyDefaults()
		path := validate.Join("tenants", i)
		t.Validate(&p, path, backends)
		if _, dup := r.tenants[t.Org]; dup {
			p.Addf(validate.Join(path, "org"), "org %q is configured twice", t.Org)
		}
		tr, err := compileTenant(t)
		if err != nil {
			// Validate reports the same problem with its field path.
			continue
		}
		r.tenants[t.Org] = tr
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

func compileTenant(t Tenant) (*tenantRules, error) {
	// Own copies: later edits to the configuration cannot reach compiled
	// rules, and grants share TransitiveTagKeys clipped, so an append by a
	// consumer reallocates instead of writing into the tenant's array.
	t.SessionTags = maps.Clone(t.SessionTags)
	t.TransitiveTagKeys = slices.Clip(slices.Clone(t.TransitiveTagKeys))
	t.Grants = slices.Clone(t.Grants)
	for i := range t.Grants {
		t.Grants[i].Prefixes = slices.Clone(t.Grants[i].Prefixes)
		t.Grants[i].Operations = slices.Clone(t.Grants[i].Operations)
	}
	tr := &tenantRules{Tenant: t, byBucket: map[string][]compiledRule{}, policy: PolicyOptions{CheckAllowsGet: t.CheckAllowsGet}}
	for _, g := range t.Grants {
		var cr compiledRule
		for _, pre := range g.Prefixes {
			pat, err := compilePattern(pre)
			if err != nil {
				return nil, err
			}
			cr.patterns = append(cr.patterns, pat)
		}
		for _, o := range g.Operations {
			op, err := ParseOperation(o)
			if err != nil {
				return nil, err
			}
			i, _ := opIndex(op)
			cr.ops |= 1 << i
		}
		tr.byBucket[g.Bucket] = append(tr.byBucket[g.Bucket], cr)
	}
	for _, k := range slices.Sorted(maps.Keys(t.SessionTags)) {
		v, err := compileTemplate(t.SessionTags[k])
		if err != nil {
			return nil, err
		}
		tr.tags = append(tr.tags, tagTemplate{key: k, value: v})
	}
	if t.SourceIdentity != SourceIdentityNone {
		si, err := compileTemplate(t.SourceIdentity)
		if err != nil {
			return nil, err
		}
		tr.sourceIdentity = si
	}
	return tr, nil
}

// compilePattern parses a configured prefix pattern. Literal segments obey
// the same rules as request prefixes, and templates and '*' must be whole
// segments, so a pattern always matches whole directories.
func compilePattern(s string) (pattern, error) {
	if s == "" {
		return nil, nil
	}
	if !strings.HasSuffix(s, "/") {
		return nil, fmt.Errorf("prefix must end in '/' (otherwise %q would also match %q)", strings.TrimSuffix(s, "/")+"/", s+"x/")
	}
	if err := validateKeyPart("prefix", s); err != nil {
		return nil, err
	}
	var pat pattern
	for seg := range strings.SplitSeq(strings.TrimSuffix(s, "/"), "/") {
		switch seg {
		case "*":
			pat = append(pat, patternSeg{kind: segAny})
		case "{org}":
			pat = append(pat, patternSeg{kind: segOrg})
		case "{principal}":
			pat = append(pat, patternSeg{kind: segPrincipal})
		default:
			if strings.ContainsAny(seg, "*{}") {
				return nil, errors.New("prefix: '*', {org} and {principal} must each be a whole segment")
			}
			pat = append(pat, patternSeg{lit: seg})
		}
	}
	return pat, nil
}

// matches reports whether prefix (ending in '/', or "" for the whole
// bucket) lies at or under the pattern. A template value that is not one
// plain segment never matches, so a principal such as "*", "a/b" or ".."
// cannot widen a grant.
func (p pattern) matches(prefix string, s *Subject) bool {
	rest := prefix
	for _, ps := range p {
		seg, after, ok := strings.Cut(rest, "/")
		if !ok {
			return false // the location is above the pattern
		}
		var want string
		switch ps.kind {
		case segAny:
			want = seg
		case segOrg:
			want = s.Org
		case segPrincipal:
			want = s.Principal
		default:
			want = ps.lit
		}
		if !plainSegment(want) || seg != want {
			return false
		}
		rest = after
	}
	return true
}

func plainSegment(v string) bool {
	return v != "" && v != "." && v != ".." && v != "*" && !strings.Contains(v, "/")
}

// Tenant returns the tenant for org, with defaults applied. Its maps and
// slices belong to the compiled rules: read them, do not modify them.
func (r *Rules) Tenant(org string) (Tenant, bool) {
	t, ok := r.tenants[org]
	if !ok {
		return Tenant{}, false
	}
	return t.Tenant, true
}

// Decide maps a task to a Grant or refuses it. Deny by default: only an org
// with a tenant, and a location some grant rule of that tenant covers for
// the operation, get a grant. Errors are *fault.Error: InvalidRequest for
// malformed input (including a policy over the STS size limit),
// AccessDenied when no rule allows the task. No message contains the
// location's userinfo.
func (r *Rules) Decide(s Subject, req Request) (Grant, error) {
	task, err := parseTask(req)
	if err != nil {
		return Grant{}, err
	}
	op, loc, keys := task.op, task.loc, task.keys
	t, ok := r.tenants[s.Org]
	if !ok {
		if s.Org == "" {
			return Grant{}, fault.New(fault.AccessDenied, "unknown_org", "the caller has no organization, so no tenant applies")
		}
		return Grant{}, fault.New(fault.AccessDenied, "unknown_org", "no tenant is configured for org %q", truncate(s.Org, 128))
	}
	if !t.allows(op, loc, &s) {
		return Grant{}, fault.New(fault.AccessDenied, "no_matching_grant", "operation %s is not allowed on %s for org %s", op, loc, t.Org)
	}
	d := t.DefaultDuration.D()
	if req.Duration != 0 {
		if req.Duration < MinDuration {
			return Grant{}, fault.New(fault.InvalidRequest, "bad_duration", "duration_seconds must be at least %d", int(MinDuration.Seconds()))
		}
		d = min(req.Duration, t.MaxDuration.D())
	}
	cp, err := r.policies.policy(op, loc, keys, t.policy)
	if err != nil {
		return Grant{}, fault.Wrap(err, fault.InvalidRequest, "policy_too_large", "%v", err)
	}
	g := Grant{
		Org: t.Org, Principal: s.Principal, Operation: op,
		Bucket: loc.Bucket, Prefix: loc.Prefix, Keys: keys, Compacted: cp.compacted,
		JobID: req.JobID, TaskID: req.TaskID,
		Backend: t.Backend, RoleARN: t.RoleARN, ExternalID: t.ExternalID,
		Policy: cp.policy, PolicySHA256: cp.sha256, Duration: d,
		TransitiveTagKeys: t.TransitiveTagKeys,
	}
	t.label(&g)
	if cp.compacted {
		g.CompactedPrefix = commonDir(keys, loc.Prefix)
	}
	g.SessionName = SessionName(g)
	return g, nil
}

// task is a request's operation, location and files, parsed.
type task struct {
	op   Operation
	loc  Location
	keys []string // sorted, unique; nil without files
}

// parseTask parses and bounds what a request asks for; errors are
// InvalidRequest faults.
func parseTask(req Request) (task, error) {
	op, err := ParseOperation(req.Operation)
	if err != nil {
		return task{}, fault.Wrap(err, fault.InvalidRequest, "bad_operation", "%v", err)
	}
	if len(req.Files) > MaxFiles {
		return task{}, fault.New(fault.InvalidRequest, "too_many_files", "at most %d files per request, got %d", MaxFiles, len(req.Files))
	}
	loc, err := ParseLocation(req.Location)
	if err != nil {
		return task{}, fault.Wrap(err, fault.InvalidRequest, "bad_location", "invalid location: %v", err)
	}
	var keys []string
	if len(req.Files) > 0 {
		keys = make([]string, 0, len(req.Files))
		for _, f := range req.Files {
			k, err := ParseFile(loc, f)
			if err != nil {
				return task{}, fault.Wrap(err, fault.InvalidRequest, "bad_file", "invalid file: %v", err)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	if !validID(req.JobID) {
		return task{}, fault.New(fault.InvalidRequest, "bad_job_id", "job_id must be at most %d characters of letters, digits and -_.:@", maxIDLen)
	}
	if !validID(req.TaskID) {
		return task{}, fault.New(fault.InvalidRequest, "bad_task_id", "task_id must be at most %d characters of letters, digits and -_.:@", maxIDLen)
	}
	return task{op: op, loc: loc, keys: keys}, nil
}

// label sets g's session tags and source identity from the tenant's
// templates.
func (t *tenantRules) label(g *Grant) {
	vals := templateValues{varOrg: t.Org, varPrincipal: g.Principal, varJobID: g.JobID,
		varTaskID: g.TaskID, varOperation: string(g.Operation), varBucket: g.Bucket}
	if len(t.tags) > 0 {
		g.Tags = make([]Tag, 0, len(t.tags))
		for _, tt := range t.tags {
			// An empty value (no job id, say) is left out rather than sent
			// as a tag that claims something.
			if v := sanitizeTagValue(tt.value.render(&vals)); v != "" {
				g.Tags = append(g.Tags, Tag{Key: tt.key, Value: v})
			}
		}
	}
	if len(g.Tags) < len(t.tags) && len(g.TransitiveTagKeys) > 0 {
		// STS refuses a transitive key that is not among the tags sent.
		g.TransitiveTagKeys = slices.DeleteFunc(slices.Clone(g.TransitiveTagKeys), func(k string) bool {
			return !slices.ContainsFunc(g.Tags, func(tg Tag) bool { return tg.Key == k })
		})
	}
	if t.sourceIdentity != nil {
		g.SourceIdentity = SanitizeName(t.sourceIdentity.render(&vals))
	}
}

func (t *tenantRules) allows(op Operation, loc Location, s *Subject) bool {
	bit, ok := opIndex(op)
	if !ok {
		return false
	}
	for _, r := range t.byBucket[loc.Bucket] {
		if r.ops&(1<<bit) == 0 {
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

// validID accepts job and task ids: at most maxIDLen of [A-Za-z0-9_.:@-].
// They end up in session names, tags and logs.
func validID(s string) bool {
	if len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:@-", c) >= 0) {
			return false
		}
	}
	return true
}

// SessionName derives the STS RoleSessionName (2–64 of [\w+=,.@-]): the job
// and task ids, so CloudTrail shows which task a session served, plus a hash
// of the whole grant.
//
// The name is deterministic on purpose: identical for a retry of the same
// task by the same caller, different for any grant that differs in what it
// allows or to whom. A random suffix would make every call a distinct grant,
// so a credential cache keyed on the grant could never collapse a burst of
// retries (many tasks restarting together) into one STS call, which is what
// keeps the account under STS's throttle. Distinct tasks still never share a
// session name, so CloudTrail attribution is unaffected.
func SessionName(g Grant) string {
	// Length-prefixed fields, so no two different grants hash the same input.
	fields := [...]string{g.Org, g.Principal, string(g.Operation), g.Bucket, g.Prefix, g.Policy, g.JobID, g.TaskID, g.RoleARN, g.Backend}
	n := 0
	for _, f := range fields {
		n += len(f) + 8
	}
	buf := make([]byte, 0, n)
	for _, f := range fields {
		buf = strconv.AppendInt(buf, int64(len(f)), 10)
		buf = append(buf, ':')
		buf = append(buf, f...)
	}
	full := sha256.Sum256(buf)
	sum := hex.EncodeToString(full[:6])
	base := "vtk"
	if g.JobID != "" || g.TaskID != "" {
		base = sanitizeName(g.JobID) + "." + sanitizeName(g.TaskID)
	}
	const room = 64 - 1 - 12
	if len(base) > room {
		base = base[:room]
	}
	return base + "-" + sum
}

// sanitizeName replaces every byte outside [\w+=,.@-] with '_'. The result
// is ASCII, so byte slicing it never splits a character.
func sanitizeName(s string) string {
	b := []byte(s)
	out := b[:0]
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		c := byte('_')
		if r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.IndexByte("_+=,.@-", byte(r)) >= 0) {
			c = byte(r)
		}
		out = append(out, c)
		i += size
	}
	return string(out)
}

// SanitizeName makes s a valid SourceIdentity or RoleSessionName: 2–64
// characters of [\w+=,.@-]. Every other character (':' included, so the
// result can never start with the reserved "aws:") becomes '_'; short
// results are padded with '_'.
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

// sanitizeTagValue makes v a valid STS session tag value: at most 256
// characters of [\p{L}\p{Z}\p{N}_.:/=+\-@]; anything else becomes '_'.
func sanitizeTagValue(v string) string {
	if len(v) <= 256 && isPlainTagValue(v) {
		return v // the usual case: org names, ids
	}
	var b strings.Builder
	n := 0
	for _, r := range v {
		if n == 256 {
			break
		}
		if !(unicode.IsLetter(r) || unicode.Is(unicode.Z, r) || unicode.IsNumber(r) || strings.ContainsRune("_.:/=+-@", r)) {
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// isPlainTagValue reports whether v is ASCII made only of characters a tag
// value may hold.
func isPlainTagValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' || strings.IndexByte("_.:/=+-@", c) >= 0) {
			return false
		}
	}
	return true
}
