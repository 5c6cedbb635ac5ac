package postgres

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/testenv"
)

// schemaDSN creates a fresh schema for one test and returns a DSN whose
// search_path selects it; the schema is dropped when the test ends.
func schemaDSN(t *testing.T) string { return schemaDSNB(t) }

func schemaDSNB(t testing.TB) string {
	t.Helper()
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	schema := testenv.UniqueName("audit_")
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if testenv.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if _, err := c.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, _ = c.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`)
			_ = c.Close(ctx)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func openTemp(t *testing.T, dsn, log string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DSN: dsn, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audit.Trail { return openTemp(t, schemaDSN(t), "replica-a") })
}

func TestShardsAndFencing(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	a := openTemp(t, dsn, "replica-a")
	b := openTemp(t, dsn, "replica-b")
	if _, err := Open(ctx, Options{DSN: dsn, Log: "replica-a"}); !errors.Is(err, ErrLogInUse) {
		t.Fatalf("second claim of a held log = %v, want ErrLogInUse", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := a.Append(ctx, []audit.Record{audittest.Sample(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Append(ctx, []audit.Record{audittest.Sample(10 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	logs, err := a.Logs(ctx)
	if err != nil || len(logs) != 2 {
		t.Fatalf("Logs = %v, %v", logs, err)
	}
	for _, l := range logs {
		if h, _ := a.Head(ctx, l); h.Size != 3 {
			t.Fatalf("log %s has %d entries, want 3 (each replica its own sequence)", l, h.Size)
		}
	}
	// Two writers on one log (a replica that lost its lock and one that
	// took over) never fork it: the head compare-and-swap and the primary
	// key refuse the loser's commit.
	rogue := &Store{pool: a.pool, log: "replica-a", now: a.now}
	rogue.lock, _ = a.pool.Acquire(ctx) // no advisory lock: only the fencing protects the log
	defer rogue.lock.Release()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, w := range []*Store{a, rogue} {
		wg.Add(1)
		go func(w *Store) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				if _, err := w.Append(ctx, []audit.Record{audittest.Sample(i)}); err != nil {
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	var prev [audit.HashSize]byte
	next := int64(0)
	if err := a.Scan(ctx, "replica-a", 0, func(row audit.Row) error {
		seq, body := row.Seq, row.Body
		e, err := audit.Decode(body)
		if err != nil || seq != next || e.PrevHash != prev {
			t.Fatalf("entry %d breaks the chain (%v)", seq, err)
		}
		prev, next = audit.ChainHash(body), next+1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.Head(ctx, "replica-a"); h.Size != next || h.Hash != prev || next+failed.Load() != 63 {
		t.Fatalf("head %d, scanned %d, failed %d: want head = scan and every append either in the log or refused", h.Size, next, failed.Load())
	}
	// Released logs can be claimed again.
	_ = b.Close()
	openTemp(t, dsn, "replica-b")
}

func TestAppendOnlyTriggers(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	s := openTemp(t, dsn, "r")
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCheckpoint(ctx, "r", 1, []byte("cp")); err != nil {
		t.Fatal(err)
	}
	c, _ := pgx.Connect(ctx, dsn)
	defer c.Close(ctx)
	for _, q := range []string{
		`UPDATE audit_records SET org = 'x'`, `UPDATE audit_checkpoints SET note = 'x'`, `DELETE FROM audit_records`, `TRUNCATE audit_records`,
		`DELETE FROM audit_hashes`, `TRUNCATE audit_hashes`, `DELETE FROM audit_checkpoints`,
		// replica mode skips ordinary triggers; ENABLE ALWAYS ones still fire.
		`SET session_replication_role = replica; DELETE FROM audit_records`,
	} {
		if _, err := c.Exec(ctx, q); err == nil {
			t.Errorf("%s succeeded", q)
		}
	}
	// Migrations are idempotent: opening again applies nothing twice.
	_ = s.Close()
	openTemp(t, dsn, "r")
}
