package scope

import "testing"

func TestDecideSmoke(t *testing.T) {
	r, err := Compile([]Tenant{{Org: "acme", Grants: []GrantRule{{Bucket: "media", Prefixes: []string{"{org}/"}, Operations: []string{"get"}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Decide(Subject{Principal: "w", Org: "acme"}, Request{Operation: "get", Location: "s3://media/acme/in/"}); err != nil {
		t.Fatalf("allowed request refused: %v", err)
	}
	if _, err := r.Decide(Subject{Principal: "w", Org: "acme"}, Request{Operation: "put", Location: "s3://media/acme/in/"}); err == nil {
		t.Fatal("put was allowed without a grant")
	}
}
