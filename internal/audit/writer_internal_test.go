package audit

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
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
