package scope

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// Tenant is one organization's configuration: which role to assume and what
// it may reach.
type Tenant struct {
	Org        string `yaml:"org"`
	RoleARN    string `yaml:"role_arn"`
	ExternalID string `yaml:"external_id"`
	// Backend names an entry of the top-level backends map ("default" if empty).
	Backend         string            `yaml:"backend"`
	MaxDuration     duration.Duration `yaml:"max_duration"`
	DefaultDuration duration.Duration `yaml:"default_duration"`
	// SessionTags maps tag keys to templates ({org}, {principal}, {job_id},
	// {task_id}, {operation}, {bucket}). Nil means org, job-id and task-id.
	SessionTags       map[string]string `yaml:"session_tags"`
	TransitiveTagKeys []string          `yaml:"transitive_tag_keys"`
	// SourceIdentity is a template; empty means "{principal}", and
	// SourceIdentityNone sends none (the role's trust policy must allow
	// sts:SetSourceIdentity otherwise).
	SourceIdentity string `yaml:"source_identity"`
	// CheckAllowsGet adds s3:GetObject to check grants (HEAD needs it).
	CheckAllowsGet bool        `yaml:"check_allows_get"`
	Grants         []GrantRule `yaml:"grants"`
}

// GrantRule allows operations under prefix patterns of one bucket.
type GrantRule struct {
	Bucket string `yaml:"bucket"`
	// Prefixes are key prefixes ending in '/' ("" = whole bucket). They may
	// use {org} and {principal}, each standing for exactly one path segment,
	// and a segment "*" matching any one segment.
	Prefixes   []string `yaml:"prefixes"`
	Operations []string `yaml:"operations"`
}

// SourceIdentityNone as a tenant's source_identity sends no source identity.
const SourceIdentityNone = "none"

// Duration limits STS enforces (see aws-facts.md).
const (
	MinDuration        = 15 * time.Minute
	DefaultMaxDuration = time.Hour // role chaining caps sessions at 1h
	MaxRoleDuration    = 12 * time.Hour
)

// ValidRoleARN reports whether s is an IAM role ARN STS accepts as RoleArn
// (a role name with its path of 1–512 characters).
func ValidRoleARN(s string) bool {
	_, name, ok := strings.Cut(s, ":role/")
	return ok && len(name) <= 512 && roleARNRe.MatchString(s)
}

// ValidExternalID reports whether s fits STS's ExternalId: 2–1224
// characters of [\w+=,.@:/-].
func ValidExternalID(s string) bool {
	return len(s) >= 2 && len(s) <= 1224 && externalIDRe.MatchString(s)
}

// Lengths are checked apart from the patterns: a bounded repetition such as
// {1,512} compiles into that many copies of its class (5 MB and 20 ms at
// every start for these two).
var (
	roleARNRe    = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$`)
	externalIDRe = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	tagKeyRe     = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	orgRe        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// ApplyDefaults fills unset tenant fields.
func (t *Tenant) ApplyDefaults() {
	if t.Backend == "" {
		t.Backend = "default"
	}
	if t.MaxDuration == 0 {
		t.MaxDuration = duration.Duration(DefaultMaxDuration)
	}
	if t.DefaultDuration == 0 {
		t.DefaultDuration = t.MaxDuration
	}
	if t.SessionTags == nil {
		t.SessionTags = map[string]string{"org": "{org}", "job-id": "{job_id}", "task-id": "{task_id}"}
	}
	if t.SourceIdentity == "" {
		t.SourceIdentity = "{principal}"
	}
}

// Validate records every problem under path.
func (t *Tenant) Validate(p *validate.Problems, path string, backends map[string]bool) {
	if !orgRe.MatchString(t.Org) {
		p.Addf(validate.Join(path, "org"), "must be 1-128 characters of letters, digits, '.', '_' or '-'")
	}
	if t.RoleARN != "" && !ValidRoleARN(t.RoleARN) {
		p.Addf(validate.Join(path, "role_arn"), "%q is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)", t.RoleARN)
	}
	if t.ExternalID != "" && !ValidExternalID(t.ExternalID) {
		p.Addf(validate.Join(path, "external_id"), "must be 2-1224 characters of [\\w+=,.@:/-]")
	}
	if backends != nil && !backends[t.Backend] {
		p.Addf(validate.Join(path, "backend"), "no backend named %q is configured", t.Backend)
	}
	if t.MaxDuration.D() < MinDuration || t.MaxDuration.D() > MaxRoleDuration {
		p.Addf(validate.Join(path, "max_duration"), "must be between 15m and 12h, got %s", t.MaxDuration)
	}
	if t.DefaultDuration.D() < MinDuration || t.DefaultDuration > t.MaxDuration {
		p.Addf(validate.Join(path, "default_duration"), "must be between 15m and max_duration (%s), got %s", t.MaxDuration, t.DefaultDuration)
	}
	if len(t.SessionTags) > 50 {
		p.Addf(validate.Join(path, "session_tags"), "STS accepts at most 50 session tags, got %d", len(t.SessionTags))
	}
	// STS treats tag keys case-insensitively: "Org" and "org" collide.
	seen := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(t.SessionTags)) {
		if utf8.RuneCountInString(k) > 128 || !tagKeyRe.MatchString(k) || strings.HasPrefix(strings.ToLower(k), "aws:") {
			p.Addf(validate.Join(path, "session_tags", k), "invalid tag key (1-128 characters, not starting with aws:)")
		}
		if other, dup := seen[strings.ToLower(k)]; dup {
			p.Addf(validate.Join(path, "session_tags", k), "tag keys are case-insensitive in STS; %q and %q collide", other, k)
		}
		seen[strings.ToLower(k)] = k
		if _, err := compileTemplate(t.SessionTags[k]); err != nil {
			p.Addf(validate.Join(path, "session_tags", k), "%v", err)
		}
	}
	for i, k := range t.TransitiveTagKeys {
		if _, ok := t.SessionTags[k]; !ok {
			p.Addf(validate.Join(path, "transitive_tag_keys", i), "%q is not one of session_tags", k)
		}
	}
	if t.SourceIdentity != SourceIdentityNone {
		if _, err := compileTemplate(t.SourceIdentity); err != nil {
			p.Addf(validate.Join(path, "source_identity"), "%v", err)
		}
	}
	if len(t.Grants) == 0 {
		p.Addf(validate.Join(path, "grants"), "a tenant needs at least one grant (deny by default)")
	}
	for i, g := range t.Grants {
		gp := validate.Join(path, "grants", i)
		if err := validateBucket(g.Bucket); err != nil {
			p.Addf(validate.Join(gp, "bucket"), "%v", err)
		}
		if len(g.Prefixes) == 0 {
			p.Addf(validate.Join(gp, "prefixes"), "list at least one prefix (\"\" grants the whole bucket)")
		}
		for j, pre := range g.Prefixes {
			if _, err := compilePattern(pre); err != nil {
				p.Addf(validate.Join(gp, "prefixes", j), "%v", err)
			}
		}
		if len(g.Operations) == 0 {
			p.Addf(validate.Join(gp, "operations"), "list at least one of get, put, check, tag")
		}
		for j, o := range g.Operations {
			if _, err := ParseOperation(o); err != nil {
				p.Addf(validate.Join(gp, "operations", j), "%v", err)
			}
		}
	}
}
