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

// TestWriterWaitsOnlyUnderConcurrency: MaxWait is waited only after a
// shared commit. With an hour's MaxWait, lone records still commit at once
// (the test would hang otherwise), and after a shared commit the writer
// gathers the next records into one batch instead of committing the
// first alone.
func TestWriterWaitsOnlyUnderConcurrency(t *testing.T) {
	var mu sync.Mutex
	var batches []int
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	s := funcStore(func(_ context.Context, recs []Record) ([]Entry, error) {
		if recs[0].RequestID == "hold" {
			held <- struct{}{}
			<-hold
		}
		mu.Lock()
		batches = append(batches, len(recs))
		mu.Unlock()
		return make([]Entry, len(recs)), nil
	})
	w := NewWriter(s, WriterOptions{BatchSize: 3, MaxWait: time.Hour})
	defer w.Close()
	for i := 0; i < 3; i++ { // idle: each lone record commits at once
		if err := w.Record(context.Background(), Record{}); err != nil {
			t.Fatal(err)
		}
	}
	// A shared commit (2 records queued behind a held one) ...
	var wg sync.WaitGroup
	rec := func(id string) {
		defer wg.Done()
		if err := w.Record(context.Background(), Record{RequestID: id}); err != nil {
			t.Error(err)
		}
	}
	wg.Add(1)
	go rec("hold")
	<-held
	wg.Add(2)
	go rec("a")
	go rec("b")
	for len(w.reqs) < 2 {
		runtime.Gosched()
	}
	close(hold)
	wg.Wait()
	// ... makes the writer wait for company: three records sent one after
	// another fill one batch (BatchSize 3 ends the wait).
	wg.Add(3)
	for _, id := range []string{"c", "d", "e"} {
		go rec(id)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 1, 1, 1, 2, 3}; fmt.Sprint(batches) != fmt.Sprint(want) {
		t.Fatalf("batches = %v, want %v", batches, want)
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
