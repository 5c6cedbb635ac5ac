package ratelimit

import "testing"

func TestInFlight(t *testing.T) {
	f := NewInFlight(2, 3)
	var held []func()
	take := func(key, wantOver string) {
		t.Helper()
		rel, over := f.Over(key)
		if over != wantOver {
			t.Fatalf("Over(%q) = %q, want %q", key, over, wantOver)
		}
		if over == "" {
			held = append(held, rel)
		}
	}
	take("a", "")
	take("a", "")
	take("a", "per_client") // a has two in flight
	take("b", "")
	take("c", "total") // three in flight in all
	held[0]()
	held[0]() // a second call gives nothing back twice
	take("c", "")
	take("a", "total")
	for _, r := range held[1:] {
		r()
	}
	if f.n != 0 || len(f.byKey) != 0 {
		t.Fatalf("after every release: n=%d keys=%v", f.n, f.byKey)
	}
	if NewInFlight(0, 0) != nil {
		t.Fatal("no caps should be no counter")
	}
	var none *InFlight
	if rel, over := none.Over("x"); over != "" || rel == nil {
		t.Fatal("a nil counter refuses nothing")
	}
	perClientOnly := NewInFlight(1, 0)
	if _, over := perClientOnly.Over("x"); over != "" {
		t.Fatal(over)
	}
	if _, over := perClientOnly.Over("y"); over != "" {
		t.Fatal("total cap 0 must be no cap")
	}
}
