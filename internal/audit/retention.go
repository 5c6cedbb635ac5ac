package audit

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// RetentionSource is what Retention reads, signs into and prunes.
type RetentionSource interface {
	LogReader
	CheckpointStore
	Pruner
}

// Retention deletes entries older than Keep from one log. Before deleting
// it signs and stores a checkpoint at the new floor P, and it keeps entry
// P-1, so the rest of the log still verifies from P (see Verify).
type Retention struct {
	Source RetentionSource
	Log    string
	Origin string // full origin (see Origin)
	Signer note.Signer
	// Anchors are checked before the checkpoint at the new floor is
	// signed: a tree that is not one history with every anchored
	// checkpoint, or that no anchor holds a checkpoint of, gets no
	// signature (and nothing is pruned), so retention never signs a
	// rewritten or unadopted log. An anchor that cannot be read stops
	// pruning until it can.
	Anchors []Anchor
	Keep    time.Duration
	Now     func() time.Time
	Logger  *zap.Logger
}

// Prune removes what is past retention now and returns how many entries
// it deleted.
func (r *Retention) Prune(ctx context.Context) (int64, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	cutoff := now().Add(-r.Keep)
	p, err := r.Source.FirstSeqSince(ctx, r.Log, cutoff)
	if err != nil {
		return 0, err
	}
	floor, err := r.Source.PrunedBefore(ctx, r.Log)
	if err != nil {
		return 0, err
	}
	if p <= 1 || p <= floor {
		return 0, nil
	}
	// p comes from the query columns, copies anyone who can write the
	// database can edit: the kept boundary entry's own bytes must be past
	// retention too, or an edited copy would make retention delete entries
	// still within it.
	b, err := r.Source.Body(ctx, r.Log, p-1)
	if err != nil {
		return 0, err
	}
	e, err := Decode(b)
	if err != nil {
		return 0, fmt.Errorf("audit retention: entry %d: %w", p-1, err)
	}
	if !e.Record.Time.Before(cutoff) {
		return 0, fmt.Errorf("audit retention: entry %d is within retention but its query columns say otherwise; not pruning (run dispenser audit verify)", p-1)
	}
	signed, err := r.Source.CheckpointAt(ctx, r.Log, p)
	if err != nil {
		return 0, err
	}
	hashes := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return r.Source.ReadHashes(ctx, r.Log, idx)
	})
	vouched := false
	for _, a := range r.Anchors {
		prev, ok, err := anchoredHead(ctx, a, r.Origin)
		if err != nil {
			return 0, fmt.Errorf("audit retention: %w", err)
		}
		if !ok {
			continue
		}
		if err := consistent(prev, p, hashes); err != nil {
			return 0, fmt.Errorf("audit retention: not pruning: %w", err)
		}
		vouched = true
	}
	if len(r.Anchors) > 0 && !vouched {
		// Like the checkpointer, retention signs nothing no anchor vouches for.
		return 0, fmt.Errorf("audit retention: not pruning: %w", ErrAnchorMissing)
	}
	if signed == nil {
		root, err := tlog.TreeHash(p, hashes)
		if err != nil {
			return 0, err
		}
		if signed, err = SignCheckpoint(r.Origin, p, root, r.Signer); err != nil {
			return 0, err
		}
		if err := r.Source.PutCheckpoint(ctx, r.Log, p, signed); err != nil {
			return 0, err
		}
	}
	return r.Source.Prune(ctx, r.Log, p)
}

// Run prunes at start and then every interval until ctx ends.
func (r *Retention) Run(ctx context.Context, interval time.Duration) {
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	for {
		if n, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
			log.Error("audit retention failed", zap.String("log", r.Log), zap.Error(err))
		} else if n > 0 {
			log.Info("audit retention pruned entries", zap.String("log", r.Log), zap.Int64("entries", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
