package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// Store appends records durably. It is what the Writer group-commits into.
type Store interface {
	// Append seals recs onto the store's log in one transaction and returns
	// after it is durable (committed and synced). On any error nothing of
	// the batch is in the log.
	Append(ctx context.Context, recs []Record) ([]Entry, error)
}

// Querier answers the admin query API.
type Querier interface {
	// Query returns the records matching f, newest first, and the cursor of
	// the next page ("" on the last page). A bad cursor is ErrBadCursor.
	Query(ctx context.Context, f Filter) (Page, error)
}

// LogReader reads logs for verification and proofs.
type LogReader interface {
	// Logs lists every log (shard) in the trail.
	Logs(ctx context.Context) ([]string, error)
	// Head is the stored head of log (zero for an unknown log).
	Head(ctx context.Context, log string) (Head, error)
	// Scan calls fn for each stored entry of log with seq >= from, in seq
	// order, with the bytes exactly as stored.
	Scan(ctx context.Context, log string, from int64, fn func(Row) error) error
	// Body returns one stored entry; ErrNotFound when absent.
	Body(ctx context.Context, log string, seq int64) ([]byte, error)
	// ReadHashes reads stored Merkle hashes of log (tlog indexes).
	ReadHashes(ctx context.Context, log string, idx []int64) ([]tlog.Hash, error)
	// ReadHashRange returns the stored Merkle hashes of log whose index is
	// in [lo, hi), in index order. Verify compares every one with the hash
	// it recomputes from the entries.
	ReadHashRange(ctx context.Context, log string, lo, hi int64) ([]StoredHash, error)
	// Strays calls fn for every row of a table derived from the logs (a
	// query index, the indexer's cursor) that no entry accounts for: rows
	// a query would return although no entry stands behind them, or state
	// that would make the store skip entries. With full false it checks
	// only what costs no more than the rows it finds (for an incremental
	// verify): on SQLite, index rows above every entry's id. A store
	// without derived tables calls fn for none.
	Strays(ctx context.Context, full bool, fn func(Stray) error) error
}

// Stray is a derived row no entry accounts for.
type Stray struct {
	// Log is the log the row names ("" when it names none).
	Log string
	// Problem says what the row is and what it would do, for reports.
	Problem string
}

// CheckpointStore keeps signed checkpoints next to the log.
type CheckpointStore interface {
	// PutCheckpoint stores a signed checkpoint of log at size.
	PutCheckpoint(ctx context.Context, log string, size int64, signed []byte) error
	// LatestCheckpoint returns the newest stored checkpoint of log, or nil.
	LatestCheckpoint(ctx context.Context, log string) ([]byte, error)
	// CheckpointAt returns the stored checkpoint of log at size, or nil.
	CheckpointAt(ctx context.Context, log string, size int64) ([]byte, error)
}

// Pruner removes entries past retention. Pruning entries below P keeps
// entry P-1 (the boundary) and P's signed checkpoint, so verification
// resumes at P exactly as it resumes at an anchored checkpoint.
type Pruner interface {
	// FirstSeqSince returns the lowest seq of log whose time is at or
	// after t, or the log size when there is none.
	FirstSeqSince(ctx context.Context, log string, t time.Time) (int64, error)
	// Prune records P as the log's prune floor and deletes the entries
	// below P-1. The append-only guard rails allow exactly these deletes.
	Prune(ctx context.Context, log string, p int64) (int64, error)
	// PrunedBefore returns the prune floor of log (0 when never pruned).
	PrunedBefore(ctx context.Context, log string) (int64, error)
}

// Trail is everything a complete store offers.
type Trail interface {
	Store
	Querier
	LogReader
	CheckpointStore
	Pruner
	// Close releases the store.
	Close() error
}

// Row is one stored entry as Scan reads it.
type Row struct {
	Seq  int64
	Body []byte // the encoded entry, verbatim
	Hash []byte // the stored chain hash column (SHA-256 of Body when intact)
	// Copies are the query columns the store keeps for this entry outside
	// Body. Queries select rows by them, so an edited copy can hide an
	// entry from a query; verify compares each with the entry's bytes.
	Copies []IndexCopy
}

// IndexCopy is one stored copy of an entry's query columns.
type IndexCopy struct {
	Where string // which copy, for reports ("audit_records", "audit_index")
	// Missing reports that the entry has no row in this copy although it
	// should (it would not be found by a query).
	Missing bool
	Fields  IndexFields
}

// IndexFields are the query columns of an entry.
type IndexFields struct {
	Log         string
	Seq         int64
	TimeNs      int64
	Outcome     string
	Org         string
	Principal   string
	JobID       string
	TaskID      string
	AccessKeyID string
	Bucket      string
}

// FieldsOf returns the query columns of e as every store copies them.
func FieldsOf(e Entry) IndexFields {
	r := e.Record
	return IndexFields{Log: e.Log, Seq: e.Seq, TimeNs: TimeKey(r.Time), Outcome: string(r.Outcome), Org: r.Org,
		Principal: r.Principal, JobID: r.JobID, TaskID: r.TaskID, AccessKeyID: r.AccessKeyID, Bucket: r.Bucket}
}

// Diff names the fields of got that differ from want.
func (want IndexFields) Diff(got IndexFields) []string {
	var out []string
	for _, f := range []struct {
		name string
		eq   bool
	}{
		{"log", want.Log == got.Log}, {"seq", want.Seq == got.Seq}, {"time_ns", want.TimeNs == got.TimeNs},
		{"outcome", want.Outcome == got.Outcome}, {"org", want.Org == got.Org}, {"principal", want.Principal == got.Principal},
		{"job_id", want.JobID == got.JobID}, {"task_id", want.TaskID == got.TaskID},
		{"access_key_id", want.AccessKeyID == got.AccessKeyID}, {"bucket", want.Bucket == got.Bucket},
	} {
		if !f.eq {
			out = append(out, f.name)
		}
	}
	return out
}

// ErrNotFound is returned for a record that does not exist.
var ErrNotFound = errors.New("audit: record not found")

// ErrBadCursor is returned for a cursor this trail did not issue.
var ErrBadCursor = errors.New("audit: invalid cursor")

// MaxLimit bounds one query page.
const MaxLimit = 1000

// Filter selects records; empty fields match everything.
type Filter struct {
	Org, Principal, JobID, TaskID, AccessKeyID, Bucket string
	Outcome                                            Outcome
	// Since is inclusive, Until exclusive; zero means unbounded.
	Since, Until time.Time
	// Limit is the page size (1..MaxLimit; 0 means 100).
	Limit int
	// Cursor continues a previous page.
	Cursor string
}

// Page is one page of query results.
type Page struct {
	Records []Record `json:"records"`
	Next    string   `json:"next_cursor,omitempty"`
}

// Position orders records newest first: by time, then log, then seq.
type Position struct {
	TimeNs int64
	Log    string
	Seq    int64
}

// Cursor encodes p as an opaque page cursor.
func (p Position) Cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.TimeNs, 10) + "|" + p.Log + "|" + strconv.FormatInt(p.Seq, 10)))
}

// ParseCursor decodes a cursor made by Position.Cursor.
func ParseCursor(c string) (Position, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return Position{}, ErrBadCursor
	}
	parts := strings.Split(string(b), "|")
	if len(parts) != 3 || !ValidLogName(parts[1]) {
		return Position{}, ErrBadCursor
	}
	t, err1 := strconv.ParseInt(parts[0], 10, 64)
	s, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return Position{}, ErrBadCursor
	}
	return Position{TimeNs: t, Log: parts[1], Seq: s}, nil
}

// Normalize checks f and fills the default limit.
func (f *Filter) Normalize() error {
	if f.Limit == 0 {
		f.Limit = 100
	}
	if f.Limit < 1 || f.Limit > MaxLimit {
		return fmt.Errorf("limit must be between 1 and %d", MaxLimit)
	}
	if f.Outcome != "" && !f.Outcome.Known() {
		return fmt.Errorf("outcome must be issued, denied, failed, revoked, unrevoked, summarized or adopted")
	}
	// Stored values are valid UTF-8 without NUL (see the API's auditText),
	// so such a filter matches nothing; PostgreSQL would refuse it as a
	// store failure instead.
	for _, v := range []string{f.Org, f.Principal, f.JobID, f.TaskID, f.AccessKeyID, f.Bucket} {
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return fmt.Errorf("filter values must be valid UTF-8 without NUL")
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return fmt.Errorf("until must be after since")
	}
	if f.Cursor != "" {
		if _, err := ParseCursor(f.Cursor); err != nil {
			return err
		}
	}
	return nil
}

// TimeKey is the stored sort key of a record time (0 for the zero time).
func TimeKey(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
