package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Receipt proves one record is in its log: the entry bytes, an RFC 6962
// inclusion proof and a signed checkpoint. Anyone holding the log's
// verifier key can check it offline (VerifyReceipt).
type Receipt struct {
	ID         string      `json:"id"`
	Record     Record      `json:"record"`     // decoded from Entry, for reading
	Entry      []byte      `json:"entry"`      // the stored encoding (base64 in JSON)
	LeafIndex  int64       `json:"leaf_index"` // = seq
	TreeSize   int64       `json:"tree_size"`  // size of the checkpoint
	Proof      []tlog.Hash `json:"proof"`      // inclusion proof (base64 hashes)
	Origin     string      `json:"origin"`     // checkpoint origin
	Checkpoint string      `json:"checkpoint"` // signed C2SP checkpoint note
}

// ErrNotCheckpointed is returned for a record no checkpoint covers yet.
var ErrNotCheckpointed = errors.New("audit: the record is not covered by a checkpoint yet")

// Service serves queries and receipts over a trail.
type Service struct {
	Trail interface {
		Querier
		CheckpointSource
	}
	// Checkpointer, when set, signs a checkpoint on demand for a receipt
	// of a record newer than the last one (for its own log).
	Checkpointer *Checkpointer
	// OriginBase is the configured origin prefix.
	OriginBase string
}

// Query implements the admin query.
func (s *Service) Query(ctx context.Context, f Filter) (Page, error) { return s.Trail.Query(ctx, f) }

// Receipt returns the receipt of record id. Errors: ErrNotFound, a
// malformed id (ErrNotFound too), ErrNotCheckpointed.
func (s *Service) Receipt(ctx context.Context, id string) (*Receipt, error) {
	log, seq, err := ParseID(id)
	if err != nil {
		return nil, ErrNotFound
	}
	body, err := s.Trail.Body(ctx, log, seq)
	if err != nil {
		return nil, err
	}
	e, err := Decode(body)
	if err != nil {
		return nil, err
	}
	signed, err := s.Trail.LatestCheckpoint(ctx, log)
	if err != nil {
		return nil, err
	}
	size, _ := noteSize(signed)
	if (signed == nil || size <= seq) && s.Checkpointer != nil && s.Checkpointer.Log == log {
		if signed, err = s.Checkpointer.Checkpoint(ctx, false); err != nil && signed == nil {
			return nil, err
		}
		size, _ = noteSize(signed)
	}
	if signed == nil || size <= seq {
		return nil, ErrNotCheckpointed
	}
	p, err := tlog.ProveRecord(size, seq, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		return s.Trail.ReadHashes(ctx, log, idx)
	}))
	if err != nil {
		return nil, err
	}
	return &Receipt{ID: id, Record: e.Record, Entry: body, LeafIndex: seq, TreeSize: size, Proof: p,
		Origin: Origin(s.OriginBase, log), Checkpoint: string(signed)}, nil
}

// VerifyReceipt checks a receipt offline with the log's verifier key: the
// checkpoint signature, that the entry bytes are the leaf the proof places
// in that tree, and that ID and Record are what the bytes say.
func VerifyReceipt(r *Receipt, v note.Verifier) error {
	size, root, err := OpenCheckpoint([]byte(r.Checkpoint), r.Origin, v)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if size != r.TreeSize {
		return fmt.Errorf("receipt says tree size %d, its checkpoint %d", r.TreeSize, size)
	}
	e, err := Decode(r.Entry)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(r.Origin, "/"+e.Log) {
		return fmt.Errorf("entry of log %s under a checkpoint of %s", e.Log, r.Origin)
	}
	if e.ID() != r.ID || e.Seq != r.LeafIndex {
		return fmt.Errorf("entry is %s, receipt names %s at %d", e.ID(), r.ID, r.LeafIndex)
	}
	if err := tlog.CheckRecord(r.Proof, size, root, e.Seq, tlog.RecordHash(r.Entry)); err != nil {
		return fmt.Errorf("inclusion proof: %w", err)
	}
	rec := r.Record
	rec.Time, rec.Expiration = rec.Time.UTC(), rec.Expiration.UTC()
	want := e.Record
	if rec != want {
		return errors.New("the receipt's record differs from its signed entry bytes")
	}
	return nil
}
