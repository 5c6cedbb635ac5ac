package audit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

type funcStore func(ctx context.Context, recs []Record) ([]Entry, error)

func (f funcStore) Append(ctx context.Context, recs []Record) ([]Entry, error) { return f(ctx, recs) }

func TestWriterGroupsAndPropagatesErrors(t *testing.T) {
	var mu sync.Mutex
	var batches []int
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	fail := errors.New("disk full")
	s := funcStore(func(_ context.Context, recs []Record) ([]Entry, error) {
		started <- struct{}{}
		<-release
		mu.Lock()
		batches = append(batches, len(recs))
		mu.Unlock()
		if recs[0].RequestID == "fail" {
			return nil, fail
		}
		return make([]Entry, len(recs)), nil
	})
	w := NewWriter(s, WriterOptions{BatchSize: 8})
	var wg sync.WaitGroup
	errs := make(chan error, 11)
	rec := func() { defer wg.Done(); errs <- w.Record(context.Background(), Record{RequestID: "ok"}) }
	wg.Add(1)
	go rec()
	<-started // the first commit is in progress and held
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go rec()
	}
	for len(w.reqs) < 8 { // all eight are queued behind the held commit
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if len(batches) != 2 || batches[0] != 1 || batches[1] != 8 {
		t.Errorf("batches = %v, want [1 8]: records queued during a commit share the next one", batches)
	}
	mu.Unlock()
	if err := w.Record(context.Background(), Record{RequestID: "fail"}); !errors.Is(err, fail) {
		t.Fatalf("Record = %v, want the store's error", err)
	}
	_ = w.Close()
	if err := w.Record(context.Background(), Record{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v", err)
	}
}

// batchLog is a store that records the size of each committed batch.
type batchLog struct {
	mu      sync.Mutex
	batches []int
}

func (l *batchLog) store() funcStore {
	return func(_ context.Context, recs []Record) ([]Entry, error) {
		l.mu.Lock()
		l.batches = append(l.batches, len(recs))
		l.mu.Unlock()
		return make([]Entry, len(recs)), nil
	}
}

func (l *batchLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.batches)
}

// within fails the test when res yields nothing in a generous bound: the
// writer under test waits an hour when it wrongly waits at all.
func within(t *testing.T, what string, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Record did not return (the writer waited for a record nobody announced)", what)
		return nil
	}
}

func recordAsync(ctx context.Context, e *Expected, rec Record) <-chan error {
	res := make(chan error, 1)
	go func() { res <- e.Record(ctx, rec) }()
	return res
}

// TestWriterNeverWaitsForNobody: with an hour's MaxWait, a lone caller
// (announced or not), callers whose records are all queued, and callers
// whose announcements ended without a record never make a batch wait.
func TestWriterNeverWaitsForNobody(t *testing.T) {
	var log batchLog
	w := NewWriter(log.store(), WriterOptions{BatchSize: 16, MaxWait: time.Hour})
	defer w.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ { // one caller at a time: each commits at once
		if err := within(t, "lone announced caller", recordAsync(ctx, w.Expect(), Record{})); err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 1)
		go func() { res <- w.Record(ctx, Record{}) }()
		if err := within(t, "caller that never announces", res); err != nil {
			t.Fatal(err)
		}
	}
	if got := log.String(); got != "[1 1 1 1 1 1]" {
		t.Fatalf("batches = %s, want six batches of one", got)
	}
	// Announced, then ended without a record (a dry run, a denial that
	// did not reach the writer, a panic): the waiting batch commits as
	// soon as the last one is cancelled.
	a, b := w.Expect(), w.Expect()
	res := recordAsync(ctx, a, Record{})
	for w.inflight.Load() != 1 { // a is queued; the batch waits for b
		runtime.Gosched()
	}
	b.Cancel()
	b.Cancel() // idempotent
	if err := within(t, "after the last announcement was cancelled", res); err != nil {
		t.Fatal(err)
	}
	a.Cancel() // after Record: a no-op
	if n := w.inflight.Load(); n != 0 {
		t.Fatalf("inflight = %d after every announcement ended, want 0", n)
	}
}

// TestWriterBatchesAnnouncedRecords: while announced records are on their
// way the batch waits for them, so requests in flight together share one
// commit even when they reach the writer one after another.
func TestWriterBatchesAnnouncedRecords(t *testing.T) {
	var log batchLog
	w := NewWriter(log.store(), WriterOptions{BatchSize: 16, MaxWait: time.Hour})
	defer w.Close()
	ctx := context.Background()
	exps := make([]*Expected, 8)
	for i := range exps {
		exps[i] = w.Expect()
	}
	var results []<-chan error
	for i, e := range exps {
		results = append(results, recordAsync(ctx, e, Record{}))
		// Each arrives after the writer took the previous one, when it
		// would have committed alone without the announcements.
		for w.inflight.Load() != int64(len(exps)-1-i) {
			runtime.Gosched()
		}
		time.Sleep(time.Millisecond)
	}
	for i, res := range results {
		if err := within(t, fmt.Sprintf("record %d", i), res); err != nil {
			t.Fatal(err)
		}
	}
	if got := log.String(); got != "[8]" {
		t.Fatalf("batches = %s, want one batch of the 8 announced records", got)
	}
	// A full batch ends the wait even while more are announced.
	var log2 batchLog
	w2 := NewWriter(log2.store(), WriterOptions{BatchSize: 2, MaxWait: time.Hour})
	defer w2.Close()
	pending := w2.Expect()
	defer pending.Cancel()
	x, y := w2.Expect(), w2.Expect()
	rx := recordAsync(ctx, x, Record{})
	for w2.inflight.Load() != 2 {
		runtime.Gosched()
	}
	if err := within(t, "full batch", recordAsync(ctx, y, Record{})); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "full batch", rx); err != nil {
		t.Fatal(err)
	}
	if got := log2.String(); got != "[2]" {
		t.Fatalf("batches = %s, want [2]", got)
	}
}

// TestWriterWaitIsBounded: an announced record that never comes (its
// caller stuck upstream) delays a batch by at most MaxWait.
func TestWriterWaitIsBounded(t *testing.T) {
	var log batchLog
	w := NewWriter(log.store(), WriterOptions{MaxWait: 20 * time.Millisecond})
	defer w.Close()
	stuck := w.Expect()
	defer stuck.Cancel()
	if err := within(t, "beside a stuck announcement", recordAsync(context.Background(), w.Expect(), Record{})); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != "[1]" {
		t.Fatalf("batches = %s, want [1]", got)
	}
}

// TestWriterAnnouncedFailsClosed: an announced record gets the same
// answers as an unannounced one (the store's error, ErrClosed, the
// caller's context error), and every such path ends its announcement.
func TestWriterAnnouncedFailsClosed(t *testing.T) {
	fail := errors.New("disk full")
	w := NewWriter(funcStore(func(context.Context, []Record) ([]Entry, error) { return nil, fail }),
		WriterOptions{BatchSize: 1, MaxWait: time.Hour})
	if err := w.Expect().Record(context.Background(), Record{}); !errors.Is(err, fail) {
		t.Fatalf("Record = %v, want the store's error", err)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	// BatchSize 1 and a full queue: the record cannot be queued, only
	// the context can end the call.
	block := make(chan struct{})
	held := make(chan struct{}, 10)
	w2 := NewWriter(funcStore(func(_ context.Context, recs []Record) ([]Entry, error) {
		held <- struct{}{}
		<-block
		return make([]Entry, len(recs)), nil
	}), WriterOptions{BatchSize: 1, MaxWait: time.Hour})
	first := recordAsync(context.Background(), w2.Expect(), Record{})
	<-held
	second := recordAsync(context.Background(), w2.Expect(), Record{})
	for len(w2.reqs) < 1 {
		runtime.Gosched()
	}
	if err := w2.Expect().Record(gone, Record{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Record with the caller gone = %v, want context.Canceled", err)
	}
	close(block)
	for _, res := range []<-chan error{first, second} {
		if err := within(t, "held records", res); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Close()
	_ = w2.Close()
	if err := w.Expect().Record(context.Background(), Record{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close = %v, want ErrClosed", err)
	}
	for name, wr := range map[string]*Writer{"failing store": w, "held store": w2} {
		if n := wr.inflight.Load(); n != 0 {
			t.Errorf("%s: inflight = %d after every call returned, want 0", name, n)
		}
	}
}

// TestWriterFailsClosed: Record returns nil only for a durable record. A
// caller whose context ends while its record waits (queued behind a held
// commit, or in it) gets an error, and a store that hangs fails the
// commit after Timeout instead of holding the callers.
func TestWriterFailsClosed(t *testing.T) {
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	held := make(chan struct{}, 10)
	s := funcStore(func(ctx context.Context, recs []Record) ([]Entry, error) {
		held <- struct{}{}
		select {
		case <-release:
			return make([]Entry, len(recs)), nil
		case <-ctx.Done(): // a hung store: only the commit timeout ends it
			return nil, ctx.Err()
		}
	})
	w := NewWriter(s, WriterOptions{BatchSize: 1, Timeout: time.Hour})
	defer func() { unblock(); _ = w.Close() }() // Close waits for the held commit

	// record runs Record in the background; its result must come within
	// a generous bound (a writer that ignores ctx would block forever).
	record := func(ctx context.Context) <-chan error {
		res := make(chan error, 1)
		go func() { res <- w.Record(ctx, Record{}) }()
		return res
	}
	result := func(what string, res <-chan error) error {
		t.Helper()
		select {
		case err := <-res:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Record did not return", what)
			return nil
		}
	}

	inCommit, cancelInCommit := context.WithCancel(context.Background())
	first := record(inCommit)
	<-held // the first record's commit is in progress and held
	queued, cancelQueued := context.WithCancel(context.Background())
	second := record(queued)
	for len(w.reqs) < 1 { // the second fills the queue (BatchSize 1)
		runtime.Gosched()
	}
	blocked, cancelBlocked := context.WithCancel(context.Background())
	third := record(blocked) // cannot even be queued
	for _, c := range []struct {
		what   string
		cancel context.CancelFunc
		res    <-chan error
	}{
		{"caller gone during its commit", cancelInCommit, first},
		{"caller gone while queued", cancelQueued, second},
		{"caller gone before it could queue", cancelBlocked, third},
	} {
		c.cancel()
		if err := result(c.what, c.res); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Record = %v, want context.Canceled (the credentials must be withheld)", c.what, err)
		}
	}

	// A hung store: the commit timeout fails the waiting caller.
	hung := NewWriter(s, WriterOptions{Timeout: 50 * time.Millisecond})
	defer func() { unblock(); _ = hung.Close() }()
	res := make(chan error, 1)
	go func() { res <- hung.Record(context.Background(), Record{}) }()
	select {
	case err := <-res:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hung store: Record = %v, want the commit's deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hung store: Record did not return; the commit timeout is not applied")
	}
}

// TestWriterLoneRecordAfterSharedBatch reproduces the wait that made c=4
// slower than c=1: after a commit shared by several records, the next
// lone record was held MaxWait for company that was not coming.
func TestWriterLoneRecordAfterSharedBatch(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var log batchLog
	inner := log.store()
	w := NewWriter(funcStore(func(ctx context.Context, recs []Record) ([]Entry, error) {
		if recs[0].RequestID == "hold" {
			held <- struct{}{}
			<-hold
		}
		return inner(ctx, recs)
	}), WriterOptions{BatchSize: 8, MaxWait: time.Hour})
	defer w.Close()
	ctx := context.Background()
	async := func(id string) <-chan error {
		res := make(chan error, 1)
		go func() { res <- w.Record(ctx, Record{RequestID: id}) }()
		return res
	}
	first := async("hold")
	<-held
	a, b := async("a"), async("b")
	for len(w.reqs) < 2 { // both queued behind the held commit: they share the next
		runtime.Gosched()
	}
	close(hold)
	for _, res := range []<-chan error{first, a, b} {
		if err := within(t, "shared batch", res); err != nil {
			t.Fatal(err)
		}
	}
	if err := within(t, "lone record after a shared batch", async("lone")); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != "[1 2 1]" {
		t.Fatalf("batches = %s, want [1 2 1]", got)
	}
}
