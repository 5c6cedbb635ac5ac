package scope

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// TestPolicyCacheServesWhatBuildingWould: a grant decided from a cached
// policy carries exactly the policy (and its hash) a fresh build gives,
// for each input that changes the policy: operation, location, file
// list (compacted or not), and a tenant switch.
func TestPolicyCacheServesWhatBuildingWould(t *testing.T) {
	withGet := Tenant{Org: "beta", CheckAllowsGet: true, Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get", "check"}}}}
	plain := Tenant{Org: "gamma", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get", "check"}}}}
	r := testRules(t)
	r2 := testRules(t, withGet, plain)
	long := manyFiles("segment-with-a-long-name-%04d.ts", 200) // compacted
	cases := []struct {
		r   *Rules
		s   Subject
		req Request
	}{
		{r, acme, Request{Operation: "get", Location: "s3://media/acme/in/"}},
		{r, acme, Request{Operation: "check", Location: "s3://media/acme/in/"}},
		{r, acme, Request{Operation: "get", Location: "s3://media/acme/other/"}},
		{r, acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: []string{"a.ts", "b.ts"}}},
		{r, acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: []string{"a.ts"}}},
		{r, acme, Request{Operation: "get", Location: "s3://media/acme/in/", Files: long}},
		{r2, Subject{Principal: "w", Org: "beta"}, Request{Operation: "check", Location: "s3://media/beta/x/"}},
		{r2, Subject{Principal: "w", Org: "gamma"}, Request{Operation: "check", Location: "s3://media/beta/x/"}},
	}
	seen := map[string]string{}
	for round := 0; round < 2; round++ {
		for i, c := range cases {
			g, err := c.r.Decide(c.s, c.req)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			loc, _ := ParseLocation(c.req.Location)
			var keys []string
			for _, f := range c.req.Files {
				k, _ := ParseFile(loc, f)
				keys = append(keys, k)
			}
			tr := c.r.tenants[c.s.Org]
			want, compacted, err := BuildPolicy(g.Operation, loc, keys, tr.policy)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(want))
			if g.Policy != want || g.Compacted != compacted || g.PolicySHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("round %d case %d: grant policy %q (compacted %v, sha %s), want %q (%v)", round, i, g.Policy, g.Compacted, g.PolicySHA256, want, compacted)
			}
			id := fmt.Sprintf("%p %s", c.r, g.Policy)
			if prev, ok := seen[fmt.Sprint(i)]; ok && prev != id {
				t.Fatalf("case %d changed between rounds", i)
			}
			seen[fmt.Sprint(i)] = id
		}
	}
	if seen["6"] == seen["7"] {
		t.Fatal("tenants with different policy switches share a policy")
	}
	// The long file list is over the key bound: built, never cached.
	if n := r.policies.len(); n != 5 {
		t.Fatalf("%d cached policies in the first rules, want 5 (the long file list is not cached)", n)
	}
}

// TestPolicyCacheIsBounded: distinct locations past the bound never grow
// the cache beyond it, and a reload (new Rules) starts empty.
func TestPolicyCacheIsBounded(t *testing.T) {
	r := testRules(t)
	for i := 0; i < policyCacheEntries+500; i++ {
		if _, err := r.Decide(acme, Request{Operation: "get", Location: fmt.Sprintf("s3://media/acme/job-%d/", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.policies.len(); n != policyCacheEntries {
		t.Fatalf("%d cached policies, want the bound %d", n, policyCacheEntries)
	}
	if n := testRules(t).policies.len(); n != 0 {
		t.Fatalf("fresh rules hold %d policies", n)
	}
	if k := policyKey(OpGet, Location{Bucket: "b", Prefix: strings.Repeat("p/", 600)}, nil, PolicyOptions{}); k != "" {
		t.Fatal("an input over the key bound is cached")
	}
}
