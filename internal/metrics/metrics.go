// Package metrics holds the dispenser's Prometheus collectors on their own
// registry (namespace dispenser_). Every method is safe on a nil *Metrics,
// so packages take an optional *Metrics and tests may pass nil. Labels stay
// low-cardinality: never principal, job, task, session name or key ids.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const ns = "dispenser"

// Metrics are the dispenser's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	Requests          *prometheus.CounterVec   // route, method, status
	Issuances         *prometheus.CounterVec   // tenant, operation, backend, outcome, reason
	Latency           *prometheus.HistogramVec // outcome
	BackendLatency    *prometheus.HistogramVec // backend, type
	BackendErrors     *prometheus.CounterVec   // backend, code
	CacheEvents       *prometheus.CounterVec   // event: hit, miss, eviction, refresh, refresh_error
	CacheSize         prometheus.GaugeFunc     // entries in every credential cache, read at scrape time
	CacheOldestLeft   prometheus.GaugeFunc     // seconds until the soonest cached entry falls under the floor, at scrape time
	AuditWriteLatency prometheus.Histogram
	AuditBatchSize    prometheus.Histogram
	AuditFailures     *prometheus.CounterVec // kind: write, vended_unrecorded, anchor, anchor_fork, anchor_rollback, revocation
	AuditAnchorAge    prometheus.Gauge       // seconds since the newest anchored checkpoint
	RateLimited       *prometheus.CounterVec // scope: principal, org
	RateLimitBackend  *prometheus.GaugeVec   // backend: redis, local (1 = in use)
	RevocationHits    *prometheus.CounterVec // kind
	AuthFailures      *prometheus.CounterVec // method, reason
	JWTCacheEvents    *prometheus.CounterVec // event: hit, miss, eviction, flush
	PackedPolicySize  prometheus.Histogram
	ServedLifetime    prometheus.Histogram
	STSThrottles      prometheus.Counter
	TLSCertExpiry     prometheus.Gauge       // unix seconds
	ConfigReloads     *prometheus.CounterVec // result: ok, rejected
	BuildInfo         *prometheus.GaugeVec

	// Abuse limits (limits.go): connections, folded refusals, the audit
	// volume's free space.
	ConnectionsOpen    *prometheus.GaugeVec   // listener
	ConnectionsLimit   *prometheus.GaugeVec   // listener
	ConnectionsRefused *prometheus.CounterVec // listener, reason
	ConnectionsClosed  *prometheus.CounterVec // listener (idle ones closed near the cap)
	DenialsFolded      *prometheus.CounterVec // cause
	AuditVolumeFree    prometheus.Gauge
	AuditVolumeLow     prometheus.Gauge

	// AuditAnchorMissing is 1 while this replica's log holds entries and
	// no anchor holds a checkpoint of it (nothing is signed or anchored).
	AuditAnchorMissing prometheus.Gauge
	// AuditStartUnanchored is the unanchored tail found at start.
	AuditStartUnanchored prometheus.Gauge

	cacheMu   sync.Mutex
	caches    map[int]CacheSource
	cacheNext int
}

// CacheSource reports one credential cache's state: its size and how long
// until its soonest entry falls under the serving floor.
type CacheSource func() (size int, soonestFloor time.Duration)

// New registers every collector on a fresh registry, with the Go and
// process collectors.
func New(version string) *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total", Help: "HTTP requests by route, method and status."}, []string{"route", "method", "status"})
	m.Issuances = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "issuances_total", Help: "Credential decisions by tenant, operation, backend, outcome (issued/denied/error) and reason."}, []string{"tenant", "operation", "backend", "outcome", "reason"})
	m.Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds", Help: "End-to-end /credentials latency by outcome.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12)}, []string{"outcome"})
	m.BackendLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "backend_call_duration_seconds", Help: "Upstream backend call latency (STS AssumeRole; in-memory backends such as static and mock make no upstream call).", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"backend", "type"})
	m.BackendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_errors_total", Help: "Upstream backend (STS) call errors by error code."}, []string{"backend", "code"})
	m.CacheEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "credential_cache_events_total", Help: "Credential cache hits, misses, evictions and refreshes."}, []string{"event"})
	// The cache gauges are computed at scrape time: the time left shrinks
	// while nothing happens in the cache (an outage is when it matters).
	m.CacheSize = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "credential_cache_entries", Help: "Credentials held in the cache."},
		func() float64 { n, _ := m.cacheState(); return float64(n) })
	m.CacheOldestLeft = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "credential_cache_soonest_floor_seconds", Help: "Seconds until the soonest cached credential falls under the serving floor (how long an STS outage can be ridden out)."},
		func() float64 { _, d := m.cacheState(); return d.Seconds() })
	m.AuditWriteLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "audit_write_duration_seconds", Help: "Time until a decision record is durable.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)})
	m.AuditBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "audit_batch_records", Help: "Records per group-commit transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.AuditFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "audit_failures_total", Help: "Audit failures by kind: write, vended_unrecorded, anchor (a sink failed), anchor_fork and anchor_rollback (the log does not extend its anchored checkpoint), revocation (a revocation change not recorded), index (a query-index row with no matching entry: skipped, see audit verify)."}, []string{"kind"})
	m.AuditAnchorAge = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "audit_anchor_age_seconds", Help: "Age of the newest anchored audit checkpoint."})
	m.AuditAnchorMissing = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "audit_anchor_missing", Help: "1 while this replica's audit log holds entries but no anchor holds a checkpoint of it: nothing is signed or anchored until dispenser audit adopt."})
	m.AuditStartUnanchored = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "audit_start_unanchored_entries", Help: "Entries of this replica's audit log no anchored checkpoint covered when it started (the tail a crash left)."})
	m.RateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limited_total", Help: "Requests refused by a rate limit, by limit scope."}, []string{"scope"})
	m.RateLimitBackend = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "rate_limiter_backend", Help: "Which limiter is in use (1): redis or local fallback."}, []string{"backend"})
	m.RevocationHits = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "revocation_hits_total", Help: "Requests refused by a revocation, by kind."}, []string{"kind"})
	m.AuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "auth_failures_total", Help: "Authentication failures by method and reason."}, []string{"method", "reason"})
	m.JWTCacheEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jwt_cache_events_total", Help: "Verified-token cache events: hit (signature check skipped), miss, eviction (the cache was full), flush (the key set changed)."}, []string{"event"})
	m.PackedPolicySize = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "packed_policy_size_percent", Help: "PackedPolicySize reported by STS (percent of the limit).", Buckets: []float64{5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}})
	m.ServedLifetime = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "served_credential_remaining_seconds", Help: "Remaining lifetime of served credentials.", Buckets: []float64{300, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400, 43200}})
	m.STSThrottles = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "sts_throttles_total", Help: "Throttling answers from STS."})
	m.TLSCertExpiry = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "tls_cert_expiry_timestamp_seconds", Help: "NotAfter of the serving TLS certificate."})
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "config_reloads_total", Help: "Configuration reloads by result."}, []string{"result"})
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info", Help: "Build information."}, []string{"version", "goversion"})
	for _, c := range []prometheus.Collector{m.Requests, m.Issuances, m.Latency, m.BackendLatency, m.BackendErrors, m.CacheEvents, m.CacheSize,
		m.CacheOldestLeft, m.AuditWriteLatency, m.AuditBatchSize, m.AuditFailures, m.AuditAnchorAge, m.RateLimited, m.RateLimitBackend,
		m.RevocationHits, m.AuthFailures, m.JWTCacheEvents, m.PackedPolicySize, m.ServedLifetime, m.STSThrottles, m.TLSCertExpiry, m.ConfigReloads, m.BuildInfo} {
		f(c)
	}
	m.newLimitCollectors(f)
	f(m.AuditAnchorMissing)
	f(m.AuditStartUnanchored)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.BuildInfo.WithLabelValues(version, goVersion()).Set(1)
	return m
}

// Request counts one HTTP request.
func (m *Metrics) Request(route, method string, status int) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(route, method, itoa(status)).Inc()
}

// Decision counts one credential decision and its latency.
func (m *Metrics) Decision(tenant, operation, backend, outcome, reason string, d time.Duration) {
	if m == nil {
		return
	}
	m.Issuances.WithLabelValues(tenant, operation, backend, outcome, reason).Inc()
	m.Latency.WithLabelValues(outcome).Observe(d.Seconds())
}

// Backend records one backend call.
func (m *Metrics) Backend(name, typ, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.BackendLatency.WithLabelValues(name, typ).Observe(d.Seconds())
	if code != "" {
		m.BackendErrors.WithLabelValues(name, code).Inc()
	}
}

// Cache counts a cache event (hit, miss, eviction, refresh, refresh_error).
func (m *Metrics) Cache(event string) {
	if m == nil {
		return
	}
	m.CacheEvents.WithLabelValues(event).Inc()
}

// AddCache makes a credential cache's state part of the cache gauges,
// read at every scrape, and returns the function that removes it. Several
// caches (one per backend) add up: their sizes sum and the soonest floor
// is the least among non-empty caches (0 when every cache is empty).
func (m *Metrics) AddCache(src CacheSource) (remove func()) {
	if m == nil {
		return func() {}
	}
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	if m.caches == nil {
		m.caches = map[int]CacheSource{}
	}
	id := m.cacheNext
	m.cacheNext++
	m.caches[id] = src
	return func() {
		m.cacheMu.Lock()
		defer m.cacheMu.Unlock()
		delete(m.caches, id)
	}
}

func (m *Metrics) cacheState() (size int, soonest time.Duration) {
	m.cacheMu.Lock()
	srcs := make([]CacheSource, 0, len(m.caches))
	for _, s := range m.caches {
		srcs = append(srcs, s)
	}
	m.cacheMu.Unlock()
	soonest = -1
	for _, src := range srcs {
		n, d := src()
		size += n
		if n > 0 && (soonest < 0 || d < soonest) {
			soonest = d
		}
	}
	return size, max(soonest, 0)
}

// AuditWrite records one group commit.
func (m *Metrics) AuditWrite(batch int, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.AuditBatchSize.Observe(float64(batch))
	m.AuditWriteLatency.Observe(d.Seconds())
	if err != nil {
		m.AuditFailures.WithLabelValues("write").Inc()
	}
}

// AuditFailure counts an audit failure of a kind.
func (m *Metrics) AuditFailure(kind string) {
	if m == nil {
		return
	}
	m.AuditFailures.WithLabelValues(kind).Inc()
}

// AnchorAge sets the newest anchored checkpoint's age.
func (m *Metrics) AnchorAge(d time.Duration) {
	if m == nil {
		return
	}
	m.AuditAnchorAge.Set(d.Seconds())
}

// AnchorMissing sets whether this replica's log lacks an anchored checkpoint.
func (m *Metrics) AnchorMissing(v bool) {
	if m == nil {
		return
	}
	if v {
		m.AuditAnchorMissing.Set(1)
		return
	}
	m.AuditAnchorMissing.Set(0)
}

// StartUnanchored sets the unanchored tail found at start.
func (m *Metrics) StartUnanchored(n int64) {
	if m == nil {
		return
	}
	m.AuditStartUnanchored.Set(float64(n))
}

// AuthFailure counts one authentication failure.
func (m *Metrics) AuthFailure(method, reason string) {
	if m == nil {
		return
	}
	m.AuthFailures.WithLabelValues(method, reason).Inc()
}

// JWTCache counts a verified-token cache event (hit, miss, eviction, flush).
func (m *Metrics) JWTCache(event string) {
	if m == nil {
		return
	}
	m.JWTCacheEvents.WithLabelValues(event).Inc()
}

// Served records a served credential's remaining lifetime and packed size.
func (m *Metrics) Served(remaining time.Duration, packedPolicySize int) {
	if m == nil {
		return
	}
	m.ServedLifetime.Observe(remaining.Seconds())
	if packedPolicySize >= 0 {
		m.PackedPolicySize.Observe(float64(packedPolicySize))
	}
}

// STSThrottled counts one STS throttling answer.
func (m *Metrics) STSThrottled() {
	if m == nil {
		return
	}
	m.STSThrottles.Inc()
}

// Limited counts a rate-limit refusal.
func (m *Metrics) Limited(scope string) {
	if m == nil {
		return
	}
	m.RateLimited.WithLabelValues(scope).Inc()
}

// Revoked counts a revocation hit.
func (m *Metrics) Revoked(kind string) {
	if m == nil {
		return
	}
	m.RevocationHits.WithLabelValues(kind).Inc()
}
