package iam_test

import (
	"encoding/json"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vtk/dispenser/deploy/iam"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/scope"
)

// document is an IAM policy document; Action, Resource and condition values
// may be a string or a list.
type document struct {
	Version   string
	Statement []statement
}

type statement struct {
	Sid       string
	Effect    string
	Principal map[string]strs
	Action    strs
	Resource  strs
	Condition map[string]map[string]strs
}

type strs []string

func (s *strs) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = strs{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

func load(t *testing.T, name string) document {
	t.Helper()
	b, err := fs.ReadFile(iam.Files, name)
	if err != nil {
		t.Fatal(err)
	}
	var d document
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if d.Version != "2012-10-17" || len(d.Statement) == 0 {
		t.Fatalf("%s: version %q, %d statements", name, d.Version, len(d.Statement))
	}
	for i, s := range d.Statement {
		if s.Effect != "Allow" && s.Effect != "Deny" || len(s.Action) == 0 {
			t.Fatalf("%s: statement %d incomplete: %+v", name, i, s)
		}
	}
	return d
}

func TestEveryFileIsAPolicyDocument(t *testing.T) {
	names, err := fs.Glob(iam.Files, "*.json")
	if err != nil || len(names) != 3 {
		t.Fatalf("policy files: %v %v", names, err)
	}
	for _, n := range names {
		load(t, n)
	}
}

// glob matches IAM wildcards (* any run, ? one character).
func glob(pattern, s string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	return regexp.MustCompile(re).MatchString(s)
}

func allows(d document, action, resource string) *statement {
	for i, s := range d.Statement {
		if s.Effect != "Allow" || !slices.ContainsFunc(s.Action, func(a string) bool { return glob(a, action) }) {
			continue
		}
		if resource == "" || slices.ContainsFunc(s.Resource, func(r string) bool { return glob(r, resource) }) {
			return &d.Statement[i]
		}
	}
	return nil
}

// TestPoliciesMatchTheExample checks the three documents against
// examples/assume-role.yaml: the dispenser may assume, tag and set the
// source identity on the tenant's role; the role trusts the dispenser with
// the tenant's external id; and its permissions cover every session policy
// the tenant's grants produce (session policies can only narrow them).
func TestPoliciesMatchTheExample(t *testing.T) {
	t.Chdir("../..")
	cfg, err := config.Load("examples/assume-role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tenant := cfg.Tenants[0]

	own := load(t, "dispenser-role-policy.json")
	for _, a := range []string{"sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"} {
		if allows(own, a, tenant.RoleARN) == nil {
			t.Errorf("dispenser role policy does not allow %s on %s", a, tenant.RoleARN)
		}
	}

	trust := load(t, "target-role-trust-policy.json")
	for _, a := range []string{"sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"} {
		s := allows(trust, a, "")
		if s == nil {
			t.Errorf("trust policy does not allow %s", a)
			continue
		}
		if p := s.Principal["AWS"]; len(p) != 1 || !strings.HasSuffix(p[0], ":role/dispenser") {
			t.Errorf("%s trusts %v, want only the dispenser role", a, p)
		}
	}
	if s := allows(trust, "sts:AssumeRole", ""); s != nil {
		if got := s.Condition["StringEquals"]["sts:ExternalId"]; len(got) != 1 || got[0] != tenant.ExternalID {
			t.Errorf("sts:ExternalId condition %v, want the tenant's %q", got, tenant.ExternalID)
		}
	}
	if s := allows(trust, "sts:TagSession", ""); s != nil {
		keys := s.Condition["ForAllValues:StringEquals"]["aws:TagKeys"]
		for k := range tenant.SessionTags {
			if !slices.Contains(keys, k) {
				t.Errorf("trust policy refuses session tag %q the tenant sends", k)
			}
		}
	}

	perm := load(t, "target-role-permission-policy.json")
	rules, err := scope.Compile(cfg.Tenants, map[string]bool{"default": true})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, g := range tenant.Grants {
		for _, op := range g.Operations {
			for _, pre := range g.Prefixes {
				gr, err := rules.Decide(scope.Subject{Principal: "worker-1", Org: tenant.Org},
					scope.Request{Operation: op, Location: "s3://" + g.Bucket + "/" + pre + "job-1/", JobID: "job-1", TaskID: "task-1"})
				if err != nil {
					t.Fatalf("%s %s%s: %v", op, g.Bucket, pre, err)
				}
				var session document
				if err := json.Unmarshal([]byte(gr.Policy), &session); err != nil {
					t.Fatal(err)
				}
				for _, st := range session.Statement {
					for _, a := range st.Action {
						for _, r := range st.Resource {
							p := allows(perm, a, r)
							if p == nil {
								t.Errorf("%s: permission policy does not allow %s on %s", op, a, r)
								continue
							}
							checked++
							for _, want := range st.Condition["StringLike"]["s3:prefix"] {
								if allowed := p.Condition["StringLike"]["s3:prefix"]; allowed != nil &&
									!slices.ContainsFunc(allowed, func(pat string) bool { return glob(pat, want) }) {
									t.Errorf("%s: s3:prefix %q not allowed by %v", op, want, allowed)
								}
							}
						}
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no session policy statement checked")
	}
}
