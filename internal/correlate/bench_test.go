package correlate_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/cloudtrail/cloudtrailtest"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/scope"
)

// The benchmark's sizes: CORRELATE_BENCH_RECORDS issued records in a
// SQLite trail (default 1,000,000), CORRELATE_BENCH_EVENTS CloudTrail
// events (default 1,000,000). CORRELATE_BENCH_DIR keeps the trail and the
// gzipped CloudTrail files between runs (building them takes minutes);
// without it they live in a temporary directory.
func benchSize(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

var benchT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func benchKey(i int) string { return fmt.Sprintf("ASIABENCH%016d", i) }

// benchRecord is issued record i: its own key, task and prefix (so its
// own session policy), issued one second after record i-1.
func benchRecord(i int) audit.Record {
	prefix := fmt.Sprintf("acme/t%d/", i)
	pol, _, err := scope.BuildPolicy(scope.OpGet, scope.Location{Bucket: "media", Prefix: prefix}, nil, scope.PolicyOptions{})
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256([]byte(pol))
	at := benchT0.Add(time.Duration(i) * time.Second)
	return audit.Record{Time: at, RequestID: "req-" + strconv.Itoa(i), Outcome: audit.Issued, Principal: "worker-" + strconv.Itoa(i%50),
		AuthMethod: "jwt", Org: "acme", JobID: "job-" + strconv.Itoa(i/100), TaskID: "task-" + strconv.Itoa(i), Operation: "get",
		Bucket: "media", Prefix: prefix, RoleARN: roleARN, Backend: "default", SessionName: "dispenser-job-" + strconv.Itoa(i/100),
		SourceIdentity: "worker", AccessKeyID: benchKey(i), Expiration: at.Add(time.Hour), Duration: time.Hour,
		PolicySHA256: hex.EncodeToString(sum[:]), Policy: pol, PackedPolicySize: 12, ClientAddr: "10.0.0.1", UserAgent: "aws-sdk-go-v2",
		Latency: time.Millisecond, ReplicaID: "r1"}
}

// benchTrail builds (or reuses) a SQLite trail of n issued records.
func benchTrail(b *testing.B, dir string, n int) *sqlite.Store {
	path := filepath.Join(dir, fmt.Sprintf("trail-%d.db", n))
	_, statErr := os.Stat(path)
	s, err := sqlite.Open(context.Background(), sqlite.Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if statErr == nil {
		if p, err := s.Query(context.Background(), audit.Filter{AccessKeyID: benchKey(n - 1), Limit: 1}); err == nil && len(p.Records) == 1 {
			return s
		}
		b.Fatalf("%s exists but does not hold %d records; remove it", path, n)
	}
	t0 := time.Now()
	const batch = 2000
	for i := 0; i < n; i += batch {
		recs := make([]audit.Record, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			recs = append(recs, benchRecord(j))
		}
		if _, err := s.Append(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.CatchUp(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a trail of %d records in %s", n, time.Since(t0).Round(time.Second))
	return s
}

// benchEvents writes (or reuses) a gzipped CloudTrail document of n
// events. Each run of `repeat` consecutive events uses one key, as a task
// reads several objects; keys are drawn at random from the trail, so the
// cache sees n/repeat distinct keys in no useful order. One event in 50
// reads outside its grant (and is refused).
func benchEvents(b *testing.B, dir string, n, records, repeat int) string {
	path := filepath.Join(dir, fmt.Sprintf("events-%d-of-%d-x%d.json.gz", n, records, repeat))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	t0 := time.Now()
	f, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, _ := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	enc := json.NewEncoder(zw)
	rng := rand.New(rand.NewPCG(1, 2))
	_, _ = zw.Write([]byte(`{"Records":[`))
	key := 0
	for i := 0; i < n; i++ {
		if i%repeat == 0 {
			key = rng.IntN(records)
		}
		obj := fmt.Sprintf("acme/t%d/part-%d.mp4", key, i%repeat)
		e := cloudtrailtest.Event{Time: benchT0.Add(time.Duration(key)*time.Second + time.Duration(i%repeat+1)*time.Second), Name: "GetObject",
			Bucket: "media", Key: obj, BytesOut: 1 << 20, Session: cloudtrailtest.Session{AccessKeyID: benchKey(key), RoleARN: roleARN,
				SessionName: "dispenser-job", SourceIdentity: "worker", Created: benchT0}}
		if i%50 == 49 {
			e.Key, e.ErrorCode = "acme/other/x.mp4", "AccessDenied"
		}
		if i > 0 {
			_, _ = zw.Write([]byte(","))
		}
		if err := enc.Encode(e.Record()); err != nil {
			b.Fatal(err)
		}
	}
	_, _ = zw.Write([]byte(`]}`))
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %d events in %s", n, time.Since(t0).Round(time.Second))
	return path
}

// heapPeak samples HeapInuse every 50ms until stop is called, and returns
// the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak.Load() {
			peak.Store(ms.HeapInuse)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		sample()
		return peak.Load()
	}
}

// discard is a Writer that only counts.
type discard struct{ events int }

func (d *discard) Event(*correlate.Event) error                      { d.events++; return nil }
func (d *discard) Finish([]*correlate.Task, correlate.Summary) error { return nil }

// BenchmarkCorrelate correlates CORRELATE_BENCH_EVENTS CloudTrail events
// (one gzipped document, streamed) against a SQLite trail of
// CORRELATE_BENCH_RECORDS issued records, and reports events/s and the
// peak heap in use. read-only is the same input through the CloudTrail
// reader alone (gunzip and JSON decoding), the floor the correlation
// adds its lookups and policy evaluation to. repeat=10 uses each key for
// 10 consecutive events (one trail query per task); repeat=1 gives every
// event its own key (one query per event, the worst case).
// Run it with -benchtime=1x: one iteration is the whole input.
func BenchmarkCorrelate(b *testing.B) {
	records := benchSize("CORRELATE_BENCH_RECORDS", 1_000_000)
	events := benchSize("CORRELATE_BENCH_EVENTS", 1_000_000)
	dir := os.Getenv("CORRELATE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	store := benchTrail(b, dir, records)
	for _, repeat := range []int{10, 1} {
		file := benchEvents(b, dir, events, records, repeat)
		run := func(b *testing.B, judge bool) {
			var n int
			var sum correlate.Summary
			runtime.GC()
			stop := heapPeak()
			b.ResetTimer()
			for b.Loop() {
				rd := &cloudtrail.Reader{}
				scan := func(v cloudtrail.Visitor) error { return rd.Scan(context.Background(), []string{file}, v) }
				if !judge {
					n = 0
					if err := scan(func(cloudtrail.Position, *cloudtrail.Record) error { n++; return nil }); err != nil {
						b.Fatal(err)
					}
					continue
				}
				c, err := correlate.New(correlate.Options{Trail: store, Roles: []correlate.Role{{ARN: roleARN, Org: "acme"}}, ClockSkew: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				if sum, err = correlate.Correlate(context.Background(), c, rd, scan, correlate.RunOptions{}, &discard{}); err != nil {
					b.Fatal(err)
				}
				n = sum.S3Events
			}
			b.StopTimer()
			peak := stop()
			if n != events {
				b.Fatalf("%d of %d events", n, events)
			}
			if judge && (sum.Verdicts[correlate.OK] != events-events/50 || sum.Verdicts[correlate.DeniedAsExpected] != events/50) {
				b.Fatalf("verdicts %v", sum.Verdicts)
			}
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			if judge {
				b.ReportMetric(float64(sum.TrailQueries), "trail-queries")
			}
		}
		b.Run(fmt.Sprintf("repeat=%d/read-only", repeat), func(b *testing.B) { run(b, false) })
		b.Run(fmt.Sprintf("repeat=%d/correlate", repeat), func(b *testing.B) { run(b, true) })
	}
}
