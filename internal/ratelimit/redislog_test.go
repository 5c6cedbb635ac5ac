package ratelimit

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vtk/dispenser/internal/duration"
)

// TestRedisLogsGoThroughZap: a limiter with Redis makes go-redis log
// through the limiter's zap logger (its dial failure included), not to
// stderr through the standard library logger.
func TestRedisLogsGoThroughZap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	core, logs := observer.New(zap.WarnLevel)
	cfg := Config{PerPrincipal: Limit{Rate: 1, Burst: 1}, Redis: &RedisConfig{Addr: addr, Timeout: duration.Duration(100 * time.Millisecond)}}
	cfg.ApplyDefaults()
	l, err := New(cfg, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Allow(context.Background(), "p", "o"); err != nil {
		t.Fatalf("Allow with Redis down: %v (the local limiter decides)", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range logs.All() {
			if e.LoggerName == "redis" && strings.Contains(e.Message, "failed to dial") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("go-redis's dial failure not logged through zap; got %v", logs.All())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
