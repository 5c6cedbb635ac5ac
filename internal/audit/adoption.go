package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Adopted is the outcome of an adoption record: an operator vouched for a
// log no anchor held a checkpoint of (see Adopt).
const Adopted Outcome = "adopted"

// Adoption is the Detail of an adoption record.
type Adoption struct {
	// Size and Root are the tree the operator vouched for: the log as it
	// stood, without the adoption record itself.
	Size int64     `json:"adopted_size"`
	Root tlog.Hash `json:"adopted_root"`
	// Reason is the operator's reason, as given.
	Reason string `json:"reason"`
	// Operator is who ran the command (the OS user, or --operator).
	Operator string `json:"operator"`
	// Anchors names the anchors that held no checkpoint of the log.
	Anchors []string `json:"anchors"`
}

// AdoptRequest is what an operator gives Adopt.
type AdoptRequest struct {
	Reason    string
	Operator  string
	ReplicaID string
	Now       func() time.Time
}

// ErrNothingToAdopt is returned by Adopt when an anchor already holds a
// checkpoint of the log (the dispenser resumes from it, or it is evidence
// of tampering that adoption must not overwrite) or the log is empty.
var ErrNothingToAdopt = errors.New("audit: nothing to adopt")

// AdoptSource is what Adopt appends to and signs from.
type AdoptSource interface {
	Store
	CheckpointSource
}

// Adopt records an operator's decision to vouch for a non-empty log that no
// anchor holds a checkpoint of (anchors lost, moved, or a new anchor
// location): it appends one adoption record (outcome adopted; its Detail
// names the tree adopted, the reason and the operator), then signs a
// checkpoint covering it and writes it to every anchor of c. From then on
// the dispenser's checkpointer finds an anchored checkpoint to extend, and
// verify lists the adoption. It refuses when any anchor holds a checkpoint
// of the log or cannot be read, and when the log is empty. It returns the
// adoption record and the signed checkpoint.
func Adopt(ctx context.Context, src AdoptSource, c *Checkpointer, req AdoptRequest) (Entry, []byte, error) {
	if strings.TrimSpace(req.Reason) == "" || strings.TrimSpace(req.Operator) == "" {
		return Entry{}, nil, errors.New("audit: an adoption needs a reason and an operator")
	}
	var names []string
	for i, a := range c.Anchors {
		name := anchorName(a, i, len(c.Anchors))
		h, ok, err := anchoredHead(ctx, a, c.Origin)
		if err != nil {
			return Entry{}, nil, fmt.Errorf("%s: %w (an anchor that cannot be read may hold a checkpoint; not adopting)", name, err)
		}
		if ok {
			return Entry{}, nil, fmt.Errorf("%w: %s holds a checkpoint of %d entries; the dispenser extends it (if the log does not, that is tampering evidence: run dispenser audit verify)", ErrNothingToAdopt, name, h.size)
		}
		names = append(names, anchorLabel(a, i, len(c.Anchors)))
	}
	if len(names) == 0 {
		return Entry{}, nil, errors.New("audit: no anchor is configured; nothing to anchor the adoption in")
	}
	head, err := c.Source.Head(ctx, c.Log)
	if err != nil {
		return Entry{}, nil, err
	}
	if head.Size == 0 {
		return Entry{}, nil, fmt.Errorf("%w: the log %s is empty (the dispenser anchors an empty log itself)", ErrNothingToAdopt, c.Log)
	}
	root, err := tlog.TreeHash(head.Size, c.hashReader(ctx))
	if err != nil {
		return Entry{}, nil, err
	}
	rec, err := adoptionRecord(req, Adoption{Size: head.Size, Root: root, Reason: req.Reason, Operator: req.Operator, Anchors: names})
	if err != nil {
		return Entry{}, nil, err
	}
	es, err := src.Append(ctx, []Record{rec})
	if err != nil {
		return Entry{}, nil, fmt.Errorf("audit: append the adoption record: %w", err)
	}
	signed, err := c.anchorAdoption(ctx, es[0].Seq)
	if err != nil {
		return es[0], nil, err
	}
	return es[0], signed, nil
}

// adoptionRecord builds the record of an adoption.
func adoptionRecord(req AdoptRequest, a Adoption) (Record, error) {
	d, err := NewDetail(a)
	if err != nil {
		return Record{}, err
	}
	now := time.Now
	if req.Now != nil {
		now = req.Now
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return Record{}, err
	}
	return Record{Time: now().UTC(), RequestID: "adopt-" + hex.EncodeToString(id), Outcome: Adopted, Reason: "anchor_missing",
		Principal: a.Operator, AuthMethod: "cli", Operation: "audit.adopt", PackedPolicySize: -1, ReplicaID: req.ReplicaID, Detail: d}, nil
}
