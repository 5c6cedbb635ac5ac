package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tlogfmt "github.com/transparency-dev/formats/log"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/vtk/dispenser/internal/metrics"
)

// Origin is the C2SP checkpoint origin of a log: the configured origin
// prefix, a slash, and the log name.
func Origin(base, log string) string { return base + "/" + log }

// LoadSigner reads a note signer key ("PRIVATE+KEY+name+hash+key", as
// written by GenerateKey) and returns the signer and its verifier key.
func LoadSigner(path string) (note.Signer, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint signing key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint signing key %s: %w", path, err)
	}
	vkey, err := VerifierKey(skey)
	if err != nil {
		return nil, "", err
	}
	return s, vkey, nil
}

// VerifierKey derives the public verifier key from an Ed25519 signer key.
func VerifierKey(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5) // base64 may contain +
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("checkpoint signing key is not a note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("checkpoint signing key is not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// GenerateKey writes a new Ed25519 signer key to path (mode 0600, never
// overwriting) and returns the verifier key.
func GenerateKey(path, name string) (string, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(skey + "\n"); err != nil {
		_ = f.Close()
		return "", err
	}
	return vkey, f.Close()
}

// SignCheckpoint signs the C2SP checkpoint of a tree.
func SignCheckpoint(origin string, size int64, root tlog.Hash, s note.Signer) ([]byte, error) {
	body := tlogfmt.Checkpoint{Origin: origin, Size: uint64(size), Hash: root[:]}.Marshal()
	return note.Sign(&note.Note{Text: string(body)}, s)
}

// OpenCheckpoint verifies a signed checkpoint of origin with v.
func OpenCheckpoint(signed []byte, origin string, v note.Verifier) (size int64, root tlog.Hash, err error) {
	cp, _, _, err := tlogfmt.ParseCheckpoint(signed, origin, v)
	if err != nil {
		return 0, root, err
	}
	if len(cp.Hash) != len(root) || cp.Size > 1<<62 {
		return 0, root, errors.New("checkpoint has a malformed root hash or size")
	}
	copy(root[:], cp.Hash)
	return int64(cp.Size), root, nil
}

// Anchor keeps checkpoints outside the database, where whoever controls the
// database cannot rewrite them.
type Anchor interface {
	// Put records signed as the newest checkpoint of origin. It refuses a
	// checkpoint smaller than the one it holds (a rolled-back database).
	Put(ctx context.Context, origin string, size int64, signed []byte) error
	// Latest returns the newest anchored checkpoint of origin, or nil.
	Latest(ctx context.Context, origin string) ([]byte, error)
}

// OriginLister is implemented by anchors that can list the origins they
// hold (DirAnchor; an HTTP anchor cannot). Verify asks it for logs whose
// every row was deleted from the database but whose checkpoints the
// anchor still holds.
type OriginLister interface {
	Origins() ([]string, error)
}

// CheckpointSource is what the Checkpointer reads and writes.
type CheckpointSource interface {
	LogReader
	CheckpointStore
}

// Checkpointer signs checkpoints of one log, stores them next to the log
// and writes them to every anchor. It checkpoints when the oldest entry no
// checkpoint covers has waited Interval, or as soon as MaxRecords entries
// are uncovered, and re-anchors the newest checkpoint every Idle when no
// entries arrive.
//
// It never signs a tree it cannot tie to what the anchors hold: only the
// tree of an empty log (the genesis checkpoint, size 0), or a tree that
// provably extends a checkpoint an anchor holds. A non-empty log of which
// no anchor holds a checkpoint (anchors deleted, moved, a new anchor
// location) gets nothing signed or anchored (ErrAnchorMissing) until an
// operator adopts it (Adopt).
type Checkpointer struct {
	Source  CheckpointSource
	Log     string
	Origin  string // full origin (see Origin)
	Signer  note.Signer
	Anchors []Anchor
	// Interval bounds how long an entry waits for a checkpoint (default
	// 200ms).
	Interval time.Duration
	// MaxRecords checkpoints as soon as this many entries are uncovered
	// (default 1024; negative: by Interval only).
	MaxRecords int64
	Idle       time.Duration // default 1m
	Metrics    *metrics.Metrics
	Logger     *zap.Logger

	mu         sync.Mutex
	lastSize   int64
	lastRoot   tlog.Hash
	lastSigned []byte
	lastAnchor time.Time
	anchored   map[int]treeHead // per anchor: what it holds, once known
	missing    atomic.Bool
}

// treeHead is the size and root of a checkpoint.
type treeHead struct {
	size int64
	root tlog.Hash
}

// ErrAnchorFork is returned by Checkpoint when the log is not an extension
// of the checkpoint an anchor already holds: the entries it covered were
// rewritten (or the log forked). Nothing is anchored; verify reports where.
var ErrAnchorFork = errors.New("audit: the log does not extend the anchored checkpoint (entries rewritten or forked); refusing to anchor")

// ErrAnchorMissing is returned by Checkpoint for a log that holds entries
// while no anchor holds a checkpoint of it: its anchors were deleted or
// moved, or the anchor location is new. Signing the log as it stands would
// launder whatever was done to it, so nothing is signed or anchored until
// an operator runs `dispenser audit adopt`.
var ErrAnchorMissing = errors.New("audit: the log holds entries but no anchor holds a checkpoint of it (anchors deleted or moved, or a new anchor location); nothing is signed or anchored until an operator runs dispenser audit adopt")

// consistent checks that the log's tree of the given size and the anchored
// tree a are one history: the smaller is a prefix of the larger, proven
// with an RFC 6962 consistency proof from the log's stored hashes against
// the anchored root. Comparing the tree hash at the anchored size alone is
// not enough: whoever can write the database could keep the stored nodes
// that hash reads and rewrite the ones the larger tree's root is read from.
// It returns an error wrapping ErrAnchorFork when they differ.
func consistent(a treeHead, size int64, hashes tlog.HashReader) error {
	forked := fmt.Errorf("%w: anchored size %d, log size %d", ErrAnchorFork, a.size, size)
	if a.size == 0 || size == 0 {
		// The empty tree is a prefix of every tree (a genesis checkpoint).
		if a.size == size && a.root != emptyRoot {
			return forked
		}
		return nil
	}
	root, err := tlog.TreeHash(size, hashes)
	if err != nil {
		return err
	}
	if size == a.size {
		if root != a.root {
			return forked
		}
		return nil
	}
	big, bigRoot, small, smallRoot := size, root, a.size, a.root
	if a.size > size {
		big, bigRoot, small, smallRoot = a.size, a.root, size, root
	}
	proof, err := tlog.ProveTree(big, small, hashes)
	if err != nil {
		return err
	}
	if tlog.CheckTree(proof, big, bigRoot, small, smallRoot) != nil {
		return forked
	}
	return nil
}

// emptyRoot is the root of the empty tree.
var emptyRoot, _ = tlog.TreeHash(0, nil)

// anchoredHead reads the checkpoint an anchor holds (signature not
// checked: the anchor is trusted to hold what this process wrote, and
// verify checks signatures), or ok=false when it holds none.
func anchoredHead(ctx context.Context, a Anchor, origin string) (treeHead, bool, error) {
	signed, err := a.Latest(ctx, origin)
	if err != nil || signed == nil {
		return treeHead{}, false, err
	}
	var text string
	if _, err := note.Open(signed, note.VerifierList()); err != nil {
		var u *note.UnverifiedNoteError
		if !errors.As(err, &u) {
			return treeHead{}, false, fmt.Errorf("anchored checkpoint: %w", err)
		}
		text = u.Note.Text
	}
	var cp tlogfmt.Checkpoint
	if _, err := cp.Unmarshal([]byte(text)); err != nil || cp.Origin != origin || len(cp.Hash) != HashSize || cp.Size > 1<<62 {
		return treeHead{}, false, fmt.Errorf("anchored checkpoint of %s is malformed", origin)
	}
	var h treeHead
	h.size = int64(cp.Size)
	copy(h.root[:], cp.Hash)
	return h, true, nil
}

func (c *Checkpointer) hashReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return c.Source.ReadHashes(ctx, c.Log, idx) })
}

// Checkpoint signs and anchors the current head now (unless it is already
// the newest and force is false) and returns the signed checkpoint. Errors:
// ErrAnchorMissing, ErrAnchorFork, ErrAnchorRollback (nothing signed), or
// a sink's failure (the others still got the checkpoint).
func (c *Checkpointer) Checkpoint(ctx context.Context, force bool) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkpoint(ctx, force, -1)
}

// checkpoint is Checkpoint with c.mu held. adoption >= 0 is the seq of an
// adoption record: the tree may then be anchored although no anchor holds
// a checkpoint of the log.
func (c *Checkpointer) checkpoint(ctx context.Context, force bool, adoption int64) ([]byte, error) {
	h, err := c.Source.Head(ctx, c.Log)
	if err != nil {
		return nil, err
	}
	fresh := h.Size != c.lastSize || c.lastSigned == nil
	if !fresh && !force && time.Since(c.lastAnchor) < c.idle() {
		return c.lastSigned, nil
	}
	hashes := c.hashReader(ctx)
	put, errs, err := c.checkAnchors(ctx, h.Size, hashes, adoption >= 0 && adoption < h.Size)
	if err != nil {
		return nil, err
	}
	signed := c.lastSigned
	if fresh {
		root, err := tlog.TreeHash(h.Size, hashes)
		if err != nil {
			return nil, err
		}
		if signed, err = SignCheckpoint(c.Origin, h.Size, root, c.Signer); err != nil {
			return nil, err
		}
		if err := c.Source.PutCheckpoint(ctx, c.Log, h.Size, signed); err != nil {
			return nil, err
		}
		c.lastSize, c.lastRoot, c.lastSigned = h.Size, root, signed
	}
	for i, a := range c.Anchors {
		if !put[i] {
			continue
		}
		if err := a.Put(ctx, c.Origin, h.Size, signed); err != nil {
			delete(c.anchored, i)
			errs = append(errs, err)
			continue
		}
		c.anchored[i] = treeHead{h.Size, c.lastRoot}
	}
	if err := errors.Join(errs...); err != nil {
		c.Metrics.AuditFailure("anchor")
		return signed, fmt.Errorf("anchor checkpoint: %w", err)
	}
	c.lastAnchor = time.Now()
	c.Metrics.AnchorAge(0)
	return signed, nil
}

// checkAnchors decides, before anything is signed, which anchors get the
// tree of size: those holding a checkpoint the tree extends, and empty
// ones when another anchor vouches for the tree (a new anchor is seeded),
// the log is empty (genesis) or adopted. A tree that does not extend what
// an anchor holds gets no signature at all, so no checkpoint (and no
// receipt) of a rewritten log carries the real key. errs are anchors that
// could not be read (the others still get the tree).
func (c *Checkpointer) checkAnchors(ctx context.Context, size int64, hashes tlog.HashReader, adopted bool) (put []bool, errs []error, err error) {
	if c.anchored == nil {
		c.anchored = map[int]treeHead{}
	}
	put = make([]bool, len(c.Anchors))
	var empty []int
	diverged, vouched := false, false
	for i, a := range c.Anchors {
		prev, ok := c.anchored[i]
		if !ok {
			var err error
			if prev, ok, err = anchoredHead(ctx, a, c.Origin); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if !ok {
			empty = append(empty, i)
			continue
		}
		switch err := c.extends(prev, size, hashes); {
		case err == nil:
			put[i], vouched = true, true
		case errors.Is(err, ErrAnchorFork), errors.Is(err, ErrAnchorRollback):
			diverged = true
			errs = append(errs, err)
		default:
			errs = append(errs, err)
		}
	}
	if diverged {
		c.Metrics.AuditFailure("anchor")
		return nil, nil, fmt.Errorf("anchor checkpoint: %w", errors.Join(errs...))
	}
	if !vouched && len(c.Anchors) > 0 {
		if len(errs) > 0 {
			// An anchor that cannot be read may hold the checkpoint: no
			// decision either way until it answers.
			c.Metrics.AuditFailure("anchor")
			return nil, nil, fmt.Errorf("anchor checkpoint: %w", errors.Join(errs...))
		}
		if size > 0 && !adopted {
			c.setMissing(true)
			return nil, nil, ErrAnchorMissing
		}
	}
	if vouched && len(empty) > 0 {
		for _, i := range empty {
			c.logger().Warn("an audit anchor held no checkpoint of this log; seeding it with one the other anchors vouch for",
				zap.String("log", c.Log), zap.String("anchor", anchorName(c.Anchors[i], i, len(c.Anchors))))
		}
	}
	for _, i := range empty {
		put[i] = true
	}
	c.setMissing(false)
	return put, errs, nil
}

// extends checks that the tree of size extends prev (a checkpoint an
// anchor holds).
func (c *Checkpointer) extends(prev treeHead, size int64, hashes tlog.HashReader) error {
	if prev.size > size {
		// The log is shorter than what was anchored: truncation or a
		// rollback. Never overwrite the evidence with a smaller tree,
		// whatever the sink itself would accept.
		c.Metrics.AuditFailure("anchor_rollback")
		return fmt.Errorf("%w: anchored size %d, log size %d", ErrAnchorRollback, prev.size, size)
	}
	err := consistent(prev, size, hashes)
	if errors.Is(err, ErrAnchorFork) {
		c.Metrics.AuditFailure("anchor_fork")
	}
	return err
}

// setMissing records whether the log lacks an anchor, logging each change.
func (c *Checkpointer) setMissing(v bool) {
	if c.missing.Swap(v) == v {
		return
	}
	c.Metrics.AnchorMissing(v)
	if v {
		c.logger().Error("audit log holds entries but no anchor holds a checkpoint of it (anchors deleted or moved, or a new anchor location): nothing is signed or anchored; investigate, then run dispenser audit adopt",
			zap.String("log", c.Log))
		return
	}
	c.logger().Info("audit anchor found: anchoring resumes", zap.String("log", c.Log))
}

// AnchorMissing reports whether the last checkpoint attempt found the log
// non-empty and no anchor holding a checkpoint of it.
func (c *Checkpointer) AnchorMissing() bool { return c.missing.Load() }

// anchorAdoption signs and anchors a checkpoint covering the adoption
// record at seq (see Adopt).
func (c *Checkpointer) anchorAdoption(ctx context.Context, seq int64) ([]byte, error) {
	body, err := c.Source.Body(ctx, c.Log, seq)
	if err != nil {
		return nil, err
	}
	if e, err := Decode(body); err != nil || e.Record.Outcome != Adopted {
		return nil, fmt.Errorf("audit: entry %d is not an adoption record", seq)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkpoint(ctx, true, seq)
}

func (c *Checkpointer) idle() time.Duration {
	if c.Idle <= 0 {
		return time.Minute
	}
	return c.Idle
}

func (c *Checkpointer) interval() time.Duration {
	if c.Interval <= 0 {
		return DefaultCheckpointInterval
	}
	return c.Interval
}

func (c *Checkpointer) maxRecords() int64 {
	switch {
	case c.MaxRecords == 0:
		return DefaultCheckpointRecords
	case c.MaxRecords < 0:
		return 1<<63 - 1
	}
	return c.MaxRecords
}

func (c *Checkpointer) logger() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

// Defaults of the checkpoint cadence: under load an entry waits at most
// about DefaultCheckpointInterval plus one poll (a tenth of it) plus the
// checkpoint's own commit and anchor writes for its checkpoint: about 250ms
// measured after a SIGKILL under load.
const (
	DefaultCheckpointInterval = 200 * time.Millisecond
	DefaultCheckpointRecords  = 1024
)

// Resumption is what a Checkpointer found when it resumed a log.
type Resumption struct {
	Size     int64 // entries in the log
	Anchored int64 // the largest checkpoint an anchor held (0 when none)
	// Unanchored is the tail no anchored checkpoint covered: entries a
	// crash left unanchored (or the whole log when no anchor holds one).
	Unanchored int64
}

// Resume is the first checkpoint of a starting dispenser: it reports the
// unanchored tail it finds (log and metric), then checkpoints at once, so
// the tail a crash left is anchored without waiting for the cadence. Its
// error is Checkpoint's (ErrAnchorMissing for a log no anchor holds).
func (c *Checkpointer) Resume(ctx context.Context) (Resumption, error) {
	h, err := c.Source.Head(ctx, c.Log)
	if err != nil {
		return Resumption{}, err
	}
	r := Resumption{Size: h.Size, Unanchored: h.Size}
	for _, a := range c.Anchors {
		if th, ok, err := anchoredHead(ctx, a, c.Origin); err == nil && ok && th.size > r.Anchored {
			r.Anchored = th.size
			r.Unanchored = max(h.Size-th.size, 0)
		}
	}
	c.Metrics.StartUnanchored(r.Unanchored)
	fields := []zap.Field{zap.String("log", c.Log), zap.Int64("entries", r.Size), zap.Int64("anchored", r.Anchored), zap.Int64("unanchored_tail", r.Unanchored)}
	if r.Unanchored > 0 && r.Anchored > 0 {
		c.logger().Warn("audit log resumed with an unanchored tail (the previous run stopped before its last checkpoint); anchoring it now", fields...)
	} else {
		c.logger().Info("audit log resumed", fields...)
	}
	_, err = c.Checkpoint(ctx, true)
	return r, err
}

// Run checkpoints on the cadence (see Checkpointer) until ctx ends, then
// signs a last checkpoint and returns its error (nil, too, when no anchor
// holds the log: that is reported when found). After a failure it retries
// no sooner than the larger of Interval and one second.
func (c *Checkpointer) Run(ctx context.Context) error {
	log := c.logger()
	t := time.NewTicker(min(max(c.interval()/10, 5*time.Millisecond), 50*time.Millisecond))
	defer t.Stop()
	var pending, retryAt time.Time
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Checkpoint(fctx, true); err != nil && !errors.Is(err, ErrAnchorMissing) {
				log.Error("final audit checkpoint failed", zap.Error(err))
				return fmt.Errorf("final audit checkpoint: %w", err)
			}
			return nil
		case now := <-t.C:
			if now.Before(retryAt) {
				continue
			}
			due, err := c.due(ctx, now, &pending)
			if err == nil && due {
				_, err = c.Checkpoint(ctx, false)
				pending = time.Time{}
			}
			if err != nil && ctx.Err() == nil {
				if !errors.Is(err, ErrAnchorMissing) { // logged once, when it starts
					log.Error("audit checkpoint failed", zap.String("log", c.Log), zap.Error(err))
				}
				retryAt = now.Add(max(c.interval(), time.Second))
			}
			c.mu.Lock()
			// Until this process anchors, the newest anchored checkpoint
			// is at least as old as the process's run: report that, so a
			// replica that never manages to anchor raises the alert.
			since := c.lastAnchor
			if since.IsZero() {
				since = started
			}
			c.Metrics.AnchorAge(time.Since(since))
			c.mu.Unlock()
		}
	}
}

// due reports whether a checkpoint is due now: the oldest uncovered entry
// (first seen at *pending) has waited Interval, MaxRecords entries are
// uncovered, or nothing new arrived for Idle (re-anchor).
func (c *Checkpointer) due(ctx context.Context, now time.Time, pending *time.Time) (bool, error) {
	h, err := c.Source.Head(ctx, c.Log)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	last, lastAnchor, signed := c.lastSize, c.lastAnchor, c.lastSigned != nil
	c.mu.Unlock()
	if h.Size == last && signed {
		*pending = time.Time{}
		return now.Sub(lastAnchor) >= c.idle(), nil
	}
	if pending.IsZero() {
		*pending = now
	}
	return h.Size-last >= c.maxRecords() || now.Sub(*pending) >= c.interval(), nil
}
