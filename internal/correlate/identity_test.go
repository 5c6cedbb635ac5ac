package correlate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/scope"
)

// TestIdentityMismatch: an event whose access key id the trail holds, but
// whose session is not the one the dispenser created (another role, another
// account, another source identity), is never ok: the dispenser did not
// issue that session, whatever the key id says.
func TestIdentityMismatch(t *testing.T) {
	const key = "ASIAIDENTITY00000001"
	store, ids := trail(t, issued(t, key, "task-id", scope.OpGet, "acme/in/", t0))
	ev := func(s cloudtrailtest.Session) map[string]any {
		return cloudtrailtest.Event{Time: t0.Add(5 * time.Minute), Name: "GetObject", Bucket: "media", Key: "acme/in/a.mp4", Session: s}.Record()
	}
	same := sess(key)
	otherRole := sess(key)
	otherRole.RoleARN = "arn:aws:iam::222222222222:role/dispenser/someone-else"
	otherAccount := sess(key)
	otherAccount.RoleARN = "arn:aws:iam::333333333333:role/dispenser/vtk-target"
	otherSource := sess(key)
	otherSource.SourceIdentity = "intruder"
	noPath := sess(key) // the same role: names are unique in an account, whatever the path
	noPath.RoleARN = "arn:aws:iam::222222222222:role/vtk-target"
	cases := []struct {
		name     string
		rec      map[string]any
		verdict  correlate.Verdict
		critical bool
		reason   string
	}{
		{"the issued session", ev(same), correlate.OK, false, ""},
		{"the key id under another role", ev(otherRole), correlate.UnknownKey, true, "someone-else"},
		{"the key id under the role's name in another account", ev(otherAccount), correlate.UnknownKey, true, "333333333333"},
		{"the key id under another source identity", ev(otherSource), correlate.UnknownKey, true, "intruder"},
		{"the role named without its path", ev(noPath), correlate.OK, false, ""},
	}
	var recs []map[string]any
	for _, c := range cases {
		recs = append(recs, c.rec)
	}
	events, _ := run(t, store, correlate.Options{}, recs...)
	for i, c := range cases {
		e := events[i]
		if e.Verdict != c.verdict || e.Critical != c.critical || !strings.Contains(e.Reason, c.reason) {
			t.Errorf("%s: %s critical %v reason %q notes %v; want %s %v %q", c.name, e.Verdict, e.Critical, e.Reason, e.Notes, c.verdict, c.critical, c.reason)
		}
		if c.verdict == correlate.UnknownKey && !strings.Contains(e.Reason, ids[0]) {
			t.Errorf("%s: the reason %q does not name the record %s", c.name, e.Reason, ids[0])
		}
	}
}

// TestUnknownKeyRolePath: a tenant role configured without the path the
// role has in IAM still matches the sessions of that role (IAM role names
// are unique in an account, whatever the path).
func TestUnknownKeyRolePath(t *testing.T) {
	store, _ := trail(t)
	rec := cloudtrailtest.Event{Time: t0, Name: "GetObject", Bucket: "media", Key: "acme/in/a", Session: sess("ASIAOUTSIDE000000001")}.Record()
	events, _ := run(t, store, correlate.Options{Roles: []correlate.Role{{ARN: "arn:aws:iam::222222222222:role/VTK-target", Org: "acme"}}}, rec)
	if e := events[0]; e.Verdict != correlate.UnknownKey || !e.Critical {
		t.Fatalf("%s %q", e.Verdict, e.Reason)
	}
}

// TestAccessPoint: a request through an access point is authorised by IAM
// on the access point's ARN (arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME/
// object/KEY), which the dispenser's session policies never name: one
// that succeeded was not restricted by the session policy, whatever bucket
// key it reached.
func TestAccessPoint(t *testing.T) {
	const key = "ASIAACCESSPOINT00001"
	store, _ := trail(t, issued(t, key, "task-ap", scope.OpGet, "acme/in/", t0))
	const ap = "arn:aws:s3:us-east-1:222222222222:accesspoint/media-ap"
	ev := func(name, k string, errorCode string) map[string]any {
		e := cloudtrailtest.Event{Time: t0.Add(5 * time.Minute), Name: name, Bucket: "media", Key: k, Session: sess(key), AccessPoint: ap, ErrorCode: errorCode}
		if name == "ListObjects" {
			e.Prefix, e.ListV2 = cloudtrailtest.Ptr("acme/in/"), true
		}
		return e.Record()
	}
	cases := []struct {
		name     string
		rec      map[string]any
		verdict  correlate.Verdict
		critical bool
		object   string
	}{
		{"GetObject in the prefix through an access point", ev("GetObject", "acme/in/a.mp4", ""), correlate.OutsideGrant, true, "s3://media/acme/in/a.mp4"},
		{"ListObjectsV2 through an access point", ev("ListObjects", "", ""), correlate.OutsideGrant, true, "s3://media/acme/in/"},
		{"refused", ev("GetObject", "acme/in/a.mp4", "AccessDenied"), correlate.DeniedAsExpected, false, "s3://media/acme/in/a.mp4"},
	}
	var recs []map[string]any
	for _, c := range cases {
		recs = append(recs, c.rec)
	}
	events, _ := run(t, store, correlate.Options{}, recs...)
	for i, c := range cases {
		e := events[i]
		if e.Verdict != c.verdict || e.Critical != c.critical || e.Object != c.object || !strings.Contains(e.Reason, ap) {
			t.Errorf("%s: %s critical %v object %s reason %q; want %s %v %s, naming the access point", c.name, e.Verdict, e.Critical, e.Object, e.Reason, c.verdict, c.critical, c.object)
		}
	}
}

// TestPutWithACLOrTags: a PutObject (or multipart upload, or copy) that
// sets an ACL (x-amz-acl, x-amz-grant-*) also needs s3:PutObjectAcl, one
// that sets tags (x-amz-tagging) s3:PutObjectTagging, and the dispenser's
// put policy grants neither: a successful one was not restricted by it.
func TestPutWithACLOrTags(t *testing.T) {
	const key = "ASIAPUTACL0000000001"
	store, _ := trail(t, issued(t, key, "task-put", scope.OpPut, "acme/out/", t0))
	ev := func(name string, header, value string) map[string]any {
		e := cloudtrailtest.Event{Time: t0.Add(5 * time.Minute), Name: name, Bucket: "media", Key: "acme/out/r.mp4", Session: sess(key)}
		if name == "CopyObject" {
			e.CopySource = "media/acme/out/q.mp4"
		}
		rec := e.Record()
		if header != "" {
			rec["requestParameters"].(map[string]any)[header] = value
		}
		return rec
	}
	cases := []struct {
		name    string
		rec     map[string]any
		verdict correlate.Verdict
		action  string
	}{
		{"PutObject", ev("PutObject", "", ""), correlate.OK, ""},
		{"PutObject public-read", ev("PutObject", "x-amz-acl", "public-read"), correlate.OutsideGrant, "s3:PutObjectAcl"},
		{"PutObject with a grant header", ev("PutObject", "x-amz-grant-read", "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\""), correlate.OutsideGrant, "s3:PutObjectAcl"},
		{"CreateMultipartUpload public-read", ev("CreateMultipartUpload", "x-amz-acl", "public-read"), correlate.OutsideGrant, "s3:PutObjectAcl"},
		{"PutObject with tags", ev("PutObject", "x-amz-tagging", "state=done"), correlate.OutsideGrant, "s3:PutObjectTagging"},
	}
	var recs []map[string]any
	for _, c := range cases {
		recs = append(recs, c.rec)
	}
	events, _ := run(t, store, correlate.Options{}, recs...)
	for i, c := range cases {
		e := events[i]
		if e.Verdict != c.verdict || !strings.Contains(strings.Join(e.Actions, " "), c.action) {
			t.Errorf("%s: %s actions %v reason %q; want %s needing %s", c.name, e.Verdict, e.Actions, e.Reason, c.verdict, c.action)
		}
	}
}

// TestPolicyJudgedByItsText: each record is judged by the policy text it
// holds, whatever policy_sha256 it claims (two records claiming one hash
// do not share a compiled policy).
func TestPolicyJudgedByItsText(t *testing.T) {
	a := issued(t, "ASIAPOLICYA000000001", "task-a", scope.OpGet, "acme/in/", t0)
	b := issued(t, "ASIAPOLICYB000000001", "task-b", scope.OpGet, "acme/other/", t0)
	b.PolicySHA256 = a.PolicySHA256
	store, _ := trail(t, a, b)
	mk := func(key, k string) map[string]any {
		return cloudtrailtest.Event{Time: t0.Add(time.Minute), Name: "GetObject", Bucket: "media", Key: k, Session: sess(key)}.Record()
	}
	events, _ := run(t, store, correlate.Options{}, mk(a.AccessKeyID, "acme/in/x"), mk(b.AccessKeyID, "acme/in/x"))
	if events[0].Verdict != correlate.OK || events[1].Verdict != correlate.OutsideGrant {
		t.Fatalf("verdicts %s, %s; want ok, outside_grant", events[0].Verdict, events[1].Verdict)
	}
	if len(events[0].Notes) != 0 || len(events[1].Notes) != 1 || !strings.Contains(events[1].Notes[0], "does not match its policy") {
		t.Fatalf("notes %v / %v", events[0].Notes, events[1].Notes)
	}
}
