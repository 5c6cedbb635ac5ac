package denials

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/metrics"
)

// fakeNext is a Recorder keeping what it is given; err fails it.
type fakeNext struct {
	mu   sync.Mutex
	recs []audit.Record
	err  error
}

func (f *fakeNext) Record(_ context.Context, r audit.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.recs = append(f.recs, r)
	return nil
}

func (f *fakeNext) take() []audit.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.recs
	f.recs = nil
	return out
}

func (f *fakeNext) fail(err error) { f.mu.Lock(); f.err = err; f.mu.Unlock() }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func refusal(reason, client string) audit.Record {
	return audit.Record{Outcome: audit.Denied, Reason: reason, ClientAddr: client, PackedPolicySize: -1}
}

func newTrail(t *testing.T, o Options) (*Trail, *fakeNext, *clock) {
	t.Helper()
	next := &fakeNext{}
	c := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	o.Next, o.Now = next, c.now
	if o.Interval == 0 {
		o.Interval = time.Hour // the tests flush themselves
	}
	tr := New(o)
	t.Cleanup(func() { _ = tr.Close() })
	return tr, next, c
}

func summaries(t *testing.T, recs []audit.Record) map[string]Summary {
	t.Helper()
	out := map[string]Summary{}
	for _, r := range recs {
		if r.Outcome != audit.Summarized {
			continue
		}
		var s Summary
		if err := r.Detail.Decode(&s); err != nil {
			t.Fatal(err)
		}
		if s.Reason != r.Reason || r.PackedPolicySize != -1 || r.ReplicaID != "r1" {
			t.Fatalf("summary record %+v", r)
		}
		out[string(s.Outcome)+"/"+s.Reason] = s
	}
	return out
}

func TestBudgetFoldsPastBurstIntoOneSummaryPerReason(t *testing.T) {
	m := metrics.New("test")
	tr, next, c := newTrail(t, Options{Rate: 1, Burst: 3, ReplicaID: "r1", Metrics: m})
	ctx := context.Background()
	for i := range 10 {
		if err := tr.Record(ctx, refusal("jwt_malformed", fmt.Sprintf("10.0.0.%d", i%4))); err != nil {
			t.Fatal(err)
		}
	}
	failed := audit.Record{Outcome: audit.Failed, Reason: "iam_sts_unavailable", ClientAddr: "10.0.0.9", PackedPolicySize: -1}
	_ = tr.Record(ctx, failed)
	for range 5 {
		if err := tr.Record(ctx, audit.Record{Outcome: audit.Issued}); err != nil {
			t.Fatal(err)
		}
	}
	recs := next.take()
	if len(recs) != 3+5 {
		t.Fatalf("%d records passed through, want the burst of 3 refusals and every issuance", len(recs))
	}
	c.add(2 * time.Second) // two tokens back
	for range 3 {
		_ = tr.Record(ctx, refusal("jwt_malformed", "10.0.0.1"))
	}
	if got := len(next.take()); got != 2 {
		t.Fatalf("%d refusals recorded after 2s at 1/s, want 2", got)
	}
	tr.flush(false)
	sums := summaries(t, next.take())
	if len(sums) != 2 {
		t.Fatalf("summaries %+v, want one per outcome and reason", sums)
	}
	j := sums["denied/jwt_malformed"]
	if j.Count != 8 || j.DistinctClients != 4 || len(j.ClientsSample) != 4 || j.FoldedBy[CauseBudget] != 8 || !j.Until.After(j.From) {
		t.Fatalf("jwt summary %+v", j)
	}
	if f := sums["failed/iam_sts_unavailable"]; f.Count != 1 || len(f.ClientsSample) != 1 || f.ClientsSample[0] != "10.0.0.9" {
		t.Fatalf("failed summary %+v", f)
	}
	if got := testutil.ToFloat64(m.DenialsFolded.WithLabelValues(CauseBudget)); got != 9 {
		t.Fatalf("folded metric %v, want 9", got)
	}
	// Nothing new: no empty summaries.
	tr.flush(false)
	if recs := next.take(); len(recs) != 0 {
		t.Fatalf("empty interval wrote %+v", recs)
	}
}

func TestVolumeLowFoldsEveryRefusal(t *testing.T) {
	var low bool
	var mu sync.Mutex
	tr, next, _ := newTrail(t, Options{Rate: 100, Burst: 100, ReplicaID: "r1", Low: func() bool { mu.Lock(); defer mu.Unlock(); return low }})
	ctx := context.Background()
	mu.Lock()
	low = true
	mu.Unlock()
	for range 5 {
		_ = tr.Record(ctx, refusal("scope_denied", "10.1.1.1"))
	}
	if err := tr.Record(ctx, audit.Record{Outcome: audit.Issued}); err != nil {
		t.Fatal(err)
	}
	if recs := next.take(); len(recs) != 1 || recs[0].Outcome != audit.Issued {
		t.Fatalf("with the volume low: %+v, want the issuance only", recs)
	}
	tr.Fold(refusal("rate_limited_auth_failures", "10.1.1.2"))
	tr.flush(false)
	sums := summaries(t, next.take())
	if s := sums["denied/scope_denied"]; s.Count != 5 || s.FoldedBy[CauseVolumeLow] != 5 {
		t.Fatalf("summary %+v", s)
	}
	if s := sums["denied/rate_limited_auth_failures"]; s.Count != 1 || s.FoldedBy[CauseAuthFailures] != 1 {
		t.Fatalf("blocked summary %+v", s)
	}
}

func TestSummaryWriteFailureIsRetriedThenLoggedAtClose(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	m := metrics.New("test")
	tr, next, _ := newTrail(t, Options{Rate: 0.001, Burst: 1, ReplicaID: "r1", Logger: zap.New(core), Metrics: m})
	ctx := context.Background()
	_ = tr.Record(ctx, refusal("jwt_expired", "10.2.0.1"))
	next.take()
	for range 3 {
		_ = tr.Record(ctx, refusal("jwt_expired", "10.2.0.2"))
	}
	next.fail(errors.New("disk full"))
	tr.flush(false)
	next.fail(nil)
	_ = tr.Record(ctx, refusal("jwt_expired", "10.2.0.3"))
	tr.flush(false)
	sums := summaries(t, next.take())
	if s := sums["denied/jwt_expired"]; s.Count != 4 || s.DistinctClients != 2 {
		t.Fatalf("after a failed write, summary %+v, want the 3 kept plus the new one", s)
	}
	// At Close a summary that cannot be written goes to the log in full.
	_ = tr.Record(ctx, refusal("jwt_expired", "10.2.0.4"))
	next.fail(errors.New("disk full"))
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range logs.FilterMessageSnippet("at shutdown").All() {
		s, ok := e.ContextMap()["summary"].(Summary)
		found = found || ok && s.Count == 1 && s.Reason == "jwt_expired" && s.ClientsSample[0] == "10.2.0.4"
	}
	if !found {
		t.Fatalf("the unwritten summary is not in the log: %v", logs.All())
	}
	if got := testutil.ToFloat64(m.AuditFailures.WithLabelValues("summary")); got != 2 {
		t.Fatalf("audit_failures_total{kind=summary} = %v, want 2", got)
	}
	// After Close, refusals go straight to the recorder.
	next.fail(nil)
	_ = tr.Record(ctx, refusal("jwt_expired", "10.2.0.5"))
	if recs := next.take(); len(recs) != 1 || recs[0].Outcome != audit.Denied {
		t.Fatalf("after close: %+v", recs)
	}
}

func TestCloseFlushesAndDistinctClientsAreBounded(t *testing.T) {
	tr, next, _ := newTrail(t, Options{Rate: 0.001, Burst: 1, ReplicaID: "r1"})
	ctx := context.Background()
	for i := range maxDistinct + 100 {
		_ = tr.Record(ctx, refusal("jwt_malformed", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)))
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	s := summaries(t, next.take())["denied/jwt_malformed"]
	if s.Count != maxDistinct+99 || s.DistinctClients != maxDistinct || !s.DistinctClientsCapped || len(s.ClientsSample) != sampleSize {
		t.Fatalf("summary count %d distinct %d capped %v sample %d", s.Count, s.DistinctClients, s.DistinctClientsCapped, len(s.ClientsSample))
	}
}

func TestLoopWritesSummariesEachInterval(t *testing.T) {
	next := &fakeNext{}
	tr := New(Options{Next: next, Rate: 0.001, Burst: 1, Interval: 20 * time.Millisecond, ReplicaID: "r1"})
	defer tr.Close()
	ctx := context.Background()
	go tr.Run(ctx)
	_ = tr.Record(ctx, refusal("jwt_malformed", "10.3.0.1"))
	_ = tr.Record(ctx, refusal("jwt_malformed", "10.3.0.1"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		next.mu.Lock()
		n := len(next.recs)
		next.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no summary written by the loop: %+v", next.take())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCut(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"aé", 2, "a"}, {"éé", 3, "é"}} {
		if got := cut(c.in, c.n); got != c.want {
			t.Errorf("cut(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// announced records what happened to one announcement.
type announced struct {
	next              *fakeNext
	recorded, cancels int
}

func (a *announced) Record(ctx context.Context, r audit.Record) error {
	a.recorded++
	return a.next.Record(ctx, r)
}

func (a *announced) Cancel() { a.cancels++ }

// TestExpectPassesAnnouncementsThrough: an announced issuance, and a
// refusal within the budget, reach the writer through their announcement;
// a refusal the trail folds ends its announcement without a record, so the
// writer's group commit never waits for it.
func TestExpectPassesAnnouncementsThrough(t *testing.T) {
	var made []*announced
	tr, next, _ := newTrail(t, Options{Rate: 1, Burst: 1, Expect: func() Expectation {
		a := &announced{next: nil}
		made = append(made, a)
		return a
	}})
	for i := range 3 {
		e := tr.Expect()
		made[i].next = next
		rec := refusal("jwt_invalid", "10.0.0.1")
		if i == 0 {
			rec = audit.Record{Outcome: audit.Issued, AccessKeyID: "ASIA1", PackedPolicySize: -1}
		}
		if err := e.Record(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	// The issuance and the first refusal (the budget's one token) are
	// recorded through their announcements; the second refusal is folded.
	if got := [3]int{made[0].recorded, made[1].recorded, made[2].recorded}; got != [3]int{1, 1, 0} {
		t.Fatalf("recorded through announcements: %v", got)
	}
	if made[2].cancels != 1 || made[0].cancels+made[1].cancels != 0 {
		t.Fatalf("cancels: %d %d %d", made[0].cancels, made[1].cancels, made[2].cancels)
	}
	if n := len(next.take()); n != 2 {
		t.Fatalf("writer got %d records, want 2", n)
	}
	// Cancel without a record ends the announcement too.
	e := tr.Expect()
	e.Cancel()
	if made[3].cancels != 1 {
		t.Fatal("Cancel did not end the announcement")
	}
	// Without Options.Expect the trail records directly.
	plain, next2, _ := newTrail(t, Options{})
	if err := plain.Expect().Record(context.Background(), audit.Record{Outcome: audit.Issued, PackedPolicySize: -1}); err != nil || len(next2.take()) != 1 {
		t.Fatalf("plain expect: %v", err)
	}
}

// TestAuthenticatedRefusalsHaveABudgetPerPrincipal: an anonymous flood
// spends the shared budget but not a principal's; one principal's flood
// spends only its own, so another principal's refusal is still recorded on
// its own; and the folded refusals of a principal are summarised under its
// name with what it asked for, so a query by principal finds its probe.
func TestAuthenticatedRefusalsHaveABudgetPerPrincipal(t *testing.T) {
	tr, next, _ := newTrail(t, Options{Rate: 1, Burst: 2, ReplicaID: "r1"})
	ctx := context.Background()
	for i := range 20 {
		_ = tr.Record(ctx, refusal("jwt_malformed", fmt.Sprintf("10.0.1.%d", i)))
	}
	probe := func(p, prefix string) audit.Record {
		return audit.Record{Outcome: audit.Denied, Reason: "no_matching_grant", Principal: p, Org: "acme", ClientAddr: "10.0.0.5",
			Operation: "put", Bucket: "finance", Prefix: prefix, JobID: "J1", PackedPolicySize: -1}
	}
	for i := range 30 {
		_ = tr.Record(ctx, probe("insider", fmt.Sprintf("p%02d/", i)))
	}
	_ = tr.Record(ctx, probe("alice", "payroll/"))
	var individual []string
	for _, r := range next.take() {
		individual = append(individual, r.Principal+":"+r.Prefix)
	}
	// Two anonymous (the shared burst), two of the insider's, alice's.
	want := []string{":", ":", "insider:p00/", "insider:p01/", "alice:payroll/"}
	if fmt.Sprint(individual) != fmt.Sprint(want) {
		t.Fatalf("recorded individually %v, want %v", individual, want)
	}
	tr.flush(false)
	var insider *Summary
	for _, r := range next.take() {
		var s Summary
		if err := r.Detail.Decode(&s); err != nil {
			t.Fatal(err)
		}
		if s.Principal == "insider" {
			if r.Principal != "insider" || r.Org != "acme" || s.Org != "acme" {
				t.Fatalf("summary record %+v", r)
			}
			insider = &s
		} else if s.Principal != "" || r.Principal != "" {
			t.Fatalf("unexpected summary %+v", s)
		}
	}
	if insider == nil || insider.Count != 28 || len(insider.RequestsSample) != sampleSize ||
		insider.RequestsSample[0] != "put s3://finance/p02/ job=J1" {
		t.Fatalf("insider summary %+v", insider)
	}
}

// TestSummariesPerPrincipalAreBounded: past maxWindows open summaries,
// further principals join the summary without a principal, which still
// names them in its sample.
func TestSummariesPerPrincipalAreBounded(t *testing.T) {
	tr, next, _ := newTrail(t, Options{Rate: 1, Burst: 1})
	ctx := context.Background()
	for i := range maxWindows + 50 {
		p := fmt.Sprintf("p%d", i)
		for range 2 { // the first is within p's budget, the second folds
			_ = tr.Record(ctx, audit.Record{Outcome: audit.Denied, Reason: "scope", Principal: p, PackedPolicySize: -1})
		}
	}
	next.take()
	tr.flush(false)
	recs := next.take()
	if len(recs) != maxWindows+1 {
		t.Fatalf("%d summaries, want %d", len(recs), maxWindows+1)
	}
	var rest Summary
	for _, r := range recs {
		var s Summary
		_ = r.Detail.Decode(&s)
		if s.Principal == "" {
			rest = s
		}
	}
	if rest.Count != 50 || len(rest.PrincipalsSample) != sampleSize {
		t.Fatalf("overflow summary %+v", rest)
	}
}

// TestRunStopsOnContextOrClose: Run ends with its context, or with Close,
// which then writes the last summaries; a Run after Close returns at once.
func TestRunStopsOnContextOrClose(t *testing.T) {
	tr, next, _ := newTrail(t, Options{Rate: 0.001, Burst: 1})
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() { tr.Run(ctx); close(ended) }()
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end with its context")
	}
	go func() { tr.Run(context.Background()) }()
	_ = tr.Record(context.Background(), refusal("jwt_malformed", "10.4.0.1"))
	_ = tr.Record(context.Background(), refusal("jwt_malformed", "10.4.0.1"))
	closed := make(chan struct{})
	go func() { _ = tr.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop Run")
	}
	if recs := next.take(); len(recs) != 2 || recs[1].Outcome != audit.Summarized {
		t.Fatalf("after Close: %+v, want the refusal and its summary", recs)
	}
	done := make(chan struct{})
	go func() { tr.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run after Close did not return")
	}
}
