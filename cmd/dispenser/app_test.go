package main

import (
	"context"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
)

// testApp loads the configuration at path, wires the app, runs its
// background loops as serve does and makes it ready; it is closed when the
// test ends.
func testApp(t *testing.T, path string) *app {
	t.Helper()
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.close() })
	a.run(context.Background()) // close stops the loops
	if err := a.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestStartAfterShutdownBeganStaysUnready: a readiness attempt that
// finishes after shutdown began must not put the replica back in service.
func TestStartAfterShutdownBeganStaysUnready(t *testing.T) {
	a := testApp(t, localConfig(t, t.TempDir()))
	if a.server.ReadyState() != "ready" {
		t.Fatalf("before shutdown: %q", a.server.ReadyState())
	}
	a.stopServing()
	if err := a.start(context.Background()); err == nil {
		t.Fatal("start after shutdown began succeeded")
	}
	if s := a.server.ReadyState(); s == "ready" {
		t.Fatal("a start after shutdown began made the replica ready again")
	}
}

// TestCloseStopsPartsBackwardsLoopFirst: close walks the parts in reverse
// order of construction, stopping each one's loop before releasing it;
// run is idempotent and starts nothing once close has run.
func TestCloseStopsPartsBackwardsLoopFirst(t *testing.T) {
	var mu sync.Mutex
	var events []string
	note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	starts := 0
	loop := func(name string) func(context.Context) {
		return func(ctx context.Context) {
			mu.Lock()
			starts++
			mu.Unlock()
			<-ctx.Done()
			note(name + " loop stopped")
		}
	}
	a := &app{log: zap.NewNop()}
	a.add("store", nil, func() error { note("store released"); return nil })
	a.add("poller", loop("poller"), nil)
	a.add("trail", loop("trail"), func() error { note("trail released"); return nil })
	a.run(context.Background())
	a.run(context.Background())
	a.close()
	want := []string{"trail loop stopped", "trail released", "poller loop stopped", "store released"}
	if strings.Join(events, ", ") != strings.Join(want, ", ") || starts != 2 {
		t.Fatalf("events %q, %d loops started; want %q, 2", events, starts, want)
	}
	a.run(context.Background())
	a.close()
	if starts != 2 || len(events) != len(want) {
		t.Fatalf("run after close: %d loops started, events %q", starts, events)
	}
}

// TestReloadAfterCloseIsRefused: a reload that comes after close (the
// configuration watch firing as shutdown ends) builds nothing and swaps
// nothing into the closed app: what it opened would never be closed.
func TestReloadAfterCloseIsRefused(t *testing.T) {
	a := testApp(t, localConfig(t, t.TempDir()))
	rules := a.server.Rules()
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	if err := a.reload(); err == nil {
		t.Fatal("a reload after close succeeded")
	}
	if a.server.Rules() != rules {
		t.Fatal("a reload after close swapped the rules")
	}
}
