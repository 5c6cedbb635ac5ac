package correlate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/vtk/dispenser/internal/cloudtrail"
)

// By selects what a run reports: every event, or one summary per task.
type By string

// Report granularities.
const (
	ByEvent By = "event"
	ByTask  By = "task"
)

// ParseBy reads a --by value.
func ParseBy(s string) (By, error) {
	switch By(s) {
	case "", ByEvent:
		return ByEvent, nil
	case ByTask:
		return ByTask, nil
	}
	return "", fmt.Errorf("by must be event or task")
}

// Writer renders a run.
type Writer interface {
	// Event writes one judged event (by event only).
	Event(e *Event) error
	// Finish writes the task summaries (by task; nil by event) and the
	// run's summary.
	Finish(tasks []*Task, s Summary) error
}

// RunOptions select what Correlate reports.
type RunOptions struct {
	By By
	// All reports not_dispenser events too (they are always counted).
	All bool
	// OnProblem, when set, is told about each problem as it is found.
	OnProblem func(cloudtrail.Problem)
}

// Correlate judges every record scan delivers and writes the result. scan
// is rd's Scan or ScanStream bound to its inputs; rd's problems are
// counted in the summary. The error is a trail or writer failure: the
// report is then incomplete.
func Correlate(ctx context.Context, c *Correlator, rd *cloudtrail.Reader, scan func(cloudtrail.Visitor) error, opt RunOptions, w Writer) (Summary, error) {
	c.onProblem = opt.OnProblem
	rd.OnProblem = c.Problem
	var tasks *Tasks
	if opt.By == ByTask {
		tasks = NewTasks()
	}
	err := scan(func(pos cloudtrail.Position, rec *cloudtrail.Record) error {
		e, err := c.Judge(ctx, pos, rec)
		if err != nil || e == nil {
			return err
		}
		if tasks != nil {
			tasks.Add(e)
			return nil
		}
		if e.Verdict == NotDispenser && !opt.All {
			return nil
		}
		return w.Event(e)
	})
	s := c.Summary(rd.Files)
	if err != nil {
		return s, err
	}
	var list []*Task
	if tasks != nil {
		list = tasks.List()
	}
	return s, w.Finish(list, s)
}

// encoder writes compact JSON without HTML escaping (object keys may hold
// '&', '<', '>').
type encoder struct {
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

func newEncoder(w io.Writer) *encoder {
	e := &encoder{w: w}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// write writes prefix, v as JSON (without its newline) and suffix.
func (e *encoder) write(prefix string, v any, suffix string) error {
	e.buf.Reset()
	e.buf.WriteString(prefix)
	if err := e.enc.Encode(v); err != nil {
		return err
	}
	e.buf.Truncate(e.buf.Len() - 1)
	e.buf.WriteString(suffix)
	_, err := e.w.Write(e.buf.Bytes())
	return err
}

// JSONWriter writes one JSON document, streamed: {"events": [...],
// "summary": {...}} by event, {"tasks": [...], "summary": {...}} by task.
// Each event is one line of the events array.
type JSONWriter struct {
	enc     *encoder
	by      By
	started bool
}

// NewJSONWriter returns a JSONWriter on w.
func NewJSONWriter(w io.Writer, by By) *JSONWriter { return &JSONWriter{enc: newEncoder(w), by: by} }

// Event implements Writer.
func (j *JSONWriter) Event(e *Event) error {
	prefix := ",\n"
	if !j.started {
		prefix, j.started = "{\"events\":[\n", true
	}
	return j.enc.write(prefix, e, "")
}

// Finish implements Writer.
func (j *JSONWriter) Finish(tasks []*Task, s Summary) error {
	if j.by == ByTask {
		if tasks == nil {
			tasks = []*Task{}
		}
		if err := j.enc.write("{\"tasks\":", tasks, ",\n"); err != nil {
			return err
		}
		return j.enc.write("\"summary\":", s, "}\n")
	}
	prefix := "\n],\n\"summary\":"
	if !j.started {
		prefix = "{\"events\":[],\n\"summary\":"
	}
	return j.enc.write(prefix, s, "}\n")
}

// NDJSONWriter writes one JSON object per line: each event (or task),
// then {"summary": {...}}.
type NDJSONWriter struct{ enc *encoder }

// NewNDJSONWriter returns an NDJSONWriter on w.
func NewNDJSONWriter(w io.Writer) *NDJSONWriter { return &NDJSONWriter{enc: newEncoder(w)} }

// Event implements Writer.
func (n *NDJSONWriter) Event(e *Event) error { return n.enc.write("", e, "\n") }

// Finish implements Writer.
func (n *NDJSONWriter) Finish(tasks []*Task, s Summary) error {
	for _, t := range tasks {
		if err := n.enc.write("", t, "\n"); err != nil {
			return err
		}
	}
	return n.enc.write("{\"summary\":", s, "}\n")
}
