package main

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

type countingCloser struct{ closed atomic.Int32 }

func (c *countingCloser) Close() error { c.closed.Add(1); return nil }

// TestAuthResourcesRetireAfterGrace: what a replaced authenticator chain
// opened is closed one grace period after the reload (not at once, and
// not only at exit); at exit everything still open is closed once.
func TestAuthResourcesRetireAfterGrace(t *testing.T) {
	first, second, third := &countingCloser{}, &countingCloser{}, &countingCloser{}
	// Long enough that the check right after replace cannot outlive it on
	// a loaded machine (at 50ms a descheduled test saw the close "at once").
	const grace = 300 * time.Millisecond
	r := &authResources{grace: grace}
	r.replace([]io.Closer{first})  // start
	r.replace([]io.Closer{second}) // reload: first retires
	if first.closed.Load() != 0 {
		t.Fatal("the replaced chain's store was closed at once; in-flight requests may still use it")
	}
	deadline := time.Now().Add(5 * time.Second)
	for first.closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if first.closed.Load() != 1 || second.closed.Load() != 0 {
		t.Fatalf("after the grace period: first closed %d times, second %d; want 1 and 0", first.closed.Load(), second.closed.Load())
	}
	r.replace([]io.Closer{third}) // reload: second retires, exit comes first
	if err := r.closeAll(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * grace) // the retired timer fires and finds nothing
	for name, c := range map[string]*countingCloser{"first": first, "second": second, "third": third} {
		if n := c.closed.Load(); n != 1 {
			t.Errorf("%s closed %d times, want exactly once", name, n)
		}
	}
}
