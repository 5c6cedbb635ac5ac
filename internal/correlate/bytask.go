package correlate

import (
	"maps"
	"slices"
	"sort"
	"time"
)

// MaxObjectsListed bounds the objects a task summary lists per direction.
const MaxObjectsListed = 1000

// Task is the forensic timeline of one task: what its credentials did.
type Task struct {
	Org       string `json:"org"`
	Principal string `json:"principal"`
	JobID     string `json:"job_id,omitempty"`
	TaskID    string `json:"task_id,omitempty"`
	// Records are the audit records whose keys the events used.
	Records  []string        `json:"records"`
	Events   int             `json:"events"`
	Verdicts map[Verdict]int `json:"verdicts"`
	Critical int             `json:"critical"`
	// ObjectsRead and ObjectsWritten are the distinct objects of the
	// task's successful reads (GetObject, SelectObjectContent, copy
	// sources) and writes (PutObject, multipart uploads, copies), sorted;
	// ObjectsTruncated is set when more than MaxObjectsListed were seen.
	ObjectsRead      []string `json:"objects_read"`
	ObjectsWritten   []string `json:"objects_written"`
	ObjectsTruncated bool     `json:"objects_truncated,omitempty"`
	// BytesIn and BytesOut sum CloudTrail's bytesTransferredIn/Out.
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	FirstEvent time.Time `json:"first_event"`
	LastEvent  time.Time `json:"last_event"`

	records       map[string]bool
	read, written map[string]bool
}

type taskKey struct{ org, principal, job, task string }

// Tasks aggregates judged events by the task their key was issued to.
// Events not attributed to a dispenser record are not part of any task.
type Tasks struct {
	byKey map[taskKey]*Task
}

// NewTasks returns an empty aggregation.
func NewTasks() *Tasks { return &Tasks{byKey: map[taskKey]*Task{}} }

// Add counts e in its task.
func (ts *Tasks) Add(e *Event) {
	if e.Record == nil {
		return
	}
	r := e.Record
	k := taskKey{r.Org, r.Principal, r.JobID, r.TaskID}
	t := ts.byKey[k]
	if t == nil {
		t = &Task{Org: r.Org, Principal: r.Principal, JobID: r.JobID, TaskID: r.TaskID, Verdicts: map[Verdict]int{},
			records: map[string]bool{}, read: map[string]bool{}, written: map[string]bool{}, FirstEvent: e.Time, LastEvent: e.Time}
		ts.byKey[k] = t
	}
	if len(t.records) < MaxObjectsListed {
		t.records[r.RecordID] = true
	}
	t.Events++
	t.Verdicts[e.Verdict]++
	if e.Critical {
		t.Critical++
	}
	t.BytesIn += e.BytesIn
	t.BytesOut += e.BytesOut
	if e.Time.Before(t.FirstEvent) {
		t.FirstEvent = e.Time
	}
	if e.Time.After(t.LastEvent) {
		t.LastEvent = e.Time
	}
	if e.Outcome != "success" {
		return
	}
	add := func(set map[string]bool, obj string) {
		if obj == "" || set[obj] {
			return
		}
		if len(set) >= MaxObjectsListed {
			t.ObjectsTruncated = true
			return
		}
		set[obj] = true
	}
	switch e.access {
	case accessRead:
		add(t.read, e.Object)
	case accessWrite:
		add(t.written, e.Object)
		add(t.read, e.source)
	}
}

// List returns the tasks ordered by first event (then org, job, task).
func (ts *Tasks) List() []*Task {
	out := make([]*Task, 0, len(ts.byKey))
	for _, t := range ts.byKey {
		t.Records = sortedKeys(t.records)
		t.ObjectsRead = sortedKeys(t.read)
		t.ObjectsWritten = sortedKeys(t.written)
		for _, v := range Verdicts {
			if _, ok := t.Verdicts[v]; !ok {
				t.Verdicts[v] = 0
			}
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.FirstEvent.Equal(b.FirstEvent) {
			return a.FirstEvent.Before(b.FirstEvent)
		}
		if a.Org != b.Org {
			return a.Org < b.Org
		}
		if a.JobID != b.JobID {
			return a.JobID < b.JobID
		}
		return a.TaskID < b.TaskID
	})
	return out
}

// sortedKeys returns the keys of m sorted; never nil, so JSON shows [].
func sortedKeys(m map[string]bool) []string {
	return append(make([]string, 0, len(m)), slices.Sorted(maps.Keys(m))...)
}
