package audit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/metrics"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: writer closed")

// Writer group-commits records: concurrent Record calls share one Append
// (one transaction, one fsync) of at most BatchSize records. A batch starts
// as soon as a record arrives and takes whatever else is already waiting.
// It then waits (at most MaxWait) for more only while records announced
// with Expect are still on their way, so it never waits for nobody: a lone
// caller, or a burst whose every record is already queued, commits at once,
// and a busy dispenser amortizes each commit over the requests in flight.
// Recorders that never announce (the revocation journal, the CLI) are
// committed without waiting.
type Writer struct {
	store   Store
	max     int
	wait    time.Duration
	metrics *metrics.Metrics
	mirror  *zap.Logger
	timeout time.Duration

	// inflight counts records announced by Expect and not yet queued
	// (or cancelled); nudge wakes a waiting batch when it drops to zero.
	inflight atomic.Int64
	nudge    chan struct{}
	reqs     chan *pending
	mu       sync.RWMutex // guards closed against concurrent sends
	closed   bool
	done     chan struct{}
	stopped  chan struct{}
}

type pending struct {
	rec Record
	res chan error
}

// WriterOptions tune a Writer.
type WriterOptions struct {
	BatchSize int // default 256
	// MaxWait bounds how long a batch waits for announced records still
	// on their way (default 0: commit as soon as the store is free).
	MaxWait time.Duration
	Metrics *metrics.Metrics
	// Mirror, when set, receives every durable record as one log line (for
	// log shipping). It is a copy, never the evidence.
	Mirror *zap.Logger
	// Timeout bounds one commit (default 5s): a hung store fails the
	// waiting requests with 503 instead of holding them.
	Timeout time.Duration
}

// NewWriter starts a Writer over s.
func NewWriter(s Store, o WriterOptions) *Writer {
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	w := &Writer{store: s, max: o.BatchSize, wait: o.MaxWait, metrics: o.Metrics, mirror: o.Mirror, timeout: o.Timeout,
		reqs: make(chan *pending, o.BatchSize), nudge: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go w.loop()
	return w
}

// Record implements api.Recorder: it returns nil only after rec is durable.
// If ctx ends first the record may still be written, but the caller gets an
// error and must withhold the credentials (a record without a delivered
// credential is the safe direction of failure).
func (w *Writer) Record(ctx context.Context, rec Record) error {
	return w.record(ctx, rec, nil)
}

// record queues rec, ends the announcement e (when not nil) once rec is
// queued or cannot be, and waits until rec is durable.
func (w *Writer) record(ctx context.Context, rec Record, e *Expected) error {
	p := &pending{rec: rec, res: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		e.end()
		return ErrClosed
	}
	select {
	case w.reqs <- p:
		w.mu.RUnlock()
		// Ended after queueing, so the batch never sees "nothing in
		// flight" while this record is neither queued nor counted.
		e.end()
	case <-ctx.Done():
		w.mu.RUnlock()
		e.end()
		return ctx.Err()
	}
	select {
	case err := <-p.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Expect announces a record on its way to the writer: a request that has
// passed authentication and will record its decision. While announced
// records are not yet queued, a batch waits (at most MaxWait) for them
// instead of committing without them. The caller must end the announcement
// exactly once, by Expected.Record or Expected.Cancel (Cancel after Record
// is a no-op, so `defer e.Cancel()` covers every exit path); an
// announcement never ended would make every batch wait MaxWait.
func (w *Writer) Expect() *Expected {
	w.inflight.Add(1)
	return &Expected{w: w}
}

// Expected is one announced record (see Writer.Expect).
type Expected struct {
	w     *Writer
	ended atomic.Bool
}

// Record is Writer.Record for the announced record, and ends the
// announcement. Called again after the announcement ended, it records
// like Writer.Record.
func (e *Expected) Record(ctx context.Context, rec Record) error {
	if e.ended.Load() {
		return e.w.Record(ctx, rec)
	}
	return e.w.record(ctx, rec, e)
}

// Cancel ends the announcement without a record (a dry run, a panic, a
// client gone). It is safe to call more than once, and after Record.
func (e *Expected) Cancel() { e.end() }

// end ends the announcement once; nil-safe for unannounced records.
func (e *Expected) end() {
	if e == nil || !e.ended.CompareAndSwap(false, true) {
		return
	}
	if e.w.inflight.Add(-1) == 0 {
		// A batch may be waiting for exactly this one.
		select {
		case e.w.nudge <- struct{}{}:
		default:
		}
	}
}

// Close stops accepting records, commits those already queued and returns.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.stopped
	return nil
}

func (w *Writer) loop() {
	defer close(w.stopped)
	batch := make([]*pending, 0, w.max)
	for {
		p, ok := <-w.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], p)
		open := w.fill(&batch)
		w.commit(batch)
		if !open {
			return
		}
	}
}

// fill adds waiting records to batch; it reports false once reqs is closed.
// Once everything queued is in, it waits only while announced records are
// still on their way, and at most MaxWait from the first wait.
func (w *Writer) fill(batch *[]*pending) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(*batch) < w.max {
		select {
		case p, ok := <-w.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, p)
			continue
		default:
		}
		if w.wait <= 0 || w.inflight.Load() <= 0 {
			return true
		}
		if timer == nil {
			timer = time.NewTimer(w.wait)
		}
		select {
		case p, ok := <-w.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, p)
		case <-w.nudge:
			// The last announced record arrived or was cancelled: look again.
		case <-timer.C:
			return true
		}
	}
	return true
}

func (w *Writer) commit(batch []*pending) {
	recs := make([]Record, len(batch))
	for i, p := range batch {
		recs[i] = p.rec
	}
	start := time.Now()
	// The batch is not tied to any one request's context: one caller giving
	// up must not fail the others.
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	entries, err := w.store.Append(ctx, recs)
	cancel()
	w.metrics.AuditWrite(len(batch), time.Since(start), err)
	for _, p := range batch {
		p.res <- err
	}
	if err == nil && w.mirror != nil {
		for _, e := range entries {
			w.mirror.Info("audit record", zap.Any("record", e.Record))
		}
	}
}
