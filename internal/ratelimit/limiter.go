package ratelimit

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
)

// Scopes of a refusal (the metric label and the reason suffix).
const (
	ScopePrincipal = "principal"
	ScopeOrg       = "org"
)

// Options are the limiter's dependencies.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time
}

// Limiter applies the configured buckets. It is safe for concurrent use;
// SetConfig swaps limits on configuration reload.
type Limiter struct {
	cfg   atomic.Pointer[Config]
	local *localBuckets
	rdb   redis.UniversalClient
	rcfg  RedisConfig
	log   *zap.Logger
	m     *metrics.Metrics
	now   func() time.Time

	// downUntil (unix nanos) keeps the limiter on the local fallback for a
	// while after a Redis failure instead of paying a timeout per request.
	downUntil atomic.Int64
	onRedis   atomic.Bool
}

// New returns a limiter for cfg. With cfg.Redis set it shares buckets in
// Redis; it never dials at construction, so a down Redis cannot stop the
// dispenser from starting.
func New(cfg Config, o Options) (*Limiter, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Limiter{local: newLocalBuckets(), log: o.Logger, m: o.Metrics, now: o.Now}
	c := cfg
	l.cfg.Store(&c)
	if r := cfg.Redis; r != nil {
		useRedisLogger(o.Logger.Named("redis"))
		var password string
		if r.PasswordEnv != "" {
			password = os.Getenv(r.PasswordEnv)
		}
		var tlsConfig *tls.Config
		if r.TLS {
			tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if r.Cluster {
			l.rdb = redis.NewClusterClient(&redis.ClusterOptions{
				Addrs: []string{r.Addr}, Username: r.Username, Password: password, TLSConfig: tlsConfig,
				DialTimeout: r.Timeout.D(), ReadTimeout: r.Timeout.D(), WriteTimeout: r.Timeout.D(),
				// Redirects (MOVED/ASK while slots migrate) are followed; a
				// failed node is not retried: the local fallback is the retry.
				MaxRetries: -1,
			})
		} else {
			l.rdb = redis.NewClient(&redis.Options{
				Addr: r.Addr, Username: r.Username, Password: password, DB: r.DB, TLSConfig: tlsConfig,
				DialTimeout: r.Timeout.D(), ReadTimeout: r.Timeout.D(), WriteTimeout: r.Timeout.D(),
				MaxRetries: -1, // a retry doubles the latency; the local fallback is the retry
			})
		}
		l.rcfg = *r
		l.onRedis.Store(true)
		l.setBackend("redis")
	} else {
		l.setBackend("local")
	}
	return l, nil
}

// SetConfig swaps the limits (configuration reload). The Redis connection
// is fixed at start; changing it needs a restart.
func (l *Limiter) SetConfig(cfg Config) {
	c := cfg
	l.cfg.Store(&c)
}

// Close releases the Redis connection.
func (l *Limiter) Close() error {
	if l.rdb != nil {
		return l.rdb.Close()
	}
	return nil
}

func (l *Limiter) setBackend(b string) {
	if l.m == nil {
		return
	}
	for _, name := range []string{"redis", "local"} {
		v := 0.0
		if name == b {
			v = 1
		}
		l.m.RateLimitBackend.WithLabelValues(name).Set(v)
	}
}

// bucketReq is one bucket to take a token from.
type bucketReq struct {
	scope string
	key   string
	limit Limit
}

// Allow takes one token from the principal's and the org's buckets, or
// from neither. It returns nil, or a *fault.Error with code Throttled,
// reason rate_limited_principal or rate_limited_org, and a RetryAfter.
func (l *Limiter) Allow(ctx context.Context, principal, org string) error {
	cfg := l.cfg.Load()
	pl, ol := cfg.limitsFor(org)
	var reqs []bucketReq
	// Both keys start with the same hash tag, so a Redis Cluster keeps an
	// org's buckets in one slot and the script can take from both at once.
	tagSum := sha256.Sum256([]byte(org))
	tag := "{" + hex.EncodeToString(tagSum[:8]) + "}"
	if pl.Enabled() {
		sum := sha256.Sum256([]byte(org + "\x00" + principal))
		reqs = append(reqs, bucketReq{ScopePrincipal, tag + "p:" + hex.EncodeToString(sum[:16]), pl})
	}
	if ol.Enabled() {
		reqs = append(reqs, bucketReq{ScopeOrg, tag + "o:" + org, ol})
	}
	if len(reqs) == 0 {
		return nil
	}
	scope, wait := l.take(ctx, reqs)
	if scope == "" {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	return fault.New(fault.Throttled, "rate_limited_"+scope,
		"the %s rate limit is exhausted; retry after %d second(s)", scope, secs).WithRetryAfter(time.Duration(secs) * time.Second)
}

func (l *Limiter) take(ctx context.Context, reqs []bucketReq) (string, time.Duration) {
	if l.rdb != nil && l.now().UnixNano() >= l.downUntil.Load() {
		scope, wait, err := l.takeRedis(ctx, reqs)
		if err == nil {
			if !l.onRedis.Swap(true) {
				l.log.Info("rate limiter: Redis is reachable again; using the shared limiter")
				l.setBackend("redis")
			}
			return scope, wait
		}
		l.downUntil.Store(l.now().Add(l.rcfg.RetryAfter.D()).UnixNano())
		if l.onRedis.Swap(false) {
			l.log.Warn("rate limiter: Redis unreachable; falling back to per-replica limits (vending continues)",
				zap.String("addr", l.rcfg.Addr), zap.Error(err))
			l.setBackend("local")
		}
	}
	return l.local.take(l.now(), reqs)
}

// takeScript is a token bucket over every key at once: either each bucket
// gives a token or none does. Time is Redis's own, so replicas with skewed
// clocks share one view. Returns {0,0} or {index of the first refusing
// bucket (1-based), milliseconds until it has a token}.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tok, ts = tonumber(v[1]), tonumber(v[2])
  if tok == nil or ts == nil then tok, ts = burst, now end
  tok = math.min(burst, tok + math.max(0, now - ts) * rate)
  tokens[i] = tok
  if tok < 1 then
    local w = (1 - tok) / rate
    if refused == 0 then refused = i end
    if w > wait then wait = w end
  end
end
if refused > 0 then
  return {refused, math.ceil(wait * 1000)}
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i] - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return {0, 0}
`)

func (l *Limiter) takeRedis(ctx context.Context, reqs []bucketReq) (string, time.Duration, error) {
	// Detached from the caller: a client hanging up must not look like
	// Redis being down (which would switch this replica to local limits).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.rcfg.Timeout.D())
	defer cancel()
	keys := make([]string, len(reqs))
	args := make([]any, 0, 2*len(reqs))
	for i, r := range reqs {
		keys[i] = l.rcfg.KeyPrefix + r.key
		args = append(args, r.limit.Rate, r.limit.Burst)
	}
	res, err := takeScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return "", 0, err
	}
	if len(res) != 2 || res[0] < 0 || int(res[0]) > len(reqs) {
		return "", 0, fmt.Errorf("rate limiter: unexpected script answer %v", res)
	}
	if res[0] == 0 {
		return "", 0, nil
	}
	return reqs[res[0]-1].scope, time.Duration(res[1]) * time.Millisecond, nil
}

// localBuckets are this replica's token buckets.
type localBuckets struct {
	mu    sync.Mutex
	b     map[string]*bucket
	calls int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLocalBuckets() *localBuckets { return &localBuckets{b: map[string]*bucket{}} }

func (lb *localBuckets) take(now time.Time, reqs []bucketReq) (string, time.Duration) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.calls++
	if lb.calls%4096 == 0 {
		lb.sweep(now)
	}
	refused, wait := "", time.Duration(0)
	tokens := make([]float64, len(reqs))
	for i, r := range reqs {
		b := lb.b[r.key]
		tok := float64(r.limit.Burst)
		if b != nil {
			tok = math.Min(float64(r.limit.Burst), b.tokens+now.Sub(b.last).Seconds()*r.limit.Rate)
		}
		tokens[i] = tok
		if tok < 1 {
			if refused == "" {
				refused = r.scope
			}
			if w := time.Duration((1 - tok) / r.limit.Rate * float64(time.Second)); w > wait {
				wait = w
			}
		}
	}
	if refused != "" {
		return refused, wait
	}
	for i, r := range reqs {
		lb.b[r.key] = &bucket{tokens: tokens[i] - 1, last: now}
	}
	return "", 0
}

// sweep drops buckets idle long enough to be full again (an absent bucket
// is a full one), bounding memory by the recently active callers.
func (lb *localBuckets) sweep(now time.Time) {
	for k, b := range lb.b {
		if now.Sub(b.last) > 10*time.Minute {
			delete(lb.b, k)
		}
	}
}
