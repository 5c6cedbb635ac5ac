package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/testenv"
)

// schemaDSN creates a fresh schema for one test and returns a DSN whose
// search_path selects it; the schema is dropped when the test ends.
func schemaDSN(t *testing.T) string { return schemaDSNB(t) }

func schemaDSNB(t testing.TB) string { return testenv.PostgresSchema(t, "audit_") }

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

// TestLostLockConnection terminates the backend holding a replica's
// advisory lock. While no one else holds the log, the replica claims it
// again and appends on; while another replica holds it, the replica's
// appends fail with ErrLogInUse (503 upstream) and never touch the log.
func TestLostLockConnection(t *testing.T) {
	ctx := context.Background()
	dsn := schemaDSN(t)
	a := openTemp(t, dsn, "r1")
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	kill := func() {
		t.Helper()
		a.lockMu.Lock()
		pid := a.lock.Conn().PgConn().PID()
		a.lockMu.Unlock()
		var ok bool
		if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
		}
		// Wait until the backend is gone, so its lock is released.
		for i := 0; i < 500; i++ {
			var n int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("terminated backend did not exit")
	}
	appendN := func(s *Store, from int) error {
		_, err := s.Append(ctx, []audit.Record{audittest.Sample(from), audittest.Sample(from + 1)})
		return err
	}
	if err := appendN(a, 0); err != nil {
		t.Fatal(err)
	}

	// 1. Nobody else wants the log: the next append claims it again.
	kill()
	if err := appendN(a, 2); err != nil {
		t.Fatalf("append after the lock connection died: %v", err)
	}
	if _, err := Open(ctx, Options{DSN: dsn, Log: "r1"}); !errors.Is(err, ErrLogInUse) {
		t.Fatalf("the re-claimed lock is not held: Open = %v", err)
	}

	// 2. Another replica takes the log while a's lock is gone: a fails
	// closed, b appends, and the log stays one chain.
	kill()
	b, err := Open(ctx, Options{DSN: dsn, Log: "r1"})
	if err != nil {
		t.Fatalf("claim of the released log: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := appendN(a, 10+2*i); !errors.Is(err, ErrLogInUse) {
			t.Fatalf("append while another replica holds the log = %v, want ErrLogInUse", err)
		}
	}
	if err := appendN(b, 20); err != nil {
		t.Fatal(err)
	}
	// 3. b goes away: a claims the log again and continues b's chain.
	_ = b.Close()
	// b's backend releases the lock when it has processed the disconnect:
	// until then a's appends keep failing closed.
	err = appendN(a, 30)
	for i := 0; i < 500 && errors.Is(err, ErrLogInUse); i++ {
		time.Sleep(10 * time.Millisecond)
		err = appendN(a, 30)
	}
	if err != nil {
		t.Fatalf("append after the other replica released the log: %v", err)
	}
	var prev [audit.HashSize]byte
	next := int64(0)
	if err := a.Scan(ctx, "r1", 0, func(row audit.Row) error {
		e, err := audit.Decode(row.Body)
		if err != nil || row.Seq != next || e.PrevHash != prev {
			t.Fatalf("entry %d breaks the chain (%v)", row.Seq, err)
		}
		prev, next = audit.ChainHash(row.Body), next+1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if next != 8 {
		t.Fatalf("log holds %d entries, want 8 (2+2 by a, 2 by b, 2 by a; none of the refused ones)", next)
	}
}
