package main

import (
	"context"
	"testing"

	"go.uber.org/zap"
)

// testApp loads the configuration at path, wires the app and makes it
// ready; it is closed when the test ends.
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
	t.Cleanup(a.close)
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
