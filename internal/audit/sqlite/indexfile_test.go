package sqlite

import (
	"context"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// TestIndexFileObjectsOfItsOwn: whoever can write the index file (not the
// trail) adds schema objects the dispenser never creates, to hide a record
// from queries for good: a trigger deleting the record's index row as the
// indexer writes it, with one holding the cursor at 0 so that verify never
// expects the row. Verify must report the index file edited, and a query
// must not answer without the record.
func TestIndexFileObjectsOfItsOwn(t *testing.T) {
	hidden := audittest.Sample(24).AccessKeyID
	for _, c := range []struct {
		name string
		ddl  []string
	}{
		{"trigger", []string{
			`CREATE TRIGGER hide AFTER INSERT ON audit_index WHEN NEW.access_key_id = '` + hidden + `' BEGIN DELETE FROM audit_index WHERE id = NEW.id; END`,
			`CREATE TRIGGER hold AFTER UPDATE ON audit_index_cursor BEGIN UPDATE audit_index_cursor SET next_seq = 0 WHERE log = NEW.log; END`,
			`UPDATE audit_index_cursor SET next_seq = 0`,
		}},
		{"view", []string{
			`ALTER TABLE audit_index RENAME TO audit_index_all`,
			`CREATE VIEW audit_index AS SELECT * FROM audit_index_all WHERE access_key_id != '` + hidden + `'`,
			`CREATE TRIGGER ins INSTEAD OF INSERT ON audit_index BEGIN INSERT OR REPLACE INTO audit_index_all VALUES
				(NEW.id, NEW.log, NEW.seq, NEW.time_ns, NEW.outcome, NEW.org, NEW.principal, NEW.job_id, NEW.task_id, NEW.access_key_id, NEW.bucket); END`,
			`ALTER TABLE audit_index_cursor RENAME TO audit_index_cursor_real`,
			`CREATE VIEW audit_index_cursor AS SELECT log, 0 AS next_seq FROM audit_index_cursor_real`,
			`CREATE TRIGGER cur INSTEAD OF INSERT ON audit_index_cursor BEGIN SELECT 1; END`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			for _, q := range c.ddl {
				if _, err := f.s.ix.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var recs []audit.Record
			for i := 20; i < 30; i++ {
				recs = append(recs, audittest.Sample(i))
			}
			if _, err := f.s.Append(ctx, recs); err != nil {
				t.Fatal(err)
			}
			p, err := f.s.Query(ctx, audit.Filter{AccessKeyID: hidden})
			if err == nil && len(p.Records) != 1 {
				t.Errorf("query for %s answered %d records and no error", hidden, len(p.Records))
			}
			for _, incremental := range []bool{false, true} {
				o := f.opts
				o.Incremental = incremental
				rep, err := audit.Verify(ctx, f.s, o)
				if err != nil || !rep.Tampered() || !strings.Contains(strings.Join(rep.Problems, "\n"), "the query index file holds") {
					t.Errorf("verify (incremental %v) with the index file edited: %+v, %v", incremental, rep, err)
				}
			}
			// The next start refuses the file, saying what to do.
			path := f.s.path
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(ctx, Options{Path: path}); err == nil || !strings.Contains(err.Error(), "remove it: it is rebuilt from the trail") {
				if err == nil {
					_ = s.Close()
				}
				t.Errorf("open with the index file edited: %v", err)
			}
		})
	}
}
