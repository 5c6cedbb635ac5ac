package cloudtrail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
)

var (
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	session = cloudtrailtest.Session{AccessKeyID: "ASIAEXAMPLEKEY000001", RoleARN: "arn:aws:iam::222222222222:role/dispenser/vtk-target",
		SessionName: "dispenser-job-1", SourceIdentity: "worker-1"}
)

func ev(name, key string, at time.Duration) map[string]any {
	return cloudtrailtest.Event{Time: t0.Add(at), Name: name, Bucket: "media", Key: key, Session: session, BytesOut: 42}.Record()
}

// seen is one visited record.
type seen struct {
	pos  cloudtrail.Position
	name string
	key  string
}

func scan(t *testing.T, rd *cloudtrail.Reader, inputs ...string) ([]seen, []cloudtrail.Problem) {
	t.Helper()
	var out []seen
	var problems []cloudtrail.Problem
	rd.OnProblem = func(p cloudtrail.Problem) { problems = append(problems, p) }
	err := rd.Scan(context.Background(), inputs, func(pos cloudtrail.Position, r *cloudtrail.Record) error {
		k := ""
		if r.RequestParameters != nil {
			k = r.RequestParameters.Key
		}
		out = append(out, seen{pos, r.EventName, k})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, problems
}

func write(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScanDeliveredLayout reads a trail's bucket layout: gzipped documents
// in AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD, digest files skipped.
func TestScanDeliveredLayout(t *testing.T) {
	root := t.TempDir()
	f1, err := cloudtrailtest.Deliver(root, "222222222222", "us-east-1", t0, ev("GetObject", "a", 0), ev("HeadObject", "b", time.Second))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := cloudtrailtest.Deliver(root, "222222222222", "eu-west-1", t0.Add(24*time.Hour), ev("PutObject", "c", 0))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f1, filepath.Join("AWSLogs", "222222222222", "CloudTrail", "us-east-1", "2026", "03", "01", "222222222222_CloudTrail_us-east-1_20260301T1200Z_")) {
		t.Fatalf("delivered path %s", f1)
	}
	// Digest files sit next to the logs and are not events.
	write(t, filepath.Join(root, "AWSLogs", "222222222222", "CloudTrail-Digest", "us-east-1", "2026", "03", "01",
		"222222222222_CloudTrail-Digest_us-east-1_trail_us-east-1_20260301T120000Z.json.gz"), cloudtrailtest.Gzip([]byte(`{"awsAccountId":"222222222222"}`)))
	write(t, filepath.Join(root, "README.txt"), []byte("not a log"))

	rd := &cloudtrail.Reader{}
	got, problems := scan(t, rd, root)
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	want := []seen{{cloudtrail.Position{Source: f2, Index: 0}, "PutObject", "c"},
		{cloudtrail.Position{Source: f1, Index: 0}, "GetObject", "a"}, {cloudtrail.Position{Source: f1, Index: 1}, "HeadObject", "b"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if rd.Files != 2 {
		t.Fatalf("files read: %d", rd.Files)
	}
}

// TestScanFields: the fields the correlator reads come through, the
// AssumedRole session context included.
func TestScanFields(t *testing.T) {
	rec := cloudtrailtest.Event{Time: t0, Name: "ListObjects", ListV2: true, Bucket: "media", Prefix: cloudtrailtest.Ptr("acme/in/"),
		Session: session, BytesOut: 1234, SourceIP: "198.51.100.7", ErrorCode: "AccessDenied"}.Record()
	path := write(t, filepath.Join(t.TempDir(), "one.json"), cloudtrailtest.Document(rec))
	var got cloudtrail.Record
	err := (&cloudtrail.Reader{}).Scan(context.Background(), []string{path}, func(_ cloudtrail.Position, r *cloudtrail.Record) error {
		got = *r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	u := got.UserIdentity
	if !got.Time().Equal(t0) || got.EventSource != "s3.amazonaws.com" || got.EventName != "ListObjects" || got.ErrorCode != "AccessDenied" ||
		got.SourceIPAddress != "198.51.100.7" || u == nil || u.Type != "AssumedRole" || u.AccessKeyID != session.AccessKeyID ||
		u.ARN != "arn:aws:sts::222222222222:assumed-role/vtk-target/dispenser-job-1" || u.SessionContext == nil ||
		u.SessionContext.SessionIssuer.ARN != session.RoleARN || u.SessionContext.SourceIdentity != "worker-1" ||
		got.RequestParameters.BucketName != "media" || got.RequestParameters.Prefix == nil || *got.RequestParameters.Prefix != "acme/in/" {
		t.Fatalf("record %+v / %+v", got, u)
	}
	// Without a prefix parameter there is no prefix, not an empty one.
	rec = cloudtrailtest.Event{Time: t0, Name: "ListObjects", Bucket: "media", Session: session}.Record()
	path = write(t, filepath.Join(t.TempDir(), "two.json"), cloudtrailtest.Document(rec))
	_ = (&cloudtrail.Reader{}).Scan(context.Background(), []string{path}, func(_ cloudtrail.Position, r *cloudtrail.Record) error {
		got = *r
		return nil
	})
	if got.RequestParameters.Prefix != nil {
		t.Fatalf("prefix %q for a request without one", *got.RequestParameters.Prefix)
	}
}

// TestScanProblems: malformed input is reported with its file and record
// index, and the reading goes on.
func TestScanProblems(t *testing.T) {
	dir := t.TempDir()
	good := write(t, filepath.Join(dir, "a-good.json.gz"), cloudtrailtest.Gzip(cloudtrailtest.Document(ev("GetObject", "g1", 0))))
	// A truncated gzip stream: the first record survives.
	full := cloudtrailtest.Gzip(cloudtrailtest.Document(ev("GetObject", "t1", 0), ev("GetObject", "t2", 0), ev("GetObject", "t3", 0)))
	trunc := write(t, filepath.Join(dir, "b-truncated.json.gz"), full[:len(full)-40])
	// Invalid JSON in the middle of Records: the records before it count.
	doc := string(cloudtrailtest.Document(ev("GetObject", "s1", 0), ev("GetObject", "s2", 0)))
	broken := write(t, filepath.Join(dir, "c-syntax.json"), []byte(strings.Replace(doc, `},{"additionalEventData"`, `},{"additionalEventData" x`, 1)))
	// Records of the wrong shape, and one without userIdentity (kept: it
	// is the correlator that needs userIdentity).
	noIdentity := cloudtrailtest.Event{Time: t0, Name: "GetObject", Bucket: "media", Key: "n", NoIdentity: true}.Record()
	badTime := ev("GetObject", "bt", 0)
	badTime["eventTime"] = 5
	noName := ev("GetObject", "nn", 0)
	delete(noName, "eventName")
	shapes := write(t, filepath.Join(dir, "d-shapes.json"), cloudtrailtest.Document(badTime, noName, ev("GetObject", "ok", 0), noIdentity))
	// NDJSON with a bad line.
	nd := cloudtrailtest.NDJSON(ev("GetObject", "l1", 0))
	nd = append(nd, []byte("{not json}\n\n")...)
	nd = append(nd, cloudtrailtest.NDJSON(ev("GetObject", "l4", 0))...)
	lines := write(t, filepath.Join(dir, "e-lines.ndjson"), nd)
	missing := filepath.Join(dir, "missing.json.gz")
	notGzip := write(t, filepath.Join(dir, "f-badgzip.json.gz"), []byte{0x1f, 0x8b, 0, 0, 1, 2, 3})
	empty := write(t, filepath.Join(dir, "g-empty.json.gz"), nil)

	got, problems := scan(t, &cloudtrail.Reader{}, good, trunc, broken, shapes, lines, missing, notGzip, empty)
	var keys []string
	for _, s := range got {
		keys = append(keys, s.key)
	}
	if strings.Join(keys, ",") != "g1,t1,t2,s1,ok,n,l1,l4" {
		t.Fatalf("records read: %v", keys)
	}
	want := []string{
		trunc + ": record 2: truncated",
		broken + ": record 1: invalid character 'x'",
		shapes + ": record 0: malformed record: eventTime has the wrong type",
		shapes + ": record 1: malformed record: no eventName",
		lines + ": line 2: not a JSON record",
		missing + ": stat: no such file or directory",
		notGzip + ": gzip:",
		empty + ": empty input",
	}
	if len(problems) != len(want) {
		t.Fatalf("problems: %v", problems)
	}
	for i, p := range problems {
		if !strings.HasPrefix(p.String(), want[i]) {
			t.Errorf("problem %d = %q, want prefix %q", i, p, want[i])
		}
	}
}

// TestScanStdinAndEnvelope reads "-" and unwraps EventBridge envelopes.
func TestScanStdinAndEnvelope(t *testing.T) {
	// The envelope's own resources are ARN strings, the record's objects.
	env, _ := json.Marshal(map[string]any{"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.s3",
		"resources": []string{"arn:aws:s3:::media"},
		"detail":    ev("PutObject", "from-eventbridge", 0)})
	in := append(cloudtrailtest.NDJSON(ev("GetObject", "plain", 0)), env...)
	got, problems := scan(t, &cloudtrail.Reader{Stdin: bytes.NewReader(cloudtrailtest.Gzip(in))}, "-")
	if len(problems) != 0 || len(got) != 2 || got[0].key != "plain" || got[1].key != "from-eventbridge" || got[1].pos.Source != "-" || !got[1].pos.Line || got[1].pos.Index != 2 {
		t.Fatalf("got %v, problems %v", got, problems)
	}
}

// TestScanVisitorError stops the reading.
func TestScanVisitorError(t *testing.T) {
	path := write(t, filepath.Join(t.TempDir(), "x.json"), cloudtrailtest.Document(ev("GetObject", "a", 0), ev("GetObject", "b", 0)))
	stop := errors.New("stop")
	n := 0
	err := (&cloudtrail.Reader{}).Scan(context.Background(), []string{path}, func(cloudtrail.Position, *cloudtrail.Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("err %v after %d records", err, n)
	}
	if err := (&cloudtrail.Reader{}).Scan(context.Background(), nil, nil); !errors.Is(err, cloudtrail.ErrNoInput) {
		t.Fatalf("no inputs: %v", err)
	}
}

// generator streams a {"Records": [...]} document of n records without
// ever holding it.
func generator(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		one, _ := json.Marshal(ev("GetObject", "acme/in/some/object/key.mp4", 0))
		_, _ = pw.Write([]byte(`{"Records":[`))
		for i := 0; i < n; i++ {
			if i > 0 {
				_, _ = pw.Write([]byte(","))
			}
			if _, err := pw.Write(one); err != nil {
				return
			}
		}
		_ = pw.CloseWithError(func() error { _, err := pw.Write([]byte(`]}`)); return err }())
	}()
	return pr
}

// TestScanStreams: memory stays flat whatever the input size (one record
// at a time is decoded).
func TestScanStreams(t *testing.T) {
	const n = 20000 // about 40 MB of JSON
	runtime.GC()
	var peak uint64
	count := 0
	err := (&cloudtrail.Reader{}).ScanStream(context.Background(), "gen", generator(n), func(cloudtrail.Position, *cloudtrail.Record) error {
		count++
		if count%1000 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		return nil
	})
	if err != nil || count != n {
		t.Fatalf("read %d of %d: %v", count, n, err)
	}
	if peak > 32<<20 {
		t.Fatalf("heap in use reached %d MiB reading a 40 MB stream", peak>>20)
	}
}

// lowerKeys lower-cases every object key, as Athena's column names are.
func lowerKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range x {
			out[strings.ToLower(k)] = lowerKeys(val)
		}
		return out
	case []any:
		for i := range x {
			x[i] = lowerKeys(x[i])
		}
	}
	return v
}

// TestScanAthenaExport reads records as an Athena UNLOAD of a CloudTrail
// table writes them: lower-case column names, requestparameters and
// additionaleventdata as JSON strings.
func TestScanAthenaExport(t *testing.T) {
	rec := ev("GetObject", "acme/in/athena.mp4", 0)
	b, _ := json.Marshal(rec)
	var generic map[string]any
	_ = json.Unmarshal(b, &generic)
	athena := lowerKeys(generic).(map[string]any)
	for _, k := range []string{"requestparameters", "additionaleventdata"} {
		s, _ := json.Marshal(generic[map[string]string{"requestparameters": "requestParameters", "additionaleventdata": "additionalEventData"}[k]])
		athena[k] = string(s)
	}
	bad := lowerKeys(generic).(map[string]any)
	bad["requestparameters"] = `{"bucketName": 7}`
	path := write(t, filepath.Join(t.TempDir(), "athena.json"), cloudtrailtest.NDJSON(athena, bad))
	var got []cloudtrail.Record
	var problems []cloudtrail.Problem
	rd := &cloudtrail.Reader{OnProblem: func(p cloudtrail.Problem) { problems = append(problems, p) }}
	err := rd.Scan(context.Background(), []string{path}, func(_ cloudtrail.Position, r *cloudtrail.Record) error {
		got = append(got, *r)
		return nil
	})
	if err != nil || len(got) != 1 || len(problems) != 1 || !strings.Contains(problems[0].String(), "line 2: malformed record: requestParameters") {
		t.Fatalf("%v %d %v", err, len(got), problems)
	}
	r := got[0]
	if r.RequestParameters.Key != "acme/in/athena.mp4" || r.RequestParameters.BucketName != "media" || r.AdditionalEventData.BytesTransferredOut != 42 ||
		r.UserIdentity.AccessKeyID != session.AccessKeyID || r.UserIdentity.SessionContext.SessionIssuer.ARN != session.RoleARN {
		t.Fatalf("%+v %+v", r, r.UserIdentity)
	}
}

// hugeRecord streams a {"Records": [...]} document whose second record
// holds a string of n bytes, without ever holding it.
func hugeRecord(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		first, _ := json.Marshal(ev("GetObject", "before", 0))
		big := ev("GetObject", "huge", 0)
		big["userAgent"] = "@@"
		b, _ := json.Marshal(big)
		head, tail, _ := bytes.Cut(b, []byte("@@"))
		last, _ := json.Marshal(ev("GetObject", "after", 0))
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		parts := [][]byte{[]byte(`{"Records":[`), first, []byte(","), head}
		for _, p := range parts {
			if _, err := pw.Write(p); err != nil {
				return
			}
		}
		for written := 0; written < n; written += len(chunk) {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_ = pw.CloseWithError(func() error {
			_, err := pw.Write(append(append(append(tail, ','), last...), []byte(`]}`)...))
			return err
		}())
	}()
	return pr
}

// TestScanHugeRecord: one record of a document is bounded like one line of
// a file of one record per line (CloudTrail events are at most 256 KB): a
// larger one is a problem, not a buffer as large as the input.
func TestScanHugeRecord(t *testing.T) {
	var problems []cloudtrail.Problem
	var keys []string
	rd := &cloudtrail.Reader{MaxLine: 1 << 20, OnProblem: func(p cloudtrail.Problem) { problems = append(problems, p) }}
	err := rd.ScanStream(context.Background(), "huge", hugeRecord(8<<20), func(_ cloudtrail.Position, r *cloudtrail.Record) error {
		keys = append(keys, r.RequestParameters.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "before" || len(problems) != 1 || !strings.HasPrefix(problems[0].String(), "huge: record 1: a record is longer than 1048576 bytes") {
		t.Fatalf("records %v, problems %v", keys, problems)
	}
	// Whitespace between records is bounded too (the decoder buffers it
	// while looking for the next value).
	problems, keys = nil, nil
	first, _ := json.Marshal(ev("GetObject", "before", 0))
	spaces := io.MultiReader(strings.NewReader(`{"Records":[`+string(first)+","), io.LimitReader(zeros{' '}, 8<<20), strings.NewReader("]}"))
	if err := rd.ScanStream(context.Background(), "spaces", spaces, func(_ cloudtrail.Position, r *cloudtrail.Record) error {
		keys = append(keys, r.RequestParameters.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "before" || len(problems) != 1 || !strings.Contains(problems[0].Message, "a record is longer than 1048576 bytes") {
		t.Fatalf("records %v, problems %v", keys, problems)
	}
}

// zeros repeats one byte forever.
type zeros struct{ b byte }

func (z zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = z.b
	}
	return len(p), nil
}

// TestScanMaxBytes: MaxBytes bounds a stream after decompression, a
// gzipped one included; a stream of exactly MaxBytes is read whole.
func TestScanMaxBytes(t *testing.T) {
	doc := cloudtrailtest.Document(ev("GetObject", "a", 0), ev("GetObject", "b", 0))
	for _, c := range []struct {
		name string
		in   []byte
		max  int64
		want error
	}{
		{"exactly the limit", doc, int64(len(doc)), nil},
		{"one byte over", doc, int64(len(doc)) - 1, cloudtrail.ErrTooLarge},
		{"gzipped, exactly the limit", cloudtrailtest.Gzip(doc), int64(len(doc)), nil},
		{"gzipped, over", cloudtrailtest.Gzip(doc), int64(len(doc)) - 1, cloudtrail.ErrTooLarge},
	} {
		n := 0
		err := (&cloudtrail.Reader{MaxBytes: c.max}).ScanStream(context.Background(), c.name, bytes.NewReader(c.in), func(cloudtrail.Position, *cloudtrail.Record) error {
			n++
			return nil
		})
		if !errors.Is(err, c.want) || (c.want == nil && n != 2) {
			t.Errorf("%s: %v after %d records, want %v", c.name, err, n, c.want)
		}
	}
}
