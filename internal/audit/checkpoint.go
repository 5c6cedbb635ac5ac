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

// CheckpointSource is what the Checkpointer reads and writes.
type CheckpointSource interface {
	LogReader
	CheckpointStore
}

// Checkpointer signs a checkpoint of one log at least every Interval while
// records arrive and every Idle when none do, stores it next to the log and
// writes it to every anchor.
type Checkpointer struct {
	Source   CheckpointSource
	Log      string
	Origin   string // full origin (see Origin)
	Signer   note.Signer
	Anchors  []Anchor
	Interval time.Duration // default 1s
	Idle     time.Duration // default 1m
	Metrics  *metrics.Metrics
	Logger   *zap.Logger

	mu         sync.Mutex
	lastSize   int64
	lastSigned []byte
	lastAnchor time.Time
	anchored   map[int]treeHead // per anchor: what it holds, once known
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

// consistent checks that the log's tree of the given size and the anchored
// tree a are one history: the smaller is a prefix of the larger, proven
// with an RFC 6962 consistency proof from the log's stored hashes against
// the anchored root. Comparing the tree hash at the anchored size alone is
// not enough: whoever can write the database could keep the stored nodes
// that hash reads and rewrite the ones the larger tree's root is read from.
// It returns an error wrapping ErrAnchorFork when they differ.
func consistent(a treeHead, size int64, hashes tlog.HashReader) error {
	root, err := tlog.TreeHash(size, hashes)
	if err != nil {
		return err
	}
	forked := fmt.Errorf("%w: anchored size %d, log size %d", ErrAnchorFork, a.size, size)
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

// Checkpoint signs and anchors the current head now (unless it is already
// the newest and force is false) and returns the signed checkpoint.
func (c *Checkpointer) Checkpoint(ctx context.Context, force bool) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, err := c.Source.Head(ctx, c.Log)
	if err != nil {
		return nil, err
	}
	if h.Size == 0 {
		return nil, nil
	}
	signed := c.lastSigned
	fresh := h.Size != c.lastSize || signed == nil
	if !fresh && !force && time.Since(c.lastAnchor) < c.idle() {
		return signed, nil
	}
	var errs []error
	hashes := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return c.Source.ReadHashes(ctx, c.Log, idx) })
	if c.anchored == nil {
		c.anchored = map[int]treeHead{}
	}
	// Every anchor is checked before anything is signed: a tree that does
	// not extend what an anchor holds gets no signature at all, so no
	// checkpoint (and no receipt) of a rewritten log carries the real key.
	put := make([]bool, len(c.Anchors))
	diverged := false
	for i, a := range c.Anchors {
		// Successive anchored checkpoints must be consistent: the tree
		// being anchored must contain the one the anchor holds as a
		// prefix, or a rewritten log would replace the evidence of its
		// old contents.
		prev, ok := c.anchored[i]
		if !ok {
			var err error
			if prev, ok, err = anchoredHead(ctx, a, c.Origin); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if ok && prev.size > h.Size {
			// The log is shorter than what was anchored: truncation or a
			// rollback. Never overwrite the evidence with a smaller tree,
			// whatever the sink itself would accept.
			c.Metrics.AuditFailure("anchor_rollback")
			errs = append(errs, fmt.Errorf("%w: anchored size %d, log size %d", ErrAnchorRollback, prev.size, h.Size))
			diverged = true
			continue
		}
		if ok {
			if err := consistent(prev, h.Size, hashes); err != nil {
				if !errors.Is(err, ErrAnchorFork) {
					errs = append(errs, err)
					continue
				}
				c.Metrics.AuditFailure("anchor_fork")
				errs = append(errs, err)
				diverged = true
				continue
			}
		}
		put[i] = true
	}
	if diverged {
		c.Metrics.AuditFailure("anchor")
		return nil, fmt.Errorf("anchor checkpoint: %w", errors.Join(errs...))
	}
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
		c.lastSize, c.lastSigned = h.Size, signed
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
		root, err := tlog.TreeHash(h.Size, hashes)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.anchored[i] = treeHead{h.Size, root}
	}
	if err := errors.Join(errs...); err != nil {
		c.Metrics.AuditFailure("anchor")
		return signed, fmt.Errorf("anchor checkpoint: %w", err)
	}
	c.lastAnchor = time.Now()
	c.Metrics.AnchorAge(0)
	return signed, nil
}

func (c *Checkpointer) idle() time.Duration {
	if c.Idle <= 0 {
		return time.Minute
	}
	return c.Idle
}

// Run checkpoints until ctx ends, then signs a last checkpoint.
func (c *Checkpointer) Run(ctx context.Context) {
	iv := c.Interval
	if iv <= 0 {
		iv = time.Second
	}
	log := c.Logger
	if log == nil {
		log = zap.NewNop()
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := c.Checkpoint(fctx, true); err != nil {
				log.Error("final audit checkpoint failed", zap.Error(err))
			}
			cancel()
			return
		case <-t.C:
			if _, err := c.Checkpoint(ctx, false); err != nil && ctx.Err() == nil {
				log.Error("audit checkpoint failed", zap.String("log", c.Log), zap.Error(err))
			}
			c.mu.Lock()
			if !c.lastAnchor.IsZero() {
				c.Metrics.AnchorAge(time.Since(c.lastAnchor))
			}
			c.mu.Unlock()
		}
	}
}
