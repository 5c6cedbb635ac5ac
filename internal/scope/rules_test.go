package scope

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/validate"
)

func testRules(t testing.TB, tenants ...Tenant) *Rules {
	t.Helper()
	if len(tenants) == 0 {
		tenants = []Tenant{{
			Org:         "acme",
			RoleARN:     "arn:aws:iam::111122223333:role/target",
			ExternalID:  "acme-ext",
			MaxDuration: duration.Duration(2 * time.Hour),
			Grants: []GrantRule{
				{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get", "check"}},
				{Bucket: "media", Prefixes: []string{"{org}/out/", "shared/{principal}/"}, Operations: []string{"storage:put", "tag"}},
				{Bucket: "archive", Prefixes: []string{"{org}/*/raw/"}, Operations: []string{"get"}},
				{Bucket: "scratch", Prefixes: []string{""}, Operations: []string{"get", "put", "check", "tag"}},
			},
		}, {
			Org:    "other",
			Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get"}}},
		}}
	}
	r, err := Compile(tenants, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var acme = Subject{Principal: "worker-1", Org: "acme"}

func TestDecideAllowsAndDenies(t *testing.T) {
	r := testRules(t)
	tests := []struct {
		name     string
		s        Subject
		op, loc  string
		code     fault.Code // "" = allowed
		reason   string
		message  string
		wantPref string
	}{
		{"get own org", acme, "get", "s3://media/acme/in/", "", "", "", "acme/in/"},
		{"get org root", acme, "get", "s3://media/acme/", "", "", "", "acme/"},
		{"tool name", acme, "storage:get", "s3://media/acme/in", "", "", "", "acme/in/"},
		{"check", acme, "check", "s3://media/acme/x/", "", "", "", "acme/x/"},
		{"put out", acme, "put", "s3://media/acme/out/2026/", "", "", "", "acme/out/2026/"},
		{"put own principal", acme, "put", "s3://media/shared/worker-1/", "", "", "", "shared/worker-1/"},
		{"star segment", acme, "get", "s3://archive/acme/show-1/raw/ep/", "", "", "", "acme/show-1/raw/ep/"},
		{"whole bucket", acme, "tag", "s3://scratch/", "", "", "", ""},
		{"whole bucket deep", acme, "put", "s3://scratch/a/b/", "", "", "", "a/b/"},

		{"put not granted there", acme, "put", "s3://media/acme/in/", fault.AccessDenied, "no_matching_grant", "operation put is not allowed on s3://media/acme/in/ for org acme", ""},
		{"sibling prefix", acme, "get", "s3://media/acme-other/in/", fault.AccessDenied, "no_matching_grant", "operation get is not allowed on s3://media/acme-other/in/ for org acme", ""},
		{"sibling without slash", acme, "get", "s3://media/acmex", fault.AccessDenied, "no_matching_grant", "", ""},
		{"above the grant", acme, "get", "s3://media/", fault.AccessDenied, "no_matching_grant", "", ""},
		{"other org's prefix", acme, "get", "s3://media/other/", fault.AccessDenied, "no_matching_grant", "", ""},
		{"other bucket", acme, "get", "s3://media2/acme/", fault.AccessDenied, "no_matching_grant", "", ""},
		{"star needs a segment", acme, "get", "s3://archive/acme/raw/", fault.AccessDenied, "no_matching_grant", "", ""},
		{"other principal", acme, "put", "s3://media/shared/worker-2/", fault.AccessDenied, "no_matching_grant", "", ""},
		{"other org same pattern", Subject{Principal: "p", Org: "other"}, "put", "s3://media/other/", fault.AccessDenied, "no_matching_grant", "operation put is not allowed on s3://media/other/ for org other", ""},
		{"unknown org", Subject{Principal: "p", Org: "nobody"}, "get", "s3://media/nobody/", fault.AccessDenied, "unknown_org", `no tenant is configured for org "nobody"`, ""},
		{"no org", Subject{Principal: "p"}, "get", "s3://media/acme/", fault.AccessDenied, "unknown_org", "the caller has no organization, so no tenant applies", ""},
		{"org case matters", Subject{Principal: "p", Org: "ACME"}, "get", "s3://media/acme/", fault.AccessDenied, "unknown_org", "", ""},

		{"bad operation", acme, "delete", "s3://media/acme/", fault.InvalidRequest, "bad_operation", "", ""},
		{"bad location", acme, "get", "s3://media/acme/../other/", fault.InvalidRequest, "bad_location", "invalid location: location prefix must not contain '.' or '..' segments", ""},
	}
	for _, tt := range tests {
		g, err := r.Decide(tt.s, Request{Operation: tt.op, Location: tt.loc})
		if tt.code == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tt.name, err)
				continue
			}
			if g.Prefix != tt.wantPref || g.Policy == "" {
				t.Errorf("%s: grant prefix %q policy %q", tt.name, g.Prefix, g.Policy)
			}
			continue
		}
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Code != tt.code || fe.Reason != tt.reason {
			t.Errorf("%s: error %v, want %s/%s", tt.name, err, tt.code, tt.reason)
			continue
		}
		if tt.message != "" && fe.Message != tt.message {
			t.Errorf("%s: message %q, want %q", tt.name, fe.Message, tt.message)
		}
		if (g.Policy != "" || g.Bucket != "") && err != nil {
			t.Errorf("%s: a refusal returned a grant %+v", tt.name, g)
		}
	}
}

// TestTemplateValuesNeverWiden: a principal is inserted as exactly one
// literal segment; values that are not one plain segment match nothing.
func TestTemplateValuesNeverWiden(t *testing.T) {
	r := testRules(t, Tenant{Org: "acme", Grants: []GrantRule{
		{Bucket: "media", Prefixes: []string{"home/{principal}/"}, Operations: []string{"get", "put"}},
	}})
	locations := []string{
		"s3://media/", "s3://media/home/", "s3://media/home/*/", "s3://media/home/a/", "s3://media/home/a/b/",
		"s3://media/home/../", "s3://media/home/x/", "s3://media/home/%2A/", "s3://media/home/a*/",
	}
	for _, principal := range []string{"*", "a/b", "..", ".", "", "a/", "/a", "home", "{principal}", "{org}", "a*"} {
		s := Subject{Principal: principal, Org: "acme"}
		for _, loc := range locations {
			g, err := r.Decide(s, Request{Operation: "get", Location: loc})
			if err != nil {
				continue
			}
			// Only the principal's own literal directory may ever be granted.
			if principal != "a*" || !strings.HasPrefix(g.Prefix, "home/a*/") {
				t.Errorf("principal %q got %s (policy %s)", principal, loc, g.Policy)
			}
			// And "a*" is literal in the policy: it must not reach "home/ab/".
			if mustEval(t, g.Policy, objectReq("s3:GetObject", "media", "home/ab/x")) {
				t.Errorf("principal %q widened to home/ab/: %s", principal, g.Policy)
			}
		}
	}
	// The literal principal still works.
	if _, err := r.Decide(Subject{Principal: "a", Org: "acme"}, Request{Operation: "put", Location: "s3://media/home/a/x/"}); err != nil {
		t.Errorf("own home refused: %v", err)
	}
}

func TestDecideUserinfoNeverEchoed(t *testing.T) {
	r := testRules(t)
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, loc := range []string{
		"s3://AKIAIOSFODNN7EXAMPLE:" + secret + "@media/acme/in/",    // allowed
		"s3://AKIAIOSFODNN7EXAMPLE:" + secret + "@media/other/in/",   // denied
		"s3://AKIAIOSFODNN7EXAMPLE:" + secret + "@Media/acme/in/",    // invalid bucket
		"s3://AKIAIOSFODNN7EXAMPLE:" + secret + "@media/acme/../x/",  // invalid prefix
		"s3://AKIAIOSFODNN7EXAMPLE:" + secret + "@media/user@x.com/", // refused userinfo
		"s3://{" + secret + "}@media/acme/in/",
		"s3://{" + secret + "}@media/other/",
	} {
		g, err := r.Decide(acme, Request{Operation: "get", Location: loc, Files: []string{"a.mp4"}})
		text := fmt.Sprintf("%+v %v", g, err)
		if err != nil {
			fe := fault.From(err)
			text += fe.Message + fe.Error()
		}
		for _, frag := range []string{secret, "wJalrXUtnFEMI", "K7MDENG", "bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE"} {
			if strings.Contains(text, frag) {
				t.Errorf("%q leaked into %s", frag, text)
			}
		}
	}
}

func TestDecideFiles(t *testing.T) {
	r := testRules(t)
	g, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: []string{"b.mp4", "a.mp4", "b.mp4"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.Keys, []string{"acme/in/a.mp4", "acme/in/b.mp4"}) || g.Compacted {
		t.Errorf("keys %q compacted %v", g.Keys, g.Compacted)
	}
	if !mustEval(t, g.Policy, objectReq("s3:GetObject", "media", "acme/in/a.mp4")) || mustEval(t, g.Policy, objectReq("s3:GetObject", "media", "acme/in/c.mp4")) {
		t.Errorf("policy is not exact: %s", g.Policy)
	}
	g, err = r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: manyFiles("hls/seg-%05d.ts", 500)})
	if err != nil || !g.Compacted || len(g.Keys) != 500 {
		t.Fatalf("500 files: compacted=%v keys=%d err=%v", g.Compacted, len(g.Keys), err)
	}
	if !strings.Contains(g.Policy, "acme/in/hls/*") || g.CompactedPrefix != "acme/in/hls/" {
		t.Errorf("compacted policy %s", g.Policy)
	}
	for _, tt := range []struct {
		files  []string
		reason string
	}{
		{manyFiles("f%d", MaxFiles+1), "too_many_files"},
		{[]string{"ok", "../escape"}, "bad_file"},
		{[]string{""}, "bad_file"},
		{[]string{"dir/"}, "bad_file"},
	} {
		_, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: tt.files})
		if fe := fault.From(err); err == nil || fe.Code != fault.InvalidRequest || fe.Reason != tt.reason {
			t.Errorf("files %q: %v, want %s", truncate(strings.Join(tt.files, ","), 40), err, tt.reason)
		}
	}
	// A prefix whose policy cannot fit is an InvalidRequest naming the limit.
	long := "s3://scratch/" + strings.Repeat("$", 900) + "/"
	_, err = r.Decide(acme, Request{Operation: "get", Location: long})
	if fe := fault.From(err); err == nil || fe.Code != fault.InvalidRequest || fe.Reason != "policy_too_large" || !strings.Contains(fe.Message, "2048") {
		t.Errorf("oversized policy: %v", err)
	}
}

func TestDecideDuration(t *testing.T) {
	r := testRules(t)
	for _, tt := range []struct {
		req, want time.Duration
		reason    string
	}{
		{0, 2 * time.Hour, ""}, // default_duration defaults to max_duration
		{30 * time.Minute, 30 * time.Minute, ""},
		{MinDuration, MinDuration, ""},
		{12 * time.Hour, 2 * time.Hour, ""}, // clamped to max_duration
		{MinDuration - time.Second, 0, "bad_duration"},
		{-time.Hour, 0, "bad_duration"},
	} {
		g, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/", Duration: tt.req})
		if tt.reason != "" {
			if fault.From(err).Reason != tt.reason {
				t.Errorf("duration %s: %v, want %s", tt.req, err, tt.reason)
			}
			continue
		}
		if err != nil || g.Duration != tt.want {
			t.Errorf("duration %s: got %s, %v; want %s", tt.req, g.Duration, err, tt.want)
		}
	}
}

var nameRe = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestDecideIdentityFields(t *testing.T) {
	r := testRules(t)
	req := Request{Operation: "get", Location: "s3://media/acme/in/", JobID: "J1", TaskID: "T1"}
	g, err := r.Decide(acme, req)
	if err != nil {
		t.Fatal(err)
	}
	if g.RoleARN != "arn:aws:iam::111122223333:role/target" || g.ExternalID != "acme-ext" || g.Backend != "default" || g.Org != "acme" || g.Principal != "worker-1" {
		t.Errorf("grant %+v", g)
	}
	wantTags := []Tag{{"job-id", "J1"}, {"org", "acme"}, {"task-id", "T1"}}
	if !slices.Equal(g.Tags, wantTags) {
		t.Errorf("tags %v, want %v", g.Tags, wantTags)
	}
	if g.SourceIdentity != "worker-1" {
		t.Errorf("source identity %q", g.SourceIdentity)
	}
	if !nameRe.MatchString(g.SessionName) || !strings.HasPrefix(g.SessionName, "J1.T1-") {
		t.Errorf("session name %q", g.SessionName)
	}

	// Deterministic per task grant: a retry gets the same name ...
	again, _ := r.Decide(acme, req)
	if again.SessionName != g.SessionName {
		t.Errorf("retry got session name %q, first %q", again.SessionName, g.SessionName)
	}
	// ... and any difference in what is granted, or to whom, changes it.
	for _, v := range []struct {
		s   Subject
		req Request
	}{
		{Subject{Principal: "worker-2", Org: "acme"}, req},
		{acme, Request{Operation: "check", Location: req.Location, JobID: "J1", TaskID: "T1"}},
		{acme, Request{Operation: "get", Location: "s3://media/acme/in/x/", JobID: "J1", TaskID: "T1"}},
		{acme, Request{Operation: "get", Location: req.Location, JobID: "J1", TaskID: "T2"}},
		{acme, Request{Operation: "get", Location: req.Location, JobID: "J1", TaskID: "T1", Files: []string{"a"}}},
	} {
		other, err := r.Decide(v.s, v.req)
		if err != nil {
			t.Fatal(err)
		}
		if other.SessionName == g.SessionName {
			t.Errorf("different grant %+v shares session name %q", v, g.SessionName)
		}
	}

	// No job or task: no such tags, a generic session name.
	g, _ = r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/"})
	if !slices.Equal(g.Tags, []Tag{{"org", "acme"}}) || !strings.HasPrefix(g.SessionName, "vtk-") || !nameRe.MatchString(g.SessionName) {
		t.Errorf("tags %v session %q", g.Tags, g.SessionName)
	}
	// Long ids still give a valid name.
	long := strings.Repeat("j", 128)
	g, err = r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/", JobID: long, TaskID: "a:b@c"})
	if err != nil || !nameRe.MatchString(g.SessionName) {
		t.Errorf("long ids: %q %v", g.SessionName, err)
	}
	for _, id := range []string{strings.Repeat("j", 129), "a b", "a/b", "a\n", "ÿ"} {
		_, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/", JobID: id})
		if fault.From(err).Reason != "bad_job_id" {
			t.Errorf("job id %q: %v", truncate(id, 20), err)
		}
		_, err = r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/", TaskID: id})
		if fault.From(err).Reason != "bad_task_id" {
			t.Errorf("task id %q: %v", truncate(id, 20), err)
		}
	}
}

func TestSessionTagsAndSourceIdentity(t *testing.T) {
	r := testRules(t, Tenant{
		Org: "acme",
		SessionTags: map[string]string{
			"who": "{principal}", "what": "{operation}:{bucket}", "fixed": "vtk", "job": "{job_id}",
		},
		TransitiveTagKeys: []string{"who"},
		SourceIdentity:    "vtk-{org}-{principal}",
		Grants:            []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get"}}},
	})
	g, err := r.Decide(Subject{Principal: "aws:admin#1 é" + strings.Repeat("x", 300), Org: "acme"}, Request{Operation: "get", Location: "s3://media/"})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Tags) != 3 || g.Tags[0] != (Tag{"fixed", "vtk"}) || g.Tags[1] != (Tag{"what", "get:media"}) || g.Tags[2].Key != "who" {
		t.Fatalf("tags %v", g.Tags)
	}
	who := g.Tags[2].Value
	if !strings.HasPrefix(who, "aws:admin_1 é") || len([]rune(who)) != 256 {
		t.Errorf("who tag %q (%d runes)", who, len([]rune(who)))
	}
	if !slices.Equal(g.TransitiveTagKeys, []string{"who"}) {
		t.Errorf("transitive %v", g.TransitiveTagKeys)
	}
	if !nameRe.MatchString(g.SourceIdentity) || !strings.HasPrefix(g.SourceIdentity, "vtk-acme-aws_admin_1__x") || strings.HasPrefix(strings.ToLower(g.SourceIdentity), "aws:") {
		t.Errorf("source identity %q", g.SourceIdentity)
	}

	r = testRules(t, Tenant{
		Org: "acme", SessionTags: map[string]string{}, SourceIdentity: SourceIdentityNone,
		Grants: []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get"}}},
	})
	g, err = r.Decide(acme, Request{Operation: "get", Location: "s3://media/", JobID: "J"})
	if err != nil || g.Tags != nil || g.SourceIdentity != "" {
		t.Errorf("disabled tags/source identity: %v %q %v", g.Tags, g.SourceIdentity, err)
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "__",
		"a":                     "a_",
		"ab":                    "ab",
		"aws:admin":             "aws_admin",
		"AWS:x":                 "AWS_x",
		"a b/c*d":               "a_b_c_d",
		"ÿé":                    "__",
		"\xff":                  "__",
		"user+=,.@-_9":          "user+=,.@-_9",
		strings.Repeat("x", 70): strings.Repeat("x", 64),
	} {
		got := SanitizeName(in)
		if got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
		if !nameRe.MatchString(got) {
			t.Errorf("SanitizeName(%q) = %q is not a valid name", in, got)
		}
	}
}

func TestCompileReportsProblems(t *testing.T) {
	good := GrantRule{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get"}}
	tests := []struct {
		name   string
		tenant Tenant
		path   string
		want   string
	}{
		{"no grants", Tenant{Org: "acme"}, "tenants[0].grants", "at least one grant"},
		{"bad org", Tenant{Org: "ac me", Grants: []GrantRule{good}}, "tenants[0].org", "letters"},
		{"bad bucket", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "Media", Prefixes: []string{""}, Operations: []string{"get"}}}}, "tenants[0].grants[0].bucket", "lower-case"},
		{"prefix without slash", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"acme"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "end in '/'"},
		{"partial template", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"x-{org}/"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "whole segment"},
		{"partial star", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"a*/"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "whole segment"},
		{"dot-dot prefix", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"a/../"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "'..'"},
		{"leading slash", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"/a/"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "'/'"},
		{"control char", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"a\x01/"}, Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes[0]", "control"},
		{"no prefixes", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Operations: []string{"get"}}}}, "tenants[0].grants[0].prefixes", "at least one prefix"},
		{"bad op", Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"delete"}}}}, "tenants[0].grants[0].operations[0]", "unknown operation"},
		{"bad tag template", Tenant{Org: "acme", SessionTags: map[string]string{"k": "{secret}"}, Grants: []GrantRule{good}}, "tenants[0].session_tags.k", "unknown template variable"},
		{"tag keys collide", Tenant{Org: "acme", SessionTags: map[string]string{"Org": "{org}", "org": "{org}"}, Grants: []GrantRule{good}}, "tenants[0].session_tags.org", "case-insensitive"},
		{"aws tag key", Tenant{Org: "acme", SessionTags: map[string]string{"aws:x": "{org}"}, Grants: []GrantRule{good}}, "tenants[0].session_tags.aws:x", "aws:"},
		{"bad source identity", Tenant{Org: "acme", SourceIdentity: "{org", Grants: []GrantRule{good}}, "tenants[0].source_identity", "template"},
		{"transitive unknown", Tenant{Org: "acme", TransitiveTagKeys: []string{"nope"}, Grants: []GrantRule{good}}, "tenants[0].transitive_tag_keys[0]", "not one of"},
		{"max too long", Tenant{Org: "acme", MaxDuration: duration.Duration(13 * time.Hour), Grants: []GrantRule{good}}, "tenants[0].max_duration", "between"},
		{"default over max", Tenant{Org: "acme", DefaultDuration: duration.Duration(2 * time.Hour), Grants: []GrantRule{good}}, "tenants[0].default_duration", "max_duration"},
		{"bad role", Tenant{Org: "acme", RoleARN: "arn:aws:iam::1:user/x", Grants: []GrantRule{good}}, "tenants[0].role_arn", "role ARN"},
		{"bad external id", Tenant{Org: "acme", ExternalID: "a b", Grants: []GrantRule{good}}, "tenants[0].external_id", "2-1224"},
	}
	for _, tt := range tests {
		_, err := Compile([]Tenant{tt.tenant}, nil)
		var ve *validate.Error
		if !errors.As(err, &ve) {
			t.Errorf("%s: error %v, want *validate.Error", tt.name, err)
			continue
		}
		found := false
		for _, p := range ve.Problems {
			found = found || (p.Path == tt.path && strings.Contains(p.Message, tt.want))
		}
		if !found {
			t.Errorf("%s: problems %v, want %s: ...%s...", tt.name, ve.Problems, tt.path, tt.want)
		}
	}
	_, err := Compile([]Tenant{{Org: "acme", Grants: []GrantRule{good}}, {Org: "acme", Grants: []GrantRule{good}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "tenants[1].org: org \"acme\" is configured twice") {
		t.Errorf("duplicate org: %v", err)
	}
	_, err = Compile([]Tenant{{Org: "acme", Backend: "sts", Grants: []GrantRule{good}}}, map[string]bool{"default": true})
	if err == nil || !strings.Contains(err.Error(), "tenants[0].backend") {
		t.Errorf("unknown backend: %v", err)
	}
}

func TestTenantDefaults(t *testing.T) {
	r := testRules(t, Tenant{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get"}}}})
	tn, ok := r.Tenant("acme")
	if !ok || tn.Backend != "default" || tn.MaxDuration.D() != time.Hour || tn.DefaultDuration.D() != time.Hour || tn.SourceIdentity != "{principal}" || len(tn.SessionTags) != 3 {
		t.Errorf("tenant %+v", tn)
	}
	if _, ok := r.Tenant("nobody"); ok || len(r.tenants) != 1 {
		t.Error("unknown tenant found")
	}
}

func TestCompileTemplate(t *testing.T) {
	vals := templateValues{varOrg: "acme", varPrincipal: "p", varJobID: "J", varTaskID: "T", varOperation: "get", varBucket: "b"}
	for in, want := range map[string]string{
		"":                     "",
		"x":                    "x",
		"{org}":                "acme",
		"{org}/{principal}":    "acme/p",
		"a{job_id}b{task_id}c": "aJbTc",
		"{operation}{bucket}":  "getb",
	} {
		tm, err := compileTemplate(in)
		if err != nil || tm.render(&vals) != want {
			t.Errorf("template %q = %q, %v; want %q", in, tm.render(&vals), err, want)
		}
	}
	for _, in := range []string{"{", "}", "{org", "{nope}", "org}", "{{org}}", "{ORG}"} {
		if _, err := compileTemplate(in); err == nil {
			t.Errorf("template %q accepted", in)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	r := testRules(b)
	req := Request{Operation: "get", Location: "s3://media/acme/in/2026/show/", JobID: "job-1234", TaskID: "task-5678"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Decide(acme, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecideFiles(b *testing.B) {
	r := testRules(b)
	req := Request{Operation: "get", Location: "s3://media/acme/in/", Files: manyFiles("seg-%03d.ts", 10), JobID: "job-1234", TaskID: "task-5678"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Decide(acme, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecideDenied(b *testing.B) {
	r := testRules(b)
	req := Request{Operation: "put", Location: "s3://media/acme/in/", JobID: "job-1234", TaskID: "task-5678"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Decide(acme, req); err == nil {
			b.Fatal("allowed")
		}
	}
}

func TestCompiledRulesIgnoreLaterConfigEdits(t *testing.T) {
	tenants := []Tenant{{Org: "acme", SessionTags: map[string]string{"org": "{org}"}, TransitiveTagKeys: []string{"org"},
		Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get"}}}}}
	r, err := Compile(tenants, nil)
	if err != nil {
		t.Fatal(err)
	}
	tenants[0].Grants[0].Prefixes[0] = ""
	tenants[0].Grants[0].Operations[0] = "put"
	tenants[0].SessionTags["org"] = "changed"
	tenants[0].TransitiveTagKeys[0] = "changed"
	if _, err := r.Decide(acme, Request{Operation: "put", Location: "s3://media/other/"}); err == nil {
		t.Error("an edit after Compile widened the rules")
	}
	g, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/acme/"})
	if err != nil || g.Tags[0].Value != "acme" || g.TransitiveTagKeys[0] != "org" {
		t.Errorf("grant %+v, %v", g, err)
	}
	tn, _ := r.Tenant("acme")
	if tn.Grants[0].Prefixes[0] != "{org}/" || tn.SessionTags["org"] != "{org}" {
		t.Errorf("Tenant() shows the edited config: %+v", tn)
	}
}

// STS refuses a TransitiveTagKeys entry that is not among the session tags
// sent ("The specified transitive tag key must be included in the requested
// tags"), so a transitive key whose tag was left out for an empty value
// must be left out too.
func TestTransitiveKeysOnlyForTagsSent(t *testing.T) {
	r := testRules(t, Tenant{
		Org:               "acme",
		TransitiveTagKeys: []string{"org", "job-id", "task-id"},
		Grants:            []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get"}}},
	})
	for _, tc := range []struct {
		job, task string
		want      []string
	}{
		{"", "", []string{"org"}},
		{"J", "", []string{"org", "job-id"}},
		{"", "T", []string{"org", "task-id"}},
		{"J", "T", []string{"org", "job-id", "task-id"}},
	} {
		g, err := r.Decide(acme, Request{Operation: "get", Location: "s3://media/", JobID: tc.job, TaskID: tc.task})
		if err != nil {
			t.Fatal(err)
		}
		sent := map[string]bool{}
		for _, tg := range g.Tags {
			sent[tg.Key] = true
		}
		for _, k := range g.TransitiveTagKeys {
			if !sent[k] {
				t.Errorf("job %q task %q: transitive key %q is not among the tags %v", tc.job, tc.task, k, g.Tags)
			}
		}
		if !slices.Equal(g.TransitiveTagKeys, tc.want) {
			t.Errorf("job %q task %q: transitive %v, want %v", tc.job, tc.task, g.TransitiveTagKeys, tc.want)
		}
	}
}

// TestLengthLimitsOfARNsAndTagKeys: the role name (with its path) may be
// 1–512 characters and a tag key 1–128 characters (counted as characters,
// not bytes), checked apart from the patterns.
func TestLengthLimitsOfARNsAndTagKeys(t *testing.T) {
	arn := func(n int) string { return "arn:aws:iam::111122223333:role/" + strings.Repeat("r", n) }
	for _, c := range []struct {
		arn  string
		want bool
	}{
		{arn(1), true}, {arn(512), true}, {arn(513), false}, {arn(0), false},
		{"arn:aws:iam::111122223333:role/path/" + strings.Repeat("r", 507), true},
		{"arn:aws:iam::11112222333:role/x", false}, {"arn:aws:iam::111122223333:user/x", false},
	} {
		if got := ValidRoleARN(c.arn); got != c.want {
			t.Errorf("ValidRoleARN(%d chars) = %v, want %v", len(c.arn), got, c.want)
		}
	}
	good := GrantRule{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get"}}
	for _, c := range []struct {
		key string
		ok  bool
	}{
		{strings.Repeat("é", 128), true}, {strings.Repeat("é", 129), false}, {strings.Repeat("k", 128), true}, {strings.Repeat("k", 129), false},
	} {
		tn := Tenant{Org: "acme", RoleARN: arn(4), SessionTags: map[string]string{c.key: "{org}"}, Grants: []GrantRule{good}}
		tn.ApplyDefaults()
		var p validate.Problems
		tn.Validate(&p, "tenants[0]", nil)
		if ok := p.Err() == nil; ok != c.ok {
			t.Errorf("tag key of %d characters: valid %v, want %v (%v)", utf8.RuneCountInString(c.key), ok, c.ok, p.Err())
		}
	}
}
