// Package auditsql holds the SQL both audit stores share: the indexed
// columns derived from a record and the query builder for audit.Filter.
package auditsql

import (
	"fmt"
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

// PageColumns are the columns ReadPage reads after the entry's body: the
// row's own copy of the entry's position and query columns.
var PageColumns = "log, seq, " + strings.Join(Columns, ", ")

// Rows is the part of *sql.Rows and pgx.Rows ReadPage needs.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ReadPage decodes up to limit bodies from rows (fetched with LIMIT
// limit+1, as body then PageColumns) and sets the next cursor when there
// may be more. A row whose body is missing or malformed, or whose columns
// (which selected and ordered it) differ from its entry's bytes, is not
// returned: report is told of it (table names where the row lives), and
// the query goes on. Such rows exist only by tampering, and verify names
// each; failing every query that matches one would let a single inserted
// row hide every record from the admin API.
func ReadPage(rows Rows, limit int, table string, report func(string)) (audit.Page, error) {
	p := audit.Page{Records: []audit.Record{}}
	var last audit.Position
	fetched := 0
	for rows.Next() {
		var body []byte
		var f audit.IndexFields
		if err := rows.Scan(&body, &f.Log, &f.Seq, &f.TimeNs, &f.Outcome, &f.Org, &f.Principal, &f.JobID, &f.TaskID, &f.AccessKeyID, &f.Bucket); err != nil {
			return audit.Page{}, err
		}
		fetched++
		if len(p.Records) == limit {
			p.Next = last.Cursor()
			break
		}
		last = audit.Position{TimeNs: f.TimeNs, Log: f.Log, Seq: f.Seq}
		e, err := audit.Decode(body)
		if err != nil {
			report(fmt.Sprintf("%s row for %s has no readable entry (%v); a query skipped it: run dispenser audit verify", table, audit.EntryID(f.Log, f.Seq), err))
			continue
		}
		if d := audit.FieldsOf(e).Diff(f); len(d) > 0 {
			report(fmt.Sprintf("%s row for %s differs from its entry's bytes in %s; a query skipped it: run dispenser audit verify", table, audit.EntryID(f.Log, f.Seq), strings.Join(d, ", ")))
			continue
		}
		p.Records = append(p.Records, e.Record)
	}
	if err := rows.Err(); err != nil {
		return audit.Page{}, err
	}
	if p.Next == "" && fetched == limit+1 {
		// Skipped rows left the page short of limit although the query
		// had more: continue after the last row read.
		p.Next = last.Cursor()
	}
	if p.Next != "" && !audit.ValidLogName(last.Log) {
		// A skipped row with a log name no cursor can carry: paging cannot
		// go past it (reported above).
		p.Next = ""
	}
	return p, nil
}

// ReadStoredHashes reads (idx, hash) rows.
func ReadStoredHashes(rows Rows) ([]audit.StoredHash, error) {
	var out []audit.StoredHash
	for rows.Next() {
		var h audit.StoredHash
		var b []byte
		if err := rows.Scan(&h.Index, &b); err != nil {
			return nil, err
		}
		if len(b) != len(h.Hash) {
			// A wrong-sized hash matches no recomputed node: keep it zero
			// and let the comparison report it.
			b = nil
		}
		copy(h.Hash[:], b)
		out = append(out, h)
	}
	return out, rows.Err()
}
