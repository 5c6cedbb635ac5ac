package audit

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/metrics"
)

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit: writer closed")

// Writer group-commits records: concurrent Record calls share one Append
// (one transaction, one fsync) of at most BatchSize records. A batch starts
// as soon as a record arrives and takes whatever else is already waiting,
// then, if the previous batch held more than one record, waits at most
// MaxWait for more, so an idle dispenser adds no delay and a busy one
// amortizes each commit over many requests.
type Writer struct {
	store   Store
	max     int
	wait    time.Duration
	metrics *metrics.Metrics
	mirror  *zap.Logger
	timeout time.Duration

	last    int // records in the previous batch (loop goroutine only)
	reqs    chan *pending
	mu      sync.RWMutex // guards closed against concurrent sends
	closed  bool
	done    chan struct{}
	stopped chan struct{}
}

type pending struct {
	rec Record
	res chan error
}

// WriterOptions tune a Writer.
type WriterOptions struct {
	BatchSize int           // default 256
	MaxWait   time.Duration // default 0: commit as soon as the store is free
	Metrics   *metrics.Metrics
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
		reqs: make(chan *pending, o.BatchSize), done: make(chan struct{}), stopped: make(chan struct{})}
	go w.loop()
	return w
}

// Record implements api.Recorder: it returns nil only after rec is durable.
// If ctx ends first the record may still be written, but the caller gets an
// error and must withhold the credentials (a record without a delivered
// credential is the safe direction of failure).
func (w *Writer) Record(ctx context.Context, rec Record) error {
	p := &pending{rec: rec, res: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrClosed
	}
	select {
	case w.reqs <- p:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-p.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
		w.last = len(batch)
		w.commit(batch)
		if !open {
			return
		}
	}
}

// fill adds waiting records to batch; it reports false once reqs is closed.
func (w *Writer) fill(batch *[]*pending) bool {
	var timer <-chan time.Time
	// Waiting pays only under concurrency: after a batch of one record
	// (an idle dispenser) the next commit starts at once.
	if w.wait > 0 && w.last > 1 {
		t := time.NewTimer(w.wait)
		defer t.Stop()
		timer = t.C
	}
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
		if timer == nil {
			return true
		}
		select {
		case p, ok := <-w.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, p)
		case <-timer:
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
