package correlate_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/postgres"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/testenv"
)

const roleARN = "arn:aws:iam::222222222222:role/dispenser/vtk-target"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// issued builds an issued record with the policy the scope engine builds
// for op on s3://media/prefix.
func issued(t *testing.T, key, task string, op scope.Operation, prefix string, at time.Time) audit.Record {
	t.Helper()
	pol, _, err := scope.BuildPolicy(op, scope.Location{Bucket: "media", Prefix: prefix}, nil, scope.PolicyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(pol))
	return audit.Record{Time: at, RequestID: "req-" + task, Outcome: audit.Issued, Principal: "worker-1", AuthMethod: "jwt",
		Org: "acme", JobID: "job-1", TaskID: task, Operation: string(op), Bucket: "media", Prefix: prefix, RoleARN: roleARN,
		Backend: "default", SessionName: "dispenser-" + task, SourceIdentity: "worker-1", AccessKeyID: key,
		Expiration: at.Add(time.Hour), Duration: time.Hour, PolicySHA256: hex.EncodeToString(sum[:]), Policy: pol, PackedPolicySize: -1}
}

// trail is a real SQLite audit trail holding recs; it returns the stored
// records' ids in order.
func trail(t *testing.T, recs ...audit.Record) (*sqlite.Store, []string) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	entries, err := s.Append(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID())
	}
	return s, ids
}

func sess(key string) cloudtrailtest.Session {
	return cloudtrailtest.Session{AccessKeyID: key, RoleARN: roleARN, SessionName: "dispenser-task", SourceIdentity: "worker-1"}
}

// countingTrail counts the queries a correlator makes.
type countingTrail struct {
	audit.Querier
	n int
}

func (c *countingTrail) Query(ctx context.Context, f audit.Filter) (audit.Page, error) {
	c.n++
	return c.Querier.Query(ctx, f)
}

// run correlates recs (as one delivered document) and returns the events
// (all of them) and the summary.
func run(t *testing.T, q audit.Querier, opt correlate.Options, recs ...map[string]any) ([]correlate.Event, correlate.Summary) {
	t.Helper()
	opt.Trail = q
	if opt.Roles == nil {
		opt.Roles = []correlate.Role{{ARN: roleARN, Org: "acme"}}
	}
	c, err := correlate.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rd := &cloudtrail.Reader{}
	doc := cloudtrailtest.Gzip(cloudtrailtest.Document(recs...))
	s, err := correlate.Correlate(context.Background(), c, rd, func(v cloudtrail.Visitor) error {
		return rd.ScanStream(context.Background(), "test.json.gz", bytes.NewReader(doc), v)
	}, correlate.RunOptions{All: true}, correlate.NewNDJSONWriter(&out))
	if err != nil {
		t.Fatal(err)
	}
	var events []correlate.Event
	for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		if bytes.HasPrefix(line, []byte(`{"summary":`)) {
			continue
		}
		var e correlate.Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		events = append(events, e)
	}
	return events, s
}

// trailFunc builds a real trail holding recs.
type trailFunc func(t *testing.T, recs ...audit.Record) (audit.Querier, []string)

// postgresTrail is trail on the machine's PostgreSQL (a schema of its own).
func postgresTrail(t *testing.T, recs ...audit.Record) (audit.Querier, []string) {
	t.Helper()
	s, err := postgres.Open(context.Background(), postgres.Options{DSN: testenv.PostgresSchema(t, "correlate_"), Log: "main"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	entries, err := s.Append(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID())
	}
	return s, ids
}

// TestVerdicts produces every verdict from documented CloudTrail records
// against a real trail (SQLite and PostgreSQL) and the scope engine's
// real policies.
func TestVerdicts(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testVerdicts(t, func(t *testing.T, recs ...audit.Record) (audit.Querier, []string) { return trail(t, recs...) })
	})
	t.Run("postgres", func(t *testing.T) { testVerdicts(t, postgresTrail) })
}

func testVerdicts(t *testing.T, newTrail trailFunc) {
	get := issued(t, "ASIAGETKEY0000000001", "task-get", scope.OpGet, "acme/in/", t0)
	put := issued(t, "ASIAPUTKEY0000000002", "task-put", scope.OpPut, "acme/out/", t0)
	revoked := audit.Record{Time: t0.Add(50 * time.Minute), Outcome: audit.Revoked, Operation: "revocation.add", Reason: "access_key_id",
		Principal: "admin", AccessKeyID: get.AccessKeyID, PackedPolicySize: -1}
	store, ids := newTrail(t, get, put, revoked)
	getID, putID := ids[0], ids[1]

	ev := func(at time.Duration, name, key string, mod ...func(*cloudtrailtest.Event)) map[string]any {
		e := cloudtrailtest.Event{Time: t0.Add(at), Name: name, Bucket: "media", Key: key, Session: sess("ASIAGETKEY0000000001"), BytesOut: 100}
		for _, m := range mod {
			m(&e)
		}
		return e.Record()
	}
	denied := func(e *cloudtrailtest.Event) { e.ErrorCode = "AccessDenied" }
	withKey := func(k string) func(*cloudtrailtest.Event) {
		return func(e *cloudtrailtest.Event) { e.Session.AccessKeyID = k }
	}
	prefix := func(p *string) func(*cloudtrailtest.Event) {
		return func(e *cloudtrailtest.Event) { e.Prefix, e.ListV2 = p, true }
	}
	cases := []struct {
		name     string
		rec      map[string]any
		verdict  correlate.Verdict
		critical bool
		record   string
		reason   string
	}{
		{"GetObject in grant", ev(5*time.Minute, "GetObject", "acme/in/a.mp4"), correlate.OK, false, getID, ""},
		{"HeadObject in grant", ev(5*time.Minute, "HeadObject", "acme/in/a.mp4"), correlate.OK, false, getID, ""},
		{"ListObjectsV2 with the granted prefix", ev(5*time.Minute, "ListObjects", "", prefix(cloudtrailtest.Ptr("acme/in/sub/"))), correlate.OK, false, getID, ""},
		{"GetBucketLocation", ev(5*time.Minute, "GetBucketLocation", ""), correlate.OK, false, getID, ""},
		{"GetObject outside, refused", ev(6*time.Minute, "GetObject", "acme/other/x", denied), correlate.DeniedAsExpected, false, getID, "S3 refused it (AccessDenied)"},
		{"ListObjects of a parent prefix, refused", ev(6*time.Minute, "ListObjects", "", prefix(cloudtrailtest.Ptr("acme/")), denied), correlate.DeniedAsExpected, false, getID, ""},
		{"GetObject outside, succeeded", ev(7*time.Minute, "GetObject", "acme/other/secret.mp4"), correlate.OutsideGrant, true, getID, "policy failed to restrict"},
		{"NoSuchKey outside the grant means S3 authorised it", ev(7*time.Minute, "GetObject", "acme/other/missing", func(e *cloudtrailtest.Event) { e.ErrorCode = "NoSuchKey" }), correlate.OutsideGrant, true, getID, "(NoSuchKey)"},
		{"ListObjects without a prefix, succeeded", ev(7*time.Minute, "ListObjects", "", prefix(nil)), correlate.OutsideGrant, true, getID, ""},
		{"a versioned GetObject needs s3:GetObjectVersion", ev(7*time.Minute, "GetObject", "acme/in/a.mp4", func(e *cloudtrailtest.Event) { e.VersionID = "3HL4kqtJlcpXroDTDmJ" }), correlate.OutsideGrant, true, getID, "s3:GetObjectVersion"},
		{"PutObjectTagging with a get key", ev(7*time.Minute, "PutObjectTagging", "acme/in/a.mp4"), correlate.OutsideGrant, true, getID, ""},
		{"PutObject in grant", ev(5*time.Minute, "PutObject", "acme/out/r.mp4", withKey(put.AccessKeyID)), correlate.OK, false, putID, ""},
		{"CreateMultipartUpload", ev(5*time.Minute, "CreateMultipartUpload", "acme/out/big.mp4", withKey(put.AccessKeyID)), correlate.OK, false, putID, ""},
		{"UploadPart", ev(5*time.Minute, "UploadPart", "acme/out/big.mp4", withKey(put.AccessKeyID)), correlate.OK, false, putID, ""},
		{"CompleteMultipartUpload", ev(5*time.Minute, "CompleteMultipartUpload", "acme/out/big.mp4", withKey(put.AccessKeyID)), correlate.OK, false, putID, ""},
		{"AbortMultipartUpload", ev(5*time.Minute, "AbortMultipartUpload", "acme/out/big.mp4", withKey(put.AccessKeyID)), correlate.OK, false, putID, ""},
		{"ListParts is not in a put grant", ev(5*time.Minute, "ListParts", "acme/out/big.mp4", withKey(put.AccessKeyID), denied), correlate.DeniedAsExpected, false, putID, ""},
		{"CopyObject reads a source the put grant does not cover", ev(5*time.Minute, "CopyObject", "acme/out/c.mp4", withKey(put.AccessKeyID),
			func(e *cloudtrailtest.Event) { e.CopySource = "media/acme/in/a.mp4" }), correlate.OutsideGrant, true, putID, "s3:PutObject+s3:GetObject"},
		{"PutObject outside the put prefix, refused", ev(5*time.Minute, "PutObject", "acme/in/overwrite.mp4", withKey(put.AccessKeyID), denied), correlate.DeniedAsExpected, false, putID, ""},
		{"after expiry", ev(2*time.Hour, "GetObject", "acme/in/a.mp4", func(e *cloudtrailtest.Event) { e.ErrorCode = "ExpiredToken" }), correlate.AfterExpiry, false, getID, "after the credentials of"},
		{"within the skew after expiry", ev(61*time.Minute, "GetObject", "acme/in/a.mp4"), correlate.OK, false, getID, ""},
		{"before issue", ev(-10*time.Minute, "GetObject", "acme/in/a.mp4"), correlate.BeforeIssue, true, getID, "before"},
		{"before issue, refused", ev(-10*time.Minute, "GetObject", "acme/in/a.mp4", func(e *cloudtrailtest.Event) { e.ErrorCode = "InvalidAccessKeyId" }), correlate.BeforeIssue, false, getID, "before"},
		{"after expiry, succeeded", ev(2*time.Hour, "GetObject", "acme/in/a.mp4"), correlate.AfterExpiry, true, getID, "after the credentials of"},
		{"unmappable event name", ev(5*time.Minute, "DeleteObjects", ""), correlate.Unverifiable, true, getID, "no IAM mapping is known for S3 event DeleteObjects"},
		{"unmappable and refused", ev(5*time.Minute, "PutBucketPolicy", "", denied), correlate.Unverifiable, false, getID, ""},
		{"unknown key of a tenant role", ev(5*time.Minute, "GetObject", "acme/in/a.mp4", withKey("ASIAOTHERWAY00000009")), correlate.UnknownKey, true, "", "tenant acme"},
		{"unknown key, refused, still unknown", ev(5*time.Minute, "GetObject", "acme/x", withKey("ASIAOTHERWAY00000009"), denied), correlate.UnknownKey, true, "", ""},
		{"unknown key named only by the assumed-role ARN", ev(5*time.Minute, "GetObject", "acme/in/a", func(e *cloudtrailtest.Event) {
			ui := sess("ASIAOTHERWAY00000010").UserIdentity()
			delete(ui, "sessionContext")
			e.Identity = ui
		}), correlate.UnknownKey, true, "", ""},
		{"another role", ev(5*time.Minute, "GetObject", "acme/in/a", func(e *cloudtrailtest.Event) {
			e.Session = cloudtrailtest.Session{AccessKeyID: "ASIAOTHERROLE0000001", RoleARN: "arn:aws:iam::222222222222:role/other", SessionName: "x"}
		}), correlate.NotDispenser, false, "", ""},
		{"an IAM user", ev(5*time.Minute, "GetObject", "acme/in/a", func(e *cloudtrailtest.Event) {
			e.Identity = cloudtrailtest.IAMUser("222222222222", "backup", "AKIAIOSFODNN7EXAMPLE")
		}), correlate.NotDispenser, false, "", ""},
		{"anonymous", ev(5*time.Minute, "GetObject", "acme/in/a", func(e *cloudtrailtest.Event) {
			e.Identity = map[string]any{"type": "AWSAccount", "principalId": "", "accountId": "anonymous"}
		}), correlate.NotDispenser, false, "", ""},
	}
	var recs []map[string]any
	for _, c := range cases {
		recs = append(recs, c.rec)
	}
	// Not S3, and an S3 record without userIdentity: neither is judged.
	sts := ev(0, "AssumeRole", "")
	sts["eventSource"] = "sts.amazonaws.com"
	noID := cloudtrailtest.Event{Time: t0, Name: "GetObject", Bucket: "media", Key: "k", NoIdentity: true}.Record()
	recs = append(recs, sts, noID)

	events, sum := run(t, store, correlate.Options{ClockSkew: 2 * time.Minute}, recs...)
	if len(events) != len(cases) {
		t.Fatalf("%d events for %d cases", len(events), len(cases))
	}
	for i, c := range cases {
		e := events[i]
		got := ""
		if e.Record != nil {
			got = e.Record.RecordID
		}
		if e.Verdict != c.verdict || e.Critical != c.critical || got != c.record || !strings.Contains(e.Reason, c.reason) {
			t.Errorf("%s: verdict %s critical %v record %q reason %q; want %s %v %q %q", c.name, e.Verdict, e.Critical, got, e.Reason, c.verdict, c.critical, c.record, c.reason)
		}
	}
	first := events[0]
	if first.Record.TaskID != "task-get" || first.Record.JobID != "job-1" || first.Record.Principal != "worker-1" || first.Record.Org != "acme" ||
		first.Record.Operation != "get" || first.Record.Location != "s3://media/acme/in/" || first.Record.PolicySHA256 != get.PolicySHA256 ||
		first.Object != "s3://media/acme/in/a.mp4" || first.Outcome != "success" || first.SessionARN == "" || first.RoleARN != roleARN ||
		first.BytesOut != 100 || first.Source.Source != "test.json.gz" || first.Source.Index != 0 || first.Actions[0] != "s3:GetObject" {
		t.Errorf("first event %+v %+v", first, first.Record)
	}
	if sum.Records != len(recs) || sum.OtherEvents != 1 || sum.S3Events != len(cases) || sum.ProblemCount != 1 ||
		!strings.Contains(sum.Problems[0].Message, "without userIdentity") || sum.Problems[0].Index != len(recs)-1 {
		t.Errorf("summary %+v", sum)
	}
	crit := 0
	for _, c := range cases {
		if c.critical {
			crit++
		}
	}
	if sum.Critical != crit || sum.Verdicts[correlate.OutsideGrant] != 6 || sum.Verdicts[correlate.UnknownKey] != 3 {
		t.Errorf("summary counts %+v", sum)
	}
	// Six distinct keys (the dispenser's two, two unknown, two foreign;
	// the anonymous call has none): one query each, the cache answers
	// the rest.
	if sum.TrailQueries != 6 {
		t.Errorf("trail queries %d, want 6 (one per distinct key)", sum.TrailQueries)
	}
}

// TestRevokedAndSharedKeys: a key served from the credential cache to two
// tasks is attributed to the task holding it at the event time, and a use
// after a revocation is noted.
func TestRevokedAndSharedKeys(t *testing.T) {
	const key = "ASIASHAREDKEY0000001"
	a := issued(t, key, "task-a", scope.OpGet, "acme/in/", t0)
	b := a
	b.Time, b.TaskID, b.RequestID = t0.Add(10*time.Minute), "task-b", "req-b"
	rev := audit.Record{Time: t0.Add(20 * time.Minute), Outcome: audit.Revoked, Operation: "revocation.add", Principal: "admin", AccessKeyID: key, PackedPolicySize: -1}
	store, ids := trail(t, a, b, rev)
	mk := func(at time.Duration) map[string]any {
		return cloudtrailtest.Event{Time: t0.Add(at), Name: "GetObject", Bucket: "media", Key: "acme/in/x", Session: sess(key)}.Record()
	}
	events, _ := run(t, store, correlate.Options{}, mk(5*time.Minute), mk(15*time.Minute), mk(25*time.Minute))
	if events[0].Record.RecordID != ids[0] || len(events[0].AlsoIssued) != 0 {
		t.Errorf("before the second task got the key: %+v", events[0])
	}
	if events[1].Record.RecordID != ids[1] || len(events[1].AlsoIssued) != 1 || events[1].AlsoIssued[0] != ids[0] {
		t.Errorf("both tasks hold the key: %+v", events[1])
	}
	if len(events[1].Notes) != 0 || len(events[2].Notes) != 1 || !strings.Contains(events[2].Notes[0], "revoked") {
		t.Errorf("notes %v / %v", events[1].Notes, events[2].Notes)
	}
}

// TestDenseKey: a key with more issued records than one page is looked up
// around each event's time.
func TestDenseKey(t *testing.T) {
	const key = "AKIASTATICKEY0000001"
	var recs []audit.Record
	for i := 0; i < audit.MaxLimit+5; i++ {
		r := issued(t, key, fmt.Sprintf("task-%d", i), scope.OpGet, "acme/in/", t0.Add(time.Duration(i)*time.Minute))
		recs = append(recs, r)
	}
	store, ids := trail(t, recs...)
	rec := cloudtrailtest.Event{Time: t0.Add(3*time.Minute + 30*time.Second), Name: "GetObject", Bucket: "media", Key: "acme/in/x",
		Identity: cloudtrailtest.IAMUser("222222222222", "static", key)}.Record()
	events, _ := run(t, store, correlate.Options{}, rec)
	e := events[0]
	if e.Verdict != correlate.OK || e.Record.RecordID != ids[3] || len(e.AlsoIssued) != 3 || len(e.Notes) != 1 {
		t.Fatalf("dense key: %+v", e)
	}
}

// TestCacheBounded: the access-key cache is bounded; an evicted key is
// looked up again.
func TestCacheBounded(t *testing.T) {
	a := issued(t, "ASIAKEYA000000000001", "a", scope.OpGet, "acme/in/", t0)
	b := issued(t, "ASIAKEYB000000000001", "b", scope.OpGet, "acme/in/", t0)
	store, _ := trail(t, a, b)
	mk := func(key string) map[string]any {
		return cloudtrailtest.Event{Time: t0.Add(time.Minute), Name: "GetObject", Bucket: "media", Key: "acme/in/x", Session: sess(key)}.Record()
	}
	q := &countingTrail{Querier: store}
	_, sum := run(t, q, correlate.Options{CacheWeight: 1}, mk(a.AccessKeyID), mk(a.AccessKeyID), mk(b.AccessKeyID), mk(a.AccessKeyID))
	if q.n != 3 || sum.TrailQueries != 3 {
		t.Fatalf("queries %d (%d), want 3: a, b, a again after eviction", q.n, sum.TrailQueries)
	}
	q.n = 0
	_, _ = run(t, q, correlate.Options{}, mk(a.AccessKeyID), mk(a.AccessKeyID), mk(b.AccessKeyID), mk(a.AccessKeyID))
	if q.n != 2 {
		t.Fatalf("queries %d with room for both keys, want 2", q.n)
	}
}

// TestUnverifiablePolicy: a recorded policy the evaluator refuses is
// never judged in or out of the grant.
func TestUnverifiablePolicy(t *testing.T) {
	r := issued(t, "ASIAODDPOLICY0000001", "odd", scope.OpGet, "acme/in/", t0)
	r.Policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"s3:DeleteObject","Resource":"*"}]}`
	r.PolicySHA256 = "odd"
	store, _ := trail(t, r)
	rec := cloudtrailtest.Event{Time: t0.Add(time.Minute), Name: "GetObject", Bucket: "media", Key: "acme/in/x", Session: sess(r.AccessKeyID)}.Record()
	events, sum := run(t, store, correlate.Options{}, rec)
	if e := events[0]; e.Verdict != correlate.Unverifiable || !e.Critical || !strings.Contains(e.Reason, "cannot be evaluated") || sum.Critical != 1 {
		t.Fatalf("%+v", e)
	}
}

// TestWindow: --since/--until select events by eventTime.
func TestWindow(t *testing.T) {
	store, _ := trail(t, issued(t, "ASIAWINDOW0000000001", "w", scope.OpGet, "acme/in/", t0))
	mk := func(at time.Duration) map[string]any {
		return cloudtrailtest.Event{Time: t0.Add(at), Name: "GetObject", Bucket: "media", Key: "acme/in/x", Session: sess("ASIAWINDOW0000000001")}.Record()
	}
	events, sum := run(t, store, correlate.Options{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, mk(0), mk(time.Minute), mk(2*time.Minute), mk(3*time.Minute))
	if len(events) != 2 || sum.OutsideWindow != 2 || !events[0].Time.Equal(t0.Add(time.Minute)) {
		t.Fatalf("events %d, outside %d", len(events), sum.OutsideWindow)
	}
}

// failingTrail cannot be read.
type failingTrail struct{}

func (failingTrail) Query(context.Context, audit.Filter) (audit.Page, error) {
	return audit.Page{}, errors.New("database is locked")
}

// TestTrailFailure stops the run: a verdict needs the trail.
func TestTrailFailure(t *testing.T) {
	c, _ := correlate.New(correlate.Options{Trail: failingTrail{}})
	rd := &cloudtrail.Reader{}
	doc := cloudtrailtest.Document(cloudtrailtest.Event{Time: t0, Name: "GetObject", Bucket: "media", Key: "k", Session: sess("ASIAANYKEY0000000001")}.Record())
	_, err := correlate.Correlate(context.Background(), c, rd, func(v cloudtrail.Visitor) error {
		return rd.ScanStream(context.Background(), "x", bytes.NewReader(doc), v)
	}, correlate.RunOptions{}, correlate.NewJSONWriter(&bytes.Buffer{}, correlate.ByEvent))
	if err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Fatalf("err %v", err)
	}
	if _, err := correlate.New(correlate.Options{}); err == nil {
		t.Fatal("a correlator without a trail")
	}
}
