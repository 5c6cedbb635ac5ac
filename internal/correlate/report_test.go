package correlate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
)

func report(t *testing.T, c *correlate.Correlator, w correlate.Writer, by correlate.By, recs ...map[string]any) correlate.Summary {
	t.Helper()
	rd := &cloudtrail.Reader{}
	doc := cloudtrailtest.Document(recs...)
	s, err := correlate.Correlate(context.Background(), c, rd, func(v cloudtrail.Visitor) error {
		return rd.ScanStream(context.Background(), "doc.json", bytes.NewReader(doc), v)
	}, correlate.RunOptions{By: by}, w)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestByTask builds the forensic timeline of each task.
func TestByTask(t *testing.T) {
	get := issued(t, "ASIATASKGET000000001", "task-get", scope.OpGet, "acme/in/", t0)
	put := issued(t, "ASIATASKPUT000000001", "task-put", scope.OpPut, "acme/out/", t0)
	store, ids := trail(t, get, put)
	mk := func(at time.Duration, name, key, akid string, in, out int64, mod ...func(*cloudtrailtest.Event)) map[string]any {
		e := cloudtrailtest.Event{Time: t0.Add(at), Name: name, Bucket: "media", Key: key, Session: sess(akid), BytesIn: in, BytesOut: out}
		for _, m := range mod {
			m(&e)
		}
		return e.Record()
	}
	recs := []map[string]any{
		mk(2*time.Minute, "GetObject", "acme/in/a.mp4", get.AccessKeyID, 0, 1000),
		mk(3*time.Minute, "GetObject", "acme/in/a.mp4", get.AccessKeyID, 0, 1000),
		mk(4*time.Minute, "GetObject", "acme/in/b.mp4", get.AccessKeyID, 0, 500),
		mk(5*time.Minute, "HeadObject", "acme/in/c.mp4", get.AccessKeyID, 0, 0),
		mk(6*time.Minute, "GetObject", "acme/secret.mp4", get.AccessKeyID, 0, 0, func(e *cloudtrailtest.Event) { e.ErrorCode = "AccessDenied" }),
		mk(1*time.Minute, "CreateMultipartUpload", "acme/out/r.mp4", put.AccessKeyID, 0, 0),
		mk(2*time.Minute, "UploadPart", "acme/out/r.mp4", put.AccessKeyID, 5000, 0),
		mk(3*time.Minute, "CompleteMultipartUpload", "acme/out/r.mp4", put.AccessKeyID, 0, 0),
		mk(4*time.Minute, "PutObject", "acme/out/s.mp4", put.AccessKeyID, 700, 0),
		mk(5*time.Minute, "GetObject", "acme/out/s.mp4", "ASIANOTOURS000000001", 0, 10, func(e *cloudtrailtest.Event) {
			e.Session.RoleARN = "arn:aws:iam::222222222222:role/else"
		}),
	}
	c, _ := correlate.New(correlate.Options{Trail: store, Roles: []correlate.Role{{ARN: roleARN, Org: "acme"}}})
	var out bytes.Buffer
	s := report(t, c, correlate.NewJSONWriter(&out, correlate.ByTask), correlate.ByTask, recs...)
	var doc struct {
		Tasks   []correlate.Task  `json:"tasks"`
		Summary correlate.Summary `json:"summary"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out.Bytes())
	}
	if len(doc.Tasks) != 2 || doc.Summary.S3Events != 10 || s.Verdicts[correlate.NotDispenser] != 1 {
		t.Fatalf("%s", out.Bytes())
	}
	// Ordered by first event: the upload started first.
	p, g := doc.Tasks[0], doc.Tasks[1]
	if p.TaskID != "task-put" || p.Events != 4 || strings.Join(p.ObjectsWritten, ",") != "s3://media/acme/out/r.mp4,s3://media/acme/out/s.mp4" ||
		len(p.ObjectsRead) != 0 || p.BytesIn != 5700 || !p.FirstEvent.Equal(t0.Add(time.Minute)) || !p.LastEvent.Equal(t0.Add(4*time.Minute)) ||
		p.Records[0] != ids[1] || p.Verdicts[correlate.OK] != 4 {
		t.Errorf("put task %+v", p)
	}
	if g.TaskID != "task-get" || g.JobID != "job-1" || g.Principal != "worker-1" || g.Org != "acme" || g.Events != 5 ||
		strings.Join(g.ObjectsRead, ",") != "s3://media/acme/in/a.mp4,s3://media/acme/in/b.mp4" || g.BytesOut != 2500 ||
		g.Verdicts[correlate.DeniedAsExpected] != 1 || g.Critical != 0 || !g.LastEvent.Equal(t0.Add(6*time.Minute)) {
		t.Errorf("get task %+v", g)
	}

	// NDJSON by task: a line per task, then the summary.
	c, _ = correlate.New(correlate.Options{Trail: store})
	out.Reset()
	report(t, c, correlate.NewNDJSONWriter(&out), correlate.ByTask, recs...)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], `{"summary":`) || !strings.Contains(lines[0], `"task_id":"task-put"`) {
		t.Fatalf("ndjson by task:\n%s", out.String())
	}
}

// TestJSONWriterShapes: the JSON document is valid with no events, and
// not_dispenser events are left out unless asked for.
func TestJSONWriterShapes(t *testing.T) {
	store, _ := trail(t, issued(t, "ASIASHAPES0000000001", "x", scope.OpGet, "acme/in/", t0))
	c, _ := correlate.New(correlate.Options{Trail: store})
	var out bytes.Buffer
	foreign := cloudtrailtest.Event{Time: t0, Name: "GetObject", Bucket: "b", Key: "k", Identity: cloudtrailtest.IAMUser("1", "u", "AKIAFOREIGN000000001")}.Record()
	report(t, c, correlate.NewJSONWriter(&out, correlate.ByEvent), correlate.ByEvent, foreign)
	var doc struct {
		Events  []json.RawMessage `json:"events"`
		Summary correlate.Summary `json:"summary"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Events == nil || len(doc.Events) != 0 || doc.Summary.Verdicts[correlate.NotDispenser] != 1 {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	if !strings.Contains(out.String(), `"problems":[]`) {
		t.Errorf("an empty problem list must render as []: %s", out.Bytes())
	}
	mine := cloudtrailtest.Event{Time: t0.Add(time.Minute), Name: "GetObject", Bucket: "media", Key: "acme/in/<&>", Session: sess("ASIASHAPES0000000001")}.Record()
	c, _ = correlate.New(correlate.Options{Trail: store})
	out.Reset()
	report(t, c, correlate.NewJSONWriter(&out, correlate.ByEvent), correlate.ByEvent, mine, foreign, mine)
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc.Events) != 2 || !strings.Contains(out.String(), "acme/in/<&>") {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	if _, err := correlate.ParseBy("job"); err == nil {
		t.Error("--by job accepted")
	}
}

func TestConfig(t *testing.T) {
	var c correlate.Config
	c.ApplyDefaults()
	if c.MaxBodyBytes != 10<<20 || c.Skew() != 2*time.Minute {
		t.Fatalf("defaults %+v", c)
	}
	var p validate.Problems
	c.Validate(&p, "correlate")
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	zero := duration.Duration(0)
	c = correlate.Config{MaxBodyBytes: 10, ClockSkew: &zero}
	c.ApplyDefaults()
	if c.Skew() != 0 {
		t.Fatalf("0s must mean no skew, got %s", c.Skew())
	}
	long := duration.Duration(2 * time.Hour)
	c.ClockSkew = &long
	p = validate.Problems{}
	c.Validate(&p, "correlate")
	msg := p.Err().Error()
	if !strings.Contains(msg, "correlate.max_body_bytes") || !strings.Contains(msg, "correlate.clock_skew") {
		t.Fatalf("problems: %s", msg)
	}
}
