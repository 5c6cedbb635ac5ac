package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/api"
)

// BenchmarkIssuance runs the full issuance path (JWT authentication, rate
// limiter, scope, revocation check, mock vendor, response) with 64
// concurrent callers, with the audit trail off and on (SQLite, durable
// before each response). "side-by-side" alternates rounds of both in one
// run and reports on/off throughput (target >= 0.8) and CPU efficiency.
func BenchmarkIssuance(b *testing.B) {
	dir := b.TempDir()
	path := localConfig(&testing.T{}, dir)
	// The example's per-principal rate limit would throttle the benchmark;
	// a limit that never bites keeps the limiter on the path.
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	raw = []byte(strings.Replace(string(raw), "per_principal: {rate: 10, burst: 50}", "per_principal: {rate: 1000000000, burst: 1000000000}", 1))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	a, err := newApp(cfg, zapNop())
	if err != nil {
		b.Fatal(err)
	}
	defer a.close()
	a.run(context.Background())
	if err := a.start(context.Background()); err != nil {
		b.Fatal(err)
	}
	chain, err := cfg.Auth.Build()
	if err != nil {
		b.Fatal(err)
	}
	// The same path as the app's handler (metrics, rate limiter, revocation
	// check) except for the nil Recorder: no audit.
	off := api.New(api.Options{Authenticator: chain, Rules: a.server.Rules(), Vendor: a.vendor,
		MinRemaining: cfg.Server.MinRemaining.D(), ReplicaID: cfg.Server.ReplicaID,
		Metrics: a.metrics, Limiter: a.limiter, Revocations: a.revocations})
	off.SetReady(true)
	var out, errb strings.Builder
	if run([]string{"token", "--config", path, "--subject", "worker-1", "--org", "acme", "--ttl", "10h"}, &out, &errb) != 0 {
		b.Fatal(errb.String())
	}
	tok := strings.TrimSpace(out.String())
	// issue serves n requests from 64 concurrent callers and returns the
	// wall time and the process CPU time they took.
	issue := func(b *testing.B, h http.Handler, n int) (wall, cpu time.Duration) {
		var next atomic.Int64
		var wg sync.WaitGroup
		c0, t0 := processCPU(), time.Now()
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					req := httptest.NewRequest("GET", "/credentials?operation=get&location=s3://media/acme/in/&task_id=bench", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d: %s", rec.Code, rec.Body.String())
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(t0), processCPU() - c0
	}
	commits := func() (n, recs float64) {
		var m dto.Metric
		if err := a.metrics.AuditBatchSize.Write(&m); err != nil {
			b.Fatal(err)
		}
		return float64(m.Histogram.GetSampleCount()), m.Histogram.GetSampleSum()
	}
	hs := map[string]http.Handler{"off": off.Handler(), "sqlite": a.server.Handler()}
	for _, name := range []string{"off", "sqlite"} {
		b.Run("audit="+name, func(b *testing.B) {
			n0, r0 := commits()
			b.ResetTimer()
			wall, cpu := issue(b, hs[name], b.N)
			b.ReportMetric(float64(b.N)/wall.Seconds(), "issuances/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/issuance")
			if n1, r1 := commits(); n1 > n0 {
				b.ReportMetric((r1-r0)/(n1-n0), "records/commit")
				b.ReportMetric(wall.Seconds()/(n1-n0)*1e6, "µs/commit-cycle")
				var m dto.Metric
				_ = a.metrics.AuditWriteLatency.Write(&m)
				b.ReportMetric(m.Histogram.GetSampleSum()/float64(m.Histogram.GetSampleCount())*1e6, "µs/append")
			}
		})
	}
	// Side by side: rounds of 1,000 requests alternate between the two
	// handlers, so a change in the machine's load hits both alike.
	// Each audit round ends with the query index caught up, so the
	// indexer's work is counted where it belongs (and not in the next
	// audit-off round, when the idle writer would let it run).
	catchUp := func() {}
	if cu, ok := a.trail.(interface{ CatchUp(context.Context) error }); ok {
		catchUp = func() {
			if err := cu.CatchUp(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("side-by-side", func(b *testing.B) {
		var wall, cpu [2]time.Duration
		for done := 0; done < b.N; done += 1000 {
			for i, name := range []string{"off", "sqlite"} {
				c0, t0 := processCPU(), time.Now()
				issue(b, hs[name], 1000)
				if name == "sqlite" {
					catchUp()
				}
				wall[i] += time.Since(t0)
				cpu[i] += processCPU() - c0
			}
		}
		b.ReportMetric(wall[0].Seconds()/wall[1].Seconds(), "on/off-throughput")
		b.ReportMetric(cpu[0].Seconds()/cpu[1].Seconds(), "on/off-cpu-efficiency")
	})
	// The ceiling: what the on/off ratio could be if the audit trail cost
	// nothing but the SQLite writes no design can avoid. Rounds alternate
	// the audit-off path with raw inserts of entries exactly as large as the
	// trail's, 50 per transaction (the writer's batch under this load),
	// synchronous=FULL, into (a) a table holding only the entry and its
	// hash and (b) that table plus the seven query filters as indexed
	// columns. No sealing, Merkle nodes, group-commit handoff or GC of the
	// real writer is counted, so the ratio is an upper bound for any store
	// that keeps each filter indexed per record in SQLite.
	b.Run("ceiling", func(b *testing.B) {
		issue(b, hs["sqlite"], 1) // an entry to size the rows by, when run alone
		body, err := a.trail.Body(context.Background(), "main", 0)
		if err != nil {
			b.Fatal(err)
		}
		floors := []*sqliteFloor{newSQLiteFloor(b, false, len(body)), newSQLiteFloor(b, true, len(body))}
		var offCPU time.Duration
		floorCPU := make([]time.Duration, len(floors))
		for done := 0; done < b.N; done += 1000 {
			c0 := processCPU()
			issue(b, hs["off"], 1000)
			offCPU += processCPU() - c0
			for i, f := range floors {
				c0 := processCPU()
				f.insert(b, 1000)
				floorCPU[i] += processCPU() - c0
			}
		}
		rounds := float64((b.N + 999) / 1000 * 1000)
		off := float64(offCPU.Nanoseconds()) / rounds / 1e3
		b.ReportMetric(off, "off-cpu-µs/issuance")
		for i, name := range []string{"entries", "indexed"} {
			fl := float64(floorCPU[i].Nanoseconds()) / rounds / 1e3
			b.ReportMetric(fl, "floor-"+name+"-cpu-µs/record")
			b.ReportMetric(off/(off+fl), "ceiling-"+name)
		}
	})
}

// sqliteFloor inserts entry-sized rows into a scratch SQLite file with the
// audit store's durability settings, and nothing else.
type sqliteFloor struct {
	db      *sql.DB
	stmt    *sql.Stmt
	indexed bool
	body    []byte
	id      int64
}

const floorBatch = 50

func newSQLiteFloor(b *testing.B, indexed bool, size int) *sqliteFloor {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "floor.db")+
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(1)
	schema := `CREATE TABLE r (id INTEGER PRIMARY KEY, body BLOB NOT NULL, hash BLOB NOT NULL)`
	cols := []string{"id", "body", "hash"}
	if indexed {
		schema = `CREATE TABLE r (id INTEGER PRIMARY KEY, body BLOB NOT NULL, hash BLOB NOT NULL, time_ns INTEGER,
			org TEXT, principal TEXT, job_id TEXT, task_id TEXT, access_key_id TEXT, bucket TEXT)`
		cols = append(cols, "time_ns", "org", "principal", "job_id", "task_id", "access_key_id", "bucket")
		for _, c := range cols[4:] {
			schema += ";CREATE INDEX r_" + c + " ON r (" + c + ", time_ns)"
		}
		schema += ";CREATE INDEX r_time ON r (time_ns)"
	}
	if _, err := db.Exec(schema); err != nil {
		b.Fatal(err)
	}
	row := "(" + strings.Repeat("?, ", len(cols)-1) + "?)"
	stmt, err := db.Prepare("INSERT INTO r (" + strings.Join(cols, ", ") + ") VALUES " + strings.Repeat(row+", ", floorBatch-1) + row)
	if err != nil {
		b.Fatal(err)
	}
	return &sqliteFloor{db: db, stmt: stmt, indexed: indexed, body: make([]byte, size)}
}

func (f *sqliteFloor) insert(b *testing.B, n int) {
	hash := make([]byte, 32)
	for ; n > 0; n -= floorBatch {
		args := make([]any, 0, floorBatch*10)
		for i := 0; i < floorBatch; i++ {
			f.id++
			args = append(args, f.id, f.body, hash)
			if f.indexed {
				// Distinct keys, ids and times like real records.
				args = append(args, time.Now().UnixNano(), "acme", "worker-1", "job-1", fmt.Sprintf("task-%d", f.id),
					fmt.Sprintf("ASIAFLOOR%011d", f.id), "media")
			}
		}
		tx, err := f.db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Stmt(f.stmt).Exec(args...); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func zapNop() *zap.Logger { return zap.NewNop() }

// BenchmarkCheckpointCadence measures what the checkpoint cadence costs
// issuance: rounds of 1,000 requests from 64 callers alternate between two
// dispensers that differ only in audit.checkpoint: the previous default
// (every 1s while records arrive) and the default (200ms or 1,024 records),
// each with its own SQLite file and anchor directory. It reports the
// default's throughput and CPU per issuance relative to the previous one.
func BenchmarkCheckpointCadence(b *testing.B) {
	build := func(cadence string) (http.Handler, string) {
		dir := b.TempDir()
		path := localConfig(&testing.T{}, dir)
		raw, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		s := strings.Replace(string(raw), "per_principal: {rate: 10, burst: 50}", "per_principal: {rate: 1000000000, burst: 1000000000}", 1)
		s = strings.Replace(s, "\naudit:\n", "\naudit:\n"+cadence, 1)
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			b.Fatal(err)
		}
		cfg, err := loadConfig(path)
		if err != nil {
			b.Fatal(err)
		}
		a, err := newApp(cfg, zapNop())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = a.close() })
		if err := a.start(context.Background()); err != nil {
			b.Fatal(err)
		}
		// Revocation polling, as serve runs it: the list goes stale (503)
		// after 10s without it.
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		a.run(ctx)
		return a.server.Handler(), path
	}
	old, path := build("  checkpoint: {interval: 1s, max_records: 1000000}\n")
	cur, _ := build("")
	var out, errb strings.Builder
	if run([]string{"token", "--config", path, "--subject", "worker-1", "--org", "acme", "--ttl", "10h"}, &out, &errb) != 0 {
		b.Fatal(errb.String())
	}
	tok := strings.TrimSpace(out.String())
	issue := func(h http.Handler, n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					req := httptest.NewRequest("GET", "/credentials?operation=get&location=s3://media/acme/in/&task_id=bench", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Errorf("status %d: %s", rec.Code, rec.Body.String())
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	var wall, cpu [2]time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += 1000 {
		for i, h := range []http.Handler{old, cur} {
			c0, t0 := processCPU(), time.Now()
			issue(h, 1000)
			wall[i] += time.Since(t0)
			cpu[i] += processCPU() - c0
		}
	}
	b.ReportMetric(wall[0].Seconds()/wall[1].Seconds(), "throughput-200ms-or-1024/1s")
	b.ReportMetric(cpu[1].Seconds()/cpu[0].Seconds(), "cpu-per-issuance-200ms-or-1024/1s")
	rounds := float64((b.N + 999) / 1000 * 1000)
	b.ReportMetric(rounds/wall[0].Seconds(), "issuances/s-1s")
	b.ReportMetric(rounds/wall[1].Seconds(), "issuances/s-200ms-or-1024")
}
