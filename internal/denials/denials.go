// Package denials bounds the audit records refusals write. Every issuance
// is recorded; a refusal (outcome denied or failed) is recorded on its own
// only within a global budget of records per second, shared by every
// client. Past the budget, or while the audit volume is low on space,
// refusals are counted instead, and each interval ends with one summary
// record per outcome and reason (count, distinct client addresses, a
// bounded sample, the interval), written through the same recorder. So a
// flood from many addresses cannot grow the trail faster than the budget,
// and the trail still says what happened.
package denials

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/metrics"
)

// Why a refusal was folded into a summary instead of recorded (the
// folded_by keys of a summary and the cause label of
// dispenser_denial_records_folded_total).
const (
	// CauseBudget: the global denial-record budget was spent.
	CauseBudget = "record_budget"
	// CauseVolumeLow: the audit volume is under its free-space floor.
	CauseVolumeLow = "volume_low"
	// CauseAuthFailures: the client was over its failed-authentication
	// budget and refused before authentication (never recorded alone).
	CauseAuthFailures = "auth_failure_budget"
)

// Sample bounds: at most this many client addresses and principals are
// named in a summary, and distinct addresses are counted exactly up to
// maxDistinct per summary.
const (
	sampleSize  = 10
	maxDistinct = 4096
)

// Recorder makes a record durable (the audit writer). Record returns nil
// only once rec is durable.
type Recorder interface {
	Record(ctx context.Context, rec audit.Record) error
}

// Options configure a Trail.
type Options struct {
	// Next receives issuances, refusals within the budget and summaries.
	Next Recorder
	// Expect, when set, announces a record to Next (its group commit);
	// Trail.Expect passes announcements through it.
	Expect func() Expectation
	// Rate and Burst are the global budget of individual refusal records
	// (records per second across all clients). Rate 0 records every one.
	Rate  float64
	Burst int
	// Interval is how often summaries are written (default 10s).
	Interval time.Duration
	// Low, when set and true, means the audit volume is short of space:
	// every refusal is folded.
	Low func() bool
	// ReplicaID names this replica in summary records.
	ReplicaID string
	Metrics   *metrics.Metrics
	Logger    *zap.Logger
	Now       func() time.Time
	// WriteTimeout bounds writing the summaries of one interval
	// (default 10s).
	WriteTimeout time.Duration
}

// Trail is a Recorder that folds refusals past the budget into summaries.
// Run writes them each interval; Close writes those still open, so call it
// before Next closes.
type Trail struct {
	o   Options
	lim *rate.Limiter // nil: no budget

	mu      sync.Mutex
	windows map[key]*window
	// closed is set under mu, so a fold either lands in a window the
	// final flush writes or sees it set.
	closed atomic.Bool

	stop    chan struct{}
	running sync.WaitGroup // Run, while it runs
}

type key struct {
	outcome audit.Outcome
	reason  string
}

// window is the refusals of one outcome and reason folded since the last
// summary.
type window struct {
	from, last time.Time
	count      int
	foldedBy   map[string]int
	clients    map[string]struct{}
	capped     bool
	sample     []string
	principals []string
}

// New returns a Trail; Run writes its summaries on the interval.
func New(o Options) *Trail {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Trail{o: o, windows: map[key]*window{}, stop: make(chan struct{})}
	if o.Rate > 0 {
		t.lim = rate.NewLimiter(rate.Limit(o.Rate), max(o.Burst, 1))
	}
	return t
}

// Record implements the api's Recorder. Issuances and revocation changes
// pass through. A refusal passes through while the budget allows and the
// volume has room; otherwise it is folded and Record returns nil at once
// (the refusal is answered; its summary follows within the interval).
func (t *Trail) Record(ctx context.Context, rec audit.Record) error {
	if t.folded(rec) {
		return nil
	}
	return t.o.Next.Record(ctx, rec)
}

// folded folds rec and reports true when it is a refusal past the budget
// or on a volume short of space; otherwise rec is to be recorded.
func (t *Trail) folded(rec audit.Record) bool {
	if rec.Outcome != audit.Denied && rec.Outcome != audit.Failed || t.closed.Load() {
		return false
	}
	switch {
	case t.o.Low != nil && t.o.Low():
		t.fold(rec, CauseVolumeLow)
	case t.lim != nil && !t.lim.AllowN(t.o.Now(), 1):
		t.fold(rec, CauseBudget)
	default:
		return false
	}
	return true
}

// Expectation is one record announced to a batching recorder (the audit
// writer's group commit, audit.Writer.Expect): Record or Cancel ends it.
type Expectation interface {
	Record(ctx context.Context, rec audit.Record) error
	Cancel()
}

// Expect announces one record to Next (through Options.Expect), so its
// group commit waits for it; a refusal the trail folds ends the
// announcement without a record. Without Options.Expect it announces
// nothing and records like Record.
func (t *Trail) Expect() Expectation {
	e := &expected{t: t}
	if t.o.Expect != nil {
		e.next = t.o.Expect()
	}
	return e
}

type expected struct {
	t    *Trail
	next Expectation // nil: Next does not batch
}

func (e *expected) Record(ctx context.Context, rec audit.Record) error {
	if e.t.folded(rec) {
		e.Cancel()
		return nil
	}
	if e.next == nil {
		return e.t.o.Next.Record(ctx, rec)
	}
	return e.next.Record(ctx, rec)
}

func (e *expected) Cancel() {
	if e.next != nil {
		e.next.Cancel()
	}
}

// Fold counts a refusal that is never recorded on its own (a client over
// its failed-authentication budget) into the summaries.
func (t *Trail) Fold(rec audit.Record) { t.fold(rec, CauseAuthFailures) }

func (t *Trail) fold(rec audit.Record, cause string) {
	t.o.Metrics.DenialFolded(cause)
	now := t.o.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		// Only a request outliving shutdown gets here: nothing will
		// write another summary, so the log carries it.
		t.o.Logger.Warn("refusal after the denial trail closed; not recorded", zap.String("reason", rec.Reason),
			zap.String("client", rec.ClientAddr), zap.String("cause", cause))
		return
	}
	k := key{rec.Outcome, rec.Reason}
	w := t.windows[k]
	if w == nil {
		w = &window{from: now, foldedBy: map[string]int{}, clients: map[string]struct{}{}}
		t.windows[k] = w
	}
	w.count++
	w.last = now
	w.foldedBy[cause]++
	if _, seen := w.clients[rec.ClientAddr]; !seen {
		if len(w.clients) < maxDistinct {
			w.clients[rec.ClientAddr] = struct{}{}
			if len(w.sample) < sampleSize {
				w.sample = append(w.sample, rec.ClientAddr)
			}
		} else {
			w.capped = true
		}
	}
	if p := rec.Principal; p != "" && len(w.principals) < sampleSize && !contains(w.principals, cut(p, 256)) {
		w.principals = append(w.principals, cut(p, 256))
	}
}

// Summary is the Detail of a summary record.
type Summary struct {
	// Outcome and Reason are those of the folded refusals.
	Outcome audit.Outcome `json:"outcome"`
	Reason  string        `json:"reason"`
	Count   int           `json:"count"`
	// DistinctClients counts the client addresses, exactly up to 4096
	// (DistinctClientsCapped says the count stopped there).
	DistinctClients       int  `json:"distinct_clients"`
	DistinctClientsCapped bool `json:"distinct_clients_capped,omitempty"`
	// ClientsSample and PrincipalsSample name the first ten of each.
	ClientsSample    []string `json:"clients_sample"`
	PrincipalsSample []string `json:"principals_sample,omitempty"`
	// From is the first folded refusal, Until when the summary was made.
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
	// FoldedBy counts the refusals by why they were folded.
	FoldedBy map[string]int `json:"folded_by"`
}

// Run writes the open summaries every interval until ctx ends or Close
// is called (which writes the last ones).
func (t *Trail) Run(ctx context.Context) {
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		return
	}
	t.running.Add(1)
	t.mu.Unlock()
	defer t.running.Done()
	tick := time.NewTicker(t.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.stop:
			return
		case <-tick.C:
			t.flush(false)
		}
	}
}

// flush writes one summary per open window. A summary that cannot be
// written is kept (merged into the next) and retried; at Close it is
// logged in full instead, so no count is lost silently.
func (t *Trail) flush(final bool) {
	t.mu.Lock()
	open := t.windows
	t.windows = map[key]*window{}
	t.mu.Unlock()
	if len(open) == 0 {
		return
	}
	keys := make([]key, 0, len(open))
	for k := range open {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].outcome != keys[j].outcome {
			return keys[i].outcome < keys[j].outcome
		}
		return keys[i].reason < keys[j].reason
	})
	ctx, cancel := context.WithTimeout(context.Background(), t.o.WriteTimeout)
	defer cancel()
	until := t.o.Now()
	for _, k := range keys {
		w := open[k]
		sum := Summary{Outcome: k.outcome, Reason: k.reason, Count: w.count, DistinctClients: len(w.clients),
			DistinctClientsCapped: w.capped, ClientsSample: w.sample, PrincipalsSample: w.principals,
			From: w.from.UTC(), Until: until.UTC(), FoldedBy: w.foldedBy}
		detail, err := audit.NewDetail(sum)
		if err == nil {
			rec := audit.Record{Time: until.UTC(), Outcome: audit.Summarized, Reason: k.reason, ReplicaID: t.o.ReplicaID,
				PackedPolicySize: -1, Detail: detail}
			err = t.o.Next.Record(ctx, rec)
		}
		if err == nil {
			continue
		}
		t.o.Metrics.AuditFailure("summary")
		if final {
			t.o.Logger.Error("denial summary not recorded at shutdown; its counts are in this log line only",
				zap.Any("summary", sum), zap.Error(err))
			continue
		}
		t.o.Logger.Error("denial summary not recorded; retrying with the next interval's", zap.String("reason", k.reason),
			zap.Int("count", w.count), zap.Error(err))
		t.mu.Lock()
		t.windows[k] = merge(w, t.windows[k])
		t.mu.Unlock()
	}
}

// merge folds the later window b (may be nil) into a.
func merge(a, b *window) *window {
	if b == nil {
		return a
	}
	a.count += b.count
	a.last = b.last
	for c, n := range b.foldedBy {
		a.foldedBy[c] += n
	}
	for c := range b.clients {
		if _, seen := a.clients[c]; seen {
			continue
		}
		if len(a.clients) >= maxDistinct {
			a.capped = true
			break
		}
		a.clients[c] = struct{}{}
		if len(a.sample) < sampleSize {
			a.sample = append(a.sample, c)
		}
	}
	a.capped = a.capped || b.capped
	for _, p := range b.principals {
		if len(a.principals) < sampleSize && !contains(a.principals, p) {
			a.principals = append(a.principals, p)
		}
	}
	return a
}

// Close stops Run and writes the summaries still open. Refusals arriving
// after Close are recorded on their own (Next decides).
func (t *Trail) Close() error {
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		return nil
	}
	t.closed.Store(true)
	t.mu.Unlock()
	close(t.stop)
	t.running.Wait()
	t.flush(true)
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// cut shortens s to at most n bytes on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
