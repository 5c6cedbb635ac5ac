// Package auditsql holds the SQL both audit stores share: the indexed
// columns derived from a record and the query builder for audit.Filter.
package auditsql

import (
	"math"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/audit"
)

// Columns are the indexed columns copied out of each encoded entry, in the
// order Values returns them. They only select rows: results are always
// decoded from the stored body, and verify compares each copy with it.
var Columns = []string{"time_ns", "outcome", "org", "principal", "job_id", "task_id", "access_key_id", "bucket"}

// Values returns the indexed column values of r.
func Values(r audit.Record) []any {
	return []any{audit.TimeKey(r.Time), string(r.Outcome), r.Org, r.Principal, r.JobID, r.TaskID, r.AccessKeyID, r.Bucket}
}

// Where builds the WHERE clause (without the keyword; "TRUE" when empty)
// and its arguments for f, numbering placeholders with ph(1), ph(2), ...
// f must be normalized.
func Where(f audit.Filter, ph func(int) string) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, vals ...any) {
		for _, v := range vals {
			args = append(args, v)
			cond = strings.Replace(cond, "?", ph(len(args)), 1)
		}
		conds = append(conds, cond)
	}
	for _, c := range []struct{ col, v string }{
		{"org", f.Org}, {"principal", f.Principal}, {"job_id", f.JobID}, {"task_id", f.TaskID},
		{"access_key_id", f.AccessKeyID}, {"bucket", f.Bucket}, {"outcome", string(f.Outcome)},
	} {
		if c.v != "" {
			add(c.col+" = ?", c.v)
		}
	}
	if !f.Since.IsZero() {
		add("time_ns >= ?", timeKey(f.Since))
	}
	if !f.Until.IsZero() {
		add("time_ns < ?", timeKey(f.Until))
	}
	if f.Cursor != "" {
		p, _ := audit.ParseCursor(f.Cursor)
		// The redundant bound lets the index range start at the cursor
		// instead of filtering every newer row of a deep page.
		add("time_ns <= ?", p.TimeNs)
		add("(time_ns < ? OR (time_ns = ? AND (log < ? OR (log = ? AND seq < ?))))", p.TimeNs, p.TimeNs, p.Log, p.Log, p.Seq)
	}
	if len(conds) == 0 {
		return "TRUE", nil
	}
	return strings.Join(conds, " AND "), args
}

// Bounds of the times time_ns can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeKey is t as a time_ns bound, clamped to the int64 range: UnixNano
// wraps around for times before 1678 or after 2262, which are still valid
// RFC 3339 bounds ("since the year 1000" would otherwise match nothing).
func timeKey(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// OrderBy is the newest-first order every query uses.
const OrderBy = "ORDER BY time_ns DESC, log DESC, seq DESC"

// Rows is the part of *sql.Rows and pgx.Rows ReadPage needs.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ReadPage decodes up to limit bodies from rows (fetched with LIMIT
// limit+1) and sets the next cursor when there is more.
func ReadPage(rows Rows, limit int) (audit.Page, error) {
	p := audit.Page{Records: []audit.Record{}}
	var last audit.Entry
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return audit.Page{}, err
		}
		if len(p.Records) == limit {
			p.Next = audit.Position{TimeNs: audit.TimeKey(last.Record.Time), Log: last.Log, Seq: last.Seq}.Cursor()
			break
		}
		e, err := audit.Decode(body)
		if err != nil {
			return audit.Page{}, err
		}
		p.Records = append(p.Records, e.Record)
		last = e
	}
	return p, rows.Err()
}
