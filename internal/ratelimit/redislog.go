package ratelimit

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLogger routes go-redis's own log lines (dial failures, cluster
// state reloads) through zap. Left alone, go-redis prints them with the
// standard library logger on stderr, and a plain-text line in the middle
// of the JSON log breaks log shippers that parse each line.
type redisLogger struct{ log *zap.Logger }

// Printf implements go-redis's logging interface.
func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}

// useRedisLogger makes log go-redis's logger. go-redis has one logger for
// the whole process, so the limiter built last decides where it goes.
func useRedisLogger(log *zap.Logger) {
	redis.SetLogger(redisLogger{log: log})
}
