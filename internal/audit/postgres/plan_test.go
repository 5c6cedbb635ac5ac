package postgres

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/auditsql"
)

// TestQueriesUseIndexes checks that every filter has an index PostgreSQL
// can use (sequential scans off: the test table is too small for the
// planner to prefer an index on its own).
func TestQueriesUseIndexes(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	openTemp(t, dsn, "r") // migrates
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"org", "principal", "job_id", "task_id", "access_key_id", "bucket"} {
		f := audit.Filter{}
		switch col {
		case "org":
			f.Org = "x"
		case "principal":
			f.Principal = "x"
		case "job_id":
			f.JobID = "x"
		case "task_id":
			f.TaskID = "x"
		case "access_key_id":
			f.AccessKeyID = "x"
		case "bucket":
			f.Bucket = "x"
		}
		_ = f.Normalize()
		where, args := auditsql.Where(f, func(i int) string { return "$" + strconv.Itoa(i) })
		rows, err := c.Query(ctx, `EXPLAIN SELECT body FROM audit_records WHERE `+where+` `+auditsql.OrderBy+` LIMIT 101`, args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "audit_records_") || strings.Contains(plan, "Seq Scan") {
			t.Errorf("%s: plan does not use its index:\n%s", col, plan)
		}
	}
}
