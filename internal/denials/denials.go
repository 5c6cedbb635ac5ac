// Package denials bounds the audit records refusals write. Every issuance
// is recorded; a refusal (outcome denied or failed) is recorded on its own
// only within a budget of records per second: one global budget for
// refusals of callers that were not authenticated, and one budget per
// principal for authenticated callers (so one insider's flood can neither
// hide another principal's refusals nor its own probe among anonymous
// noise). Past the budget, or while the audit volume is low on space,
// refusals are counted instead, and each interval ends with one summary
// record per outcome, reason and principal (count, distinct client
// addresses, bounded samples of clients and of the requests refused, the
// interval), written through the same recorder. So a flood from many
// addresses cannot grow the trail faster than the budget, and the trail
// still says what happened and who tried.
package denials

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/ratelimit"
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
	// maxWindows bounds the summaries of one interval: past it, refusals
	// of principals without a summary of their own join the summary
	// without a principal (which still samples their names).
	maxWindows = 1024
	// maxPrincipals bounds the principals with a budget of their own
	// (least recently refused forgotten first).
	maxPrincipals = 10000
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
	// Rate and Burst are the budget of individual refusal records (records
	// per second): shared by every caller that was not authenticated, and
	// the same again for each authenticated principal. Rate 0 records
	// every one.
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
	lim *rate.Limiter // unauthenticated refusals; nil: no budget
	// perPrincipal budgets the refusals of authenticated callers, one
	// bucket per principal (nil: no budget).
	perPrincipal *ratelimit.FailureGuard

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
	// principal and org are those of an authenticated caller (empty for
	// unauthenticated ones, and for principals past maxWindows).
	principal, org string
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
	requests   []string
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
		t.perPrincipal = ratelimit.NewFailureGuard(ratelimit.Limit{Rate: o.Rate, Burst: max(o.Burst, 1)}, maxPrincipals, o.Now)
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
	case !t.withinBudget(rec):
		t.fold(rec, CauseBudget)
	default:
		return false
	}
	return true
}

// withinBudget takes a token for rec from its principal's budget, or from
// the shared one when the caller was not authenticated.
func (t *Trail) withinBudget(rec audit.Record) bool {
	if t.lim == nil {
		return true
	}
	if rec.Principal != "" {
		return t.perPrincipal.Allow(rec.Org + "\x00" + rec.Principal)
	}
	return t.lim.AllowN(t.o.Now(), 1)
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
	k := key{outcome: rec.Outcome, reason: rec.Reason}
	if rec.Principal != "" {
		pk := key{outcome: rec.Outcome, reason: rec.Reason, principal: cut(rec.Principal, 256), org: cut(rec.Org, 256)}
		if t.windows[pk] != nil || len(t.windows) < maxWindows {
			k = pk
		}
	}
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
	if p := rec.Principal; p != "" && len(w.principals) < sampleSize && !slices.Contains(w.principals, cut(p, 256)) {
		w.principals = append(w.principals, cut(p, 256))
	}
	if q := requestOf(rec); q != "" && len(w.requests) < sampleSize && !slices.Contains(w.requests, q) {
		w.requests = append(w.requests, q)
	}
}

// requestOf names what a refused request asked for ("get
// s3://bucket/prefix job=J task=T"), bounded; empty when it named nothing.
func requestOf(rec audit.Record) string {
	var b []byte
	add := func(s string) {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, s...)
	}
	if rec.Operation != "" {
		add(rec.Operation)
	}
	if rec.Bucket != "" {
		add("s3://" + rec.Bucket + "/" + rec.Prefix)
	}
	if rec.JobID != "" {
		add("job=" + rec.JobID)
	}
	if rec.TaskID != "" {
		add("task=" + rec.TaskID)
	}
	return cut(string(b), 512)
}

// Summary is the Detail of a summary record.
type Summary struct {
	// Outcome and Reason are those of the folded refusals.
	Outcome audit.Outcome `json:"outcome"`
	Reason  string        `json:"reason"`
	// Principal and Org name the authenticated caller whose refusals
	// these are (also the record's own principal and org, so a query by
	// principal finds them); empty for unauthenticated callers.
	Principal string `json:"principal,omitempty"`
	Org       string `json:"org,omitempty"`
	Count     int    `json:"count"`
	// DistinctClients counts the client addresses, exactly up to 4096
	// (DistinctClientsCapped says the count stopped there).
	DistinctClients       int  `json:"distinct_clients"`
	DistinctClientsCapped bool `json:"distinct_clients_capped,omitempty"`
	// ClientsSample and PrincipalsSample name the first ten of each.
	ClientsSample    []string `json:"clients_sample"`
	PrincipalsSample []string `json:"principals_sample,omitempty"`
	// RequestsSample names the first ten distinct requests refused
	// (operation, location, job and task ids).
	RequestsSample []string `json:"requests_sample,omitempty"`
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
		a, b := keys[i], keys[j]
		if a.outcome != b.outcome {
			return a.outcome < b.outcome
		}
		if a.reason != b.reason {
			return a.reason < b.reason
		}
		if a.org != b.org {
			return a.org < b.org
		}
		return a.principal < b.principal
	})
	ctx, cancel := context.WithTimeout(context.Background(), t.o.WriteTimeout)
	defer cancel()
	until := t.o.Now()
	for _, k := range keys {
		w := open[k]
		sum := Summary{Outcome: k.outcome, Reason: k.reason, Principal: k.principal, Org: k.org, Count: w.count,
			DistinctClients: len(w.clients), DistinctClientsCapped: w.capped, ClientsSample: w.sample,
			PrincipalsSample: w.principals, RequestsSample: w.requests,
			From: w.from.UTC(), Until: until.UTC(), FoldedBy: w.foldedBy}
		detail, err := audit.NewDetail(sum)
		if err == nil {
			rec := audit.Record{Time: until.UTC(), Outcome: audit.Summarized, Reason: k.reason, Principal: k.principal,
				Org: k.org, ReplicaID: t.o.ReplicaID, PackedPolicySize: -1, Detail: detail}
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
		if len(a.principals) < sampleSize && !slices.Contains(a.principals, p) {
			a.principals = append(a.principals, p)
		}
	}
	for _, q := range b.requests {
		if len(a.requests) < sampleSize && !slices.Contains(a.requests, q) {
			a.requests = append(a.requests, q)
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
