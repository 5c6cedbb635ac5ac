package awsdeny

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
)

// fakeIAM speaks IAM's Query protocol: a form body in, XML out.
type fakeIAM struct {
	mu       sync.Mutex
	calls    []map[string]string
	policies map[string]string // role/policy -> document
}

func (f *fakeIAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		http.Error(w, "bad request", 400)
		return
	}
	call := map[string]string{}
	for k := range r.PostForm {
		call[k] = r.PostForm.Get(k)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	key := call["RoleName"] + "/" + call["PolicyName"]
	w.Header().Set("Content-Type", "text/xml")
	switch call["Action"] {
	case "PutRolePolicy":
		f.policies[key] = call["PolicyDocument"]
		_, _ = w.Write([]byte(`<PutRolePolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></PutRolePolicyResponse>`))
	case "DeleteRolePolicy":
		if _, ok := f.policies[key]; !ok {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The role policy cannot be found.</Message></Error><RequestId>req-2</RequestId></ErrorResponse>`))
			return
		}
		delete(f.policies, key)
		_, _ = w.Write([]byte(`<DeleteRolePolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><ResponseMetadata><RequestId>req-3</RequestId></ResponseMetadata></DeleteRolePolicyResponse>`))
	default:
		http.Error(w, "unknown action", 400)
	}
}

func newSwitch(t *testing.T) (*KillSwitch, *fakeIAM) {
	f := &fakeIAM{policies: map[string]string{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client := iam.New(iam.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	ks := &KillSwitch{IAM: client, Roles: func(r revoke.Revocation) []string {
		if r.Kind == revoke.KindOrg {
			return []string{"arn:aws:iam::111122223333:role/tenants/acme-target"}
		}
		return []string{"arn:aws:iam::111122223333:role/tenants/acme-target", "arn:aws:iam::444455556666:role/beta-target"}
	}}
	return ks, f
}

func TestApplyAttachesDeny(t *testing.T) {
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp := created.Add(24 * time.Hour)
	tests := []struct {
		name  string
		r     revoke.Revocation
		roles []string
		cond  map[string]map[string]string
	}{
		{"job", revoke.Revocation{ID: "rev_1", Kind: revoke.KindJob, Value: "job-7", CreatedAt: created},
			[]string{"acme-target", "beta-target"}, map[string]map[string]string{"StringEquals": {"aws:PrincipalTag/job-id": "job-7"}}},
		{"task with expiry", revoke.Revocation{ID: "rev_2", Kind: revoke.KindTask, Value: "task-9", CreatedAt: created, ExpiresAt: &exp},
			[]string{"acme-target", "beta-target"}, map[string]map[string]string{
				"StringEquals": {"aws:PrincipalTag/task-id": "task-9"},
				"DateLessThan": {"aws:CurrentTime": "2026-03-02T12:00:00Z"}}},
		{"org: revoke all before T", revoke.Revocation{ID: "rev_3", Kind: revoke.KindOrg, Value: "acme", CreatedAt: created},
			[]string{"acme-target"}, map[string]map[string]string{"DateLessThan": {"aws:TokenIssueTime": "2026-03-01T12:00:00Z"}}},
		{"principal", revoke.Revocation{ID: "rev_4", Kind: revoke.KindPrincipal, Value: "worker-1", CreatedAt: created},
			[]string{"acme-target", "beta-target"}, map[string]map[string]string{"StringEquals": {"aws:SourceIdentity": "worker-1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ks, f := newSwitch(t)
			if err := ks.Apply(context.Background(), tc.r); err != nil {
				t.Fatal(err)
			}
			if len(f.calls) != len(tc.roles) {
				t.Fatalf("%d IAM calls, want %d", len(f.calls), len(tc.roles))
			}
			for i, c := range f.calls {
				if c["Action"] != "PutRolePolicy" || c["Version"] != "2010-05-08" || c["RoleName"] != tc.roles[i] || c["PolicyName"] != "dispenser-revocation-"+tc.r.ID {
					t.Fatalf("call %d = %v", i, c)
				}
				var doc struct {
					Version   string
					Statement []struct {
						Effect, Action, Resource string
						Condition                map[string]map[string]string
					}
				}
				if err := json.Unmarshal([]byte(c["PolicyDocument"]), &doc); err != nil {
					t.Fatal(err)
				}
				if doc.Version != "2012-10-17" || len(doc.Statement) != 1 {
					t.Fatalf("document %s", c["PolicyDocument"])
				}
				st := doc.Statement[0]
				if st.Effect != "Deny" || st.Action != "*" || st.Resource != "*" || !reflect.DeepEqual(st.Condition, tc.cond) {
					t.Fatalf("statement %+v, want deny * on %v", st, tc.cond)
				}
			}
			// Remove detaches it, and a second Remove (already gone) is fine.
			if err := ks.Remove(context.Background(), tc.r); err != nil {
				t.Fatal(err)
			}
			if len(f.policies) != 0 {
				t.Fatalf("policies left: %v", f.policies)
			}
			if err := ks.Remove(context.Background(), tc.r); err != nil {
				t.Fatalf("Remove of a missing policy: %v", err)
			}
		})
	}
}

func TestAccessKeyHasNoDeny(t *testing.T) {
	ks, f := newSwitch(t)
	if err := ks.Apply(context.Background(), revoke.Revocation{ID: "rev_5", Kind: revoke.KindAccessKeyID, Value: "ASIAX"}); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("IAM called for an access key revocation: %v", f.calls)
	}
}

func TestRoleName(t *testing.T) {
	for arn, want := range map[string]string{
		"arn:aws:iam::111122223333:role/x":          "x",
		"arn:aws:iam::111122223333:role/a/b/c-role": "c-role",
		"arn:aws:iam::111122223333:user/x":          "",
		"arn:aws:iam::111122223333:role/":           "",
	} {
		got, err := RoleName(arn)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("RoleName(%q) = %q, %v; want %q", arn, got, err, want)
		}
	}
}

// The principal deny must name the source identity the dispenser actually
// sends for that principal (sanitised to STS's charset and 64 characters),
// or it never matches a session: principals from mTLS (spiffe://…), IAM
// (ARNs) or e-mail-like JWT subjects contain ':' and '/'.
func TestPrincipalDenyMatchesTheSourceIdentitySent(t *testing.T) {
	rules, err := scope.Compile([]scope.Tenant{{Org: "acme",
		Grants: []scope.GrantRule{{Bucket: "media", Prefixes: []string{""}, Operations: []string{"get"}}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := newSwitch(t)
	for _, p := range []string{
		"worker-1",
		"spiffe://vtk.example/ns/workers/sa/encoder",
		"arn:aws:sts::111122223333:assumed-role/vtk-worker/i-0123456789abcdef0-with-a-long-session-name",
		"user:alice",
	} {
		g, err := rules.Decide(scope.Subject{Principal: p, Org: "acme"}, scope.Request{Operation: "get", Location: "s3://media/"})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := ks.Document(revoke.Revocation{ID: "rev_6", Kind: revoke.KindPrincipal, Value: p})
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Statement []struct{ Condition map[string]map[string]string }
		}
		if err := json.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		if got := d.Statement[0].Condition["StringEquals"]["aws:SourceIdentity"]; got != g.SourceIdentity {
			t.Errorf("principal %q: deny on aws:SourceIdentity %q, but sessions carry %q", p, got, g.SourceIdentity)
		}
	}
}
