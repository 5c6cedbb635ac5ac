package ratelimit

import (
	"testing"
	"time"
)

func TestFailureGuard(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	g := NewFailureGuard(Limit{Rate: 1, Burst: 3}, 2, clock)
	for i := 0; i < 3; i++ {
		if _, blocked := g.Blocked("10.0.0.1"); blocked {
			t.Fatalf("blocked after %d failures, burst is 3", i)
		}
		g.Failed("10.0.0.1")
	}
	wait, blocked := g.Blocked("10.0.0.1")
	if !blocked || wait <= 0 || wait > time.Second {
		t.Fatalf("after the burst: blocked=%v wait=%v, want blocked for up to 1s", blocked, wait)
	}
	if _, blocked := g.Blocked("10.0.0.2"); blocked {
		t.Fatal("another client is blocked")
	}
	now = now.Add(time.Second)
	if _, blocked := g.Blocked("10.0.0.1"); blocked {
		t.Fatal("still blocked after the bucket refilled one token")
	}
	// Bounded: a third client evicts the least recently used one.
	g.Failed("10.0.0.2")
	g.Failed("10.0.0.3")
	if len(g.items) != 2 {
		t.Fatalf("%d clients tracked, bound is 2", len(g.items))
	}
	var nilGuard *FailureGuard
	nilGuard.Failed("x")
	if _, blocked := nilGuard.Blocked("x"); blocked {
		t.Fatal("a disabled guard blocks")
	}
	if NewFailureGuard(Limit{}, 0, nil) != nil {
		t.Fatal("rate 0 must disable the guard")
	}
}
