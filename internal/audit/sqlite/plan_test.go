package sqlite

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
)

// TestQueriesUseIndexes checks the query plan of every filter: each one
// walks an index (so stays fast at millions of rows), never the table.
func TestQueriesUseIndexes(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	cursor := audit.Position{TimeNs: 5, Log: "main", Seq: 3}.Cursor()
	for name, f := range map[string]audit.Filter{
		"none":          {},
		"org":           {Org: "acme"},
		"principal":     {Principal: "p"},
		"job_id":        {JobID: "j"},
		"task_id":       {TaskID: "t"},
		"access_key_id": {AccessKeyID: "ASIA"},
		"bucket":        {Bucket: "b"},
		"outcome":       {Outcome: audit.Denied},
		"since+until":   {Since: time.Unix(1, 0), Until: time.Unix(2, 0)},
		"org+cursor":    {Org: "acme", Cursor: cursor},
	} {
		if err := f.Normalize(); err != nil {
			t.Fatal(err)
		}
		rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN `+querySQL(f), queryArgs(f)...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		if !strings.Contains(p, "USING INDEX") && !strings.Contains(p, "USING COVERING INDEX") || strings.Contains(p, "SCAN audit_index;") {
			t.Errorf("%s: plan %q walks the table", name, p)
		}
		if strings.Contains(p, "SCAN r") || !strings.Contains(p, "INTEGER PRIMARY KEY") {
			t.Errorf("%s: plan %q does not read each body by id", name, p)
		}
		if f.Cursor != "" && !strings.Contains(p, "time_ns<") {
			t.Errorf("%s: plan %q does not start the index range at the cursor", name, p)
		}
	}
}
