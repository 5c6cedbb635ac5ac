package main

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vtk/dispenser/internal/config"
)

// TestLoggerStackTraces: warnings (the generated checkpoint key, a backend
// not ready yet) and errors carry no stack trace in the console format a
// person reads, a DPanic (a bug) does and does not panic; the JSON format
// keeps them on errors for the log store.
func TestLoggerStackTraces(t *testing.T) {
	for _, tc := range []struct {
		format              string
		warnStack, errStack bool
	}{
		{"console", false, false},
		{"json", false, true},
	} {
		t.Run(tc.format, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			log, err := newLogger(config.LogConfig{Level: "info", Format: tc.format}, zap.WrapCore(func(zapcore.Core) zapcore.Core { return core }))
			if err != nil {
				t.Fatal(err)
			}
			log.Warn("generated an audit checkpoint signing key")
			log.Error("configuration reload rejected")
			log.DPanic("a bug")
			entries := logs.AllUntimed()
			if len(entries) != 3 {
				t.Fatalf("%d entries", len(entries))
			}
			if got := entries[0].Stack != ""; got != tc.warnStack {
				t.Errorf("warning has a stack trace: %v, want %v\n%s", got, tc.warnStack, entries[0].Stack)
			}
			if got := entries[1].Stack != ""; got != tc.errStack {
				t.Errorf("error has a stack trace: %v, want %v", got, tc.errStack)
			}
			if entries[2].Stack == "" {
				t.Error("a DPanic has no stack trace")
			}
		})
	}
}
