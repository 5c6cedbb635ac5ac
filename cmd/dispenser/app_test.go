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
