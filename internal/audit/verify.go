package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// OriginBase is the configured origin prefix (see Origin).
	OriginBase string
	// Verifier checks checkpoint signatures (the log's public key).
	Verifier note.Verifier
	// Anchor holds the checkpoints kept outside the database; nil means
	// none, so every entry is reported as unanchored.
	Anchor Anchor
	// Anchors are further anchors (every configured one): each is checked
	// the same way, and the largest valid anchored checkpoint bounds the
	// unanchored tail.
	Anchors []Anchor
	// Incremental starts each log at its newest anchored checkpoint
	// (checking the stored tree and the last entry against it) instead of
	// re-hashing every entry.
	Incremental bool
	// Retention, when set, is the configured retention: a pruned boundary
	// newer than it means entries were deleted early.
	Retention time.Duration
	// Now is the clock for the retention check (default time.Now).
	Now func() time.Time
}

// LogReport is the verification of one log.
type LogReport struct {
	Log        string   `json:"log"`
	Size       int64    `json:"size"`       // entries found
	Checked    int64    `json:"checked"`    // entries re-hashed in this run
	Anchored   int64    `json:"anchored"`   // size of the newest anchored checkpoint
	Unanchored int64    `json:"unanchored"` // entries after it
	Problems   []string `json:"problems,omitempty"`
}

// Report is the verification of a trail.
type Report struct {
	Logs []LogReport `json:"logs"`
}

// Tampered reports whether any log failed verification.
func (r Report) Tampered() bool {
	for _, l := range r.Logs {
		if len(l.Problems) > 0 {
			return true
		}
	}
	return false
}

// UnanchoredTail reports whether any log has entries no anchored
// checkpoint covers yet.
func (r Report) UnanchoredTail() bool {
	for _, l := range r.Logs {
		if l.Unanchored > 0 {
			return true
		}
	}
	return false
}

// Verify re-hashes every entry of every log, checks contiguous sequence
// numbers, the chain links, the stored chain hashes and Merkle nodes, the
// newest stored checkpoint, and compares each log with its newest anchored
// checkpoint (catching truncation, rollback and rewritten suffixes). The
// error is for failures to read; evidence of tampering is in the Report.
func Verify(ctx context.Context, src CheckpointSource, o VerifyOptions) (Report, error) {
	logs, err := src.Logs(ctx)
	if err != nil {
		return Report{}, err
	}
	known := map[string]bool{}
	for _, l := range logs {
		known[l] = true
	}
	// A log whose every row was deleted is still named by its anchors.
	for _, a := range o.anchors() {
		lister, ok := a.(interface{ Origins() ([]string, error) })
		if !ok {
			continue
		}
		origins, err := lister.Origins()
		if err != nil {
			return Report{}, err
		}
		for _, or := range origins {
			if l, ok := cutOrigin(or, o.OriginBase); ok && !known[l] {
				known[l] = true
				logs = append(logs, l)
			}
		}
	}
	sort.Strings(logs)
	var rep Report
	for _, l := range logs {
		lr, err := verifyLog(ctx, src, o, l)
		if err != nil {
			return Report{}, fmt.Errorf("log %s: %w", l, err)
		}
		rep.Logs = append(rep.Logs, lr)
	}
	return rep, nil
}

// anchors lists Anchor and Anchors.
func (o VerifyOptions) anchors() []Anchor {
	var out []Anchor
	if o.Anchor != nil {
		out = append(out, o.Anchor)
	}
	for _, a := range o.Anchors {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

// anchorName names an anchor in reports.
func anchorName(a Anchor, i, n int) string {
	switch a := a.(type) {
	case *DirAnchor:
		return "anchored checkpoint in " + a.Dir
	case *HTTPAnchor:
		u, err := url.Parse(a.URL)
		if err != nil {
			return "anchored checkpoint at the HTTP anchor"
		}
		u.User = nil // never report credentials
		return "anchored checkpoint at " + u.String()
	}
	if n == 1 {
		return "anchored checkpoint"
	}
	return fmt.Sprintf("anchored checkpoint (anchor %d)", i+1)
}

func cutOrigin(origin, base string) (string, bool) {
	if len(origin) <= len(base)+1 || origin[:len(base)] != base || origin[len(base)] != '/' {
		return "", false
	}
	return origin[len(base)+1:], true
}

var errStopScan = errors.New("stop scan")

type checkpointAt struct {
	what string
	size int64
	root tlog.Hash
}

func verifyLog(ctx context.Context, src CheckpointSource, o VerifyOptions, log string) (LogReport, error) {
	lr := LogReport{Log: log}
	bad := func(format string, args ...any) { lr.Problems = append(lr.Problems, fmt.Sprintf(format, args...)) }
	origin := Origin(o.OriginBase, log)
	var cps []checkpointAt
	var anchored *checkpointAt
	as := o.anchors()
	for i, a := range as {
		name := anchorName(a, i, len(as))
		signed, err := a.Latest(ctx, origin)
		if err != nil {
			return lr, fmt.Errorf("%s: %w", name, err)
		}
		if signed == nil {
			continue
		}
		size, root, err := OpenCheckpoint(signed, origin, o.Verifier)
		if err != nil {
			bad("%s is not valid for this log's key and origin (forged or altered): %v", name, err)
			continue
		}
		c := checkpointAt{name, size, root}
		cps = append(cps, c)
		if anchored == nil || size > anchored.size {
			anchored = &c
			lr.Anchored = size
		}
	}
	if signed, err := src.LatestCheckpoint(ctx, log); err != nil {
		return lr, err
	} else if signed != nil {
		size, root, err := OpenCheckpoint(signed, origin, o.Verifier)
		if err != nil {
			bad("stored checkpoint is not valid for this log's key and origin (forged or altered): %v", err)
		} else {
			cps = append(cps, checkpointAt{"stored checkpoint", size, root})
		}
	}
	stored := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return src.ReadHashes(ctx, log, idx) })

	var fr frontier
	var prev [HashSize]byte
	next := int64(0)
	var err error
	var floor int64
	var base *checkpointAt // the checkpoint the scan resumes from, if any
	if pr, ok := src.(Pruner); ok {
		if floor, err = pr.PrunedBefore(ctx, log); err != nil {
			return lr, err
		}
	}
	if floor > 0 {
		// Entries below floor-1 were pruned by retention: resume at the
		// signed checkpoint kept at the floor.
		signed, err := src.CheckpointAt(ctx, log, floor)
		if err != nil {
			return lr, err
		}
		size, root, cerr := OpenCheckpoint(signed, origin, o.Verifier)
		start, ph, ok := frontier{}, [HashSize]byte{}, false
		pc := checkpointAt{"prune checkpoint", size, root}
		if signed != nil && cerr == nil && size == floor {
			start, ph, ok = resume(ctx, src, log, stored, pc)
		}
		if !ok {
			bad("entries below %d were removed, but the checkpoint kept at the prune floor is missing or does not match (entries deleted outside retention)", floor)
		} else {
			fr, prev, next, base = start, ph, floor, &pc
			if o.Retention > 0 {
				now := time.Now
				if o.Now != nil {
					now = o.Now
				}
				if b, err := src.Body(ctx, log, floor-1); err == nil {
					if e, err := Decode(b); err == nil && e.Record.Time.After(now().Add(-o.Retention)) {
						bad("entries below %d were removed although entry %d is within the %s retention (deleted early)", floor, floor-1, o.Retention)
					}
				}
			}
		}
	}
	if o.Incremental && anchored != nil && anchored.size > next {
		if start, ph, ok := resume(ctx, src, log, stored, *anchored); ok {
			fr, prev, next, base = start, ph, anchored.size, anchored
		} else {
			bad("stored tree or entry %d does not match the anchored checkpoint; re-run without --incremental to locate the change", anchored.size-1)
		}
	}
	if base != nil {
		// The entries before the resume point are not re-hashed (pruned, or
		// skipped by --incremental): every checkpoint at or below it must be
		// a prefix of the tree the resume checkpoint signs, or a log
		// rewritten from its start and then pruned past an anchor would pass.
		for _, c := range cps {
			if c.size < 1 || c.size > base.size {
				continue
			}
			p, err := tlog.ProveTree(base.size, c.size, stored)
			if err != nil || tlog.CheckTree(p, base.size, base.root, c.size, c.root) != nil {
				bad("the first %d entries do not match the %s of that size (entries rewritten, reordered or forked)", c.size, c.what)
			}
		}
	}
	// The head is read before the scan and bounds it, so entries appended
	// while verify runs are left for the next run.
	head, err := src.Head(ctx, log)
	if err != nil {
		return lr, err
	}
	from := next
	past := int64(-1) // the first stored entry at or past the head, if any
	check := func() {
		for _, c := range cps {
			if c.size == next && fr.root() != c.root {
				bad("the first %d entries do not match the %s of that size (entries rewritten, reordered or forked)", c.size, c.what)
			}
		}
	}
	err = src.Scan(ctx, log, from, func(r Row) error {
		if r.Seq >= head.Size && head.Size >= next {
			past = r.Seq
			return errStopScan
		}
		if r.Seq != next {
			if r.Seq > next {
				bad("entries %d..%d are missing", next, r.Seq-1)
			} else {
				bad("entry %d appears twice", r.Seq)
			}
		}
		e, err := Decode(r.Body)
		switch {
		case err != nil:
			bad("entry %d: %v", r.Seq, err)
		case e.Log != log || e.Seq != r.Seq:
			bad("entry %d: its encoding names %s, not %s (moved or reordered)", r.Seq, e.ID(), EntryID(log, r.Seq))
		case e.PrevHash != prev:
			bad("entry %d: prev_hash does not match entry %d (an entry was edited, removed or reordered)", r.Seq, r.Seq-1)
		}
		if err == nil {
			checkCopies(r, FieldsOf(e), bad)
		}
		ch := ChainHash(r.Body)
		if !bytes.Equal(r.Hash, ch[:]) {
			bad("entry %d: stored hash is not the hash of its bytes (entry edited)", r.Seq)
		}
		prev = ch
		fr.add(tlog.RecordHash(r.Body))
		next = r.Seq + 1
		check()
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return lr, err
	}
	lr.Size, lr.Checked = next, next-from
	if past >= 0 {
		// An append writes its entries and the head in one transaction: an
		// entry the scan saw is covered by the head read after it, unless
		// it was inserted outside an append (queries would still show it).
		h, err := src.Head(ctx, log)
		if err != nil {
			return lr, err
		}
		if past >= h.Size {
			bad("entry %d is stored past the head (%d entries): inserted outside an append", past, h.Size)
		}
	}
	if head.Size != next || (next > 0 && head.Hash != prev) {
		bad("head row says %d entries, the log holds %d (rows deleted or head rewritten)", head.Size, next)
	}
	for _, c := range cps {
		if c.size > next {
			bad("the %s covers %d entries but the log holds %d (truncated or rolled back)", c.what, c.size, next)
		}
	}
	if next > 0 && len(lr.Problems) == 0 {
		th, err := tlog.TreeHash(next, stored)
		if err != nil || th != fr.root() {
			bad("stored Merkle hashes do not match the entries (receipts would not verify): %v", err)
		}
	}
	if anchored != nil && anchored.size <= next {
		lr.Unanchored = next - anchored.size
	} else if anchored == nil {
		lr.Unanchored = next
	}
	return lr, nil
}

// checkCopies compares the query columns a store copied out of an entry
// with the entry's bytes: an edited copy hides the entry from (or misfiles
// it under) a query even though the entry itself is intact.
func checkCopies(r Row, want IndexFields, bad func(string, ...any)) {
	for _, c := range r.Copies {
		if c.Missing {
			bad("entry %d is missing from %s, so queries do not find it (row deleted)", r.Seq, c.Where)
			continue
		}
		if d := want.diff(c.Fields); len(d) > 0 {
			bad("entry %d: %s of %s differ from the entry's bytes (edited; queries would miss or misfile it)", r.Seq, strings.Join(d, ", "), c.Where)
		}
	}
}

// resume rebuilds the verifier's state at an anchored checkpoint from the
// stored tree, after checking the tree against the checkpoint's root and the
// last entry's bytes against the tree.
func resume(ctx context.Context, src LogReader, log string, stored tlog.HashReader, cp checkpointAt) (frontier, [HashSize]byte, bool) {
	var fr frontier
	var idx []int64
	var sizes []int64
	start := int64(0)
	for k := 62; k >= 0; k-- {
		if cp.size&(1<<k) != 0 {
			idx = append(idx, tlog.StoredHashIndex(k, start>>k))
			sizes = append(sizes, 1<<k)
			start += 1 << k
		}
	}
	hs, err := stored.ReadHashes(idx)
	if err != nil {
		return fr, [HashSize]byte{}, false
	}
	fr = frontier{hs: hs, sizes: sizes}
	if fr.root() != cp.root {
		return fr, [HashSize]byte{}, false
	}
	body, err := src.Body(ctx, log, cp.size-1)
	if err != nil {
		return fr, [HashSize]byte{}, false
	}
	p, err := tlog.ProveRecord(cp.size, cp.size-1, stored)
	if err != nil || tlog.CheckRecord(p, cp.size, cp.root, cp.size-1, tlog.RecordHash(body)) != nil {
		return fr, [HashSize]byte{}, false
	}
	return fr, ChainHash(body), true
}

// frontier is the right edge of an RFC 6962 tree: the roots of its perfect
// subtrees, largest first. It computes tree roots in O(log n) memory.
type frontier struct {
	hs    []tlog.Hash
	sizes []int64
}

func (f *frontier) add(h tlog.Hash) {
	f.hs, f.sizes = append(f.hs, h), append(f.sizes, 1)
	for n := len(f.hs); n >= 2 && f.sizes[n-1] == f.sizes[n-2]; n = len(f.hs) {
		f.hs[n-2] = tlog.NodeHash(f.hs[n-2], f.hs[n-1])
		f.sizes[n-2] *= 2
		f.hs, f.sizes = f.hs[:n-1], f.sizes[:n-1]
	}
}

func (f *frontier) root() tlog.Hash {
	if len(f.hs) == 0 {
		return tlog.Hash{}
	}
	r := f.hs[len(f.hs)-1]
	for i := len(f.hs) - 2; i >= 0; i-- {
		r = tlog.NodeHash(f.hs[i], r)
	}
	return r
}
