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
	// Anchors hold the checkpoints kept outside the database (every
	// configured one): each is checked the same way, and the largest valid
	// anchored checkpoint bounds the unanchored tail. None means every
	// entry is reported as unanchored.
	Anchors []Anchor
	// Incremental starts each log at its newest anchored checkpoint
	// instead of re-hashing every entry. It re-checks the stored nodes on
	// the tree's right edge against the anchored root, the entry before the
	// checkpoint against the tree (an inclusion proof), every smaller
	// anchored or stored checkpoint against it (consistency proofs), and
	// everything after it in full. Stored Merkle nodes inside the anchored
	// tree that are not on its right edge, and the query columns of the
	// anchored entries, are checked by a full run only.
	Incremental bool
	// Retention, when set, is the configured retention: a pruned boundary
	// newer than it means entries were deleted early.
	Retention time.Duration
	// Now is the clock for the retention check (default time.Now).
	Now func() time.Time
}

// LogReport is the verification of one log.
type LogReport struct {
	Log        string `json:"log"`
	Size       int64  `json:"size"`       // entries found
	Checked    int64  `json:"checked"`    // entries re-hashed in this run
	Anchored   int64  `json:"anchored"`   // size of the newest anchored checkpoint
	Unanchored int64  `json:"unanchored"` // entries after it
	// AnchorMissing is set when the log holds entries and an anchor holds
	// no checkpoint of it (AnchorsWithout names which): the anchors were
	// deleted or moved, or one is new. No entry is then provably what was
	// written when the dispenser signed it, as far as that anchor goes.
	AnchorMissing  bool     `json:"anchor_missing,omitempty"`
	AnchorsWithout []string `json:"anchors_without_checkpoint,omitempty"`
	// Adoptions lists the adoption records among the entries checked:
	// operators vouching for the log where no anchor held a checkpoint.
	Adoptions []AdoptionReport `json:"adoptions,omitempty"`
	Problems  []string         `json:"problems,omitempty"`
}

// AdoptionReport is one adoption record found by Verify.
type AdoptionReport struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Operator string    `json:"operator"`
	Reason   string    `json:"reason"`
	// Size is how many entries the operator adopted (entries 0..Size-1).
	Size int64 `json:"adopted_size"`
}

// Report is the verification of a trail.
type Report struct {
	Logs []LogReport `json:"logs"`
	// Problems are findings outside every log (derived rows naming no
	// log the trail holds).
	Problems []string `json:"problems,omitempty"`
}

// Tampered reports whether verification found tampering.
func (r Report) Tampered() bool {
	if len(r.Problems) > 0 {
		return true
	}
	for _, l := range r.Logs {
		if len(l.Problems) > 0 {
			return true
		}
	}
	return false
}

// AnchorMissing reports whether a non-empty log lacks an anchored
// checkpoint in some anchor.
func (r Report) AnchorMissing() bool {
	for _, l := range r.Logs {
		if l.AnchorMissing {
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
// numbers, the chain links, the stored chain hashes, every stored Merkle
// node (recomputed from the entries), the query columns and derived rows
// (no copy differs from its entry, no row stands without one), the stored
// checkpoints, and compares each log with the checkpoint every anchor holds
// (catching truncation, rollback, rewritten suffixes and lost anchors). The
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
		lister, ok := a.(OriginLister)
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
	// Derived rows are checked while the logs are: each is a pass over a
	// table of its own.
	var strays []Stray
	straysDone := make(chan error, 1)
	go func() {
		straysDone <- src.Strays(ctx, !o.Incremental, func(s Stray) error { strays = append(strays, s); return nil })
	}()
	var rep Report
	for _, l := range logs {
		var lr LogReport
		if lr, err = verifyLog(ctx, src, o, l); err != nil {
			err = fmt.Errorf("log %s: %w", l, err)
			break
		}
		rep.Logs = append(rep.Logs, lr)
	}
	if serr := <-straysDone; err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		return Report{}, err
	}
	for _, st := range strays {
		i := sort.Search(len(rep.Logs), func(i int) bool { return rep.Logs[i].Log >= st.Log })
		if i < len(rep.Logs) && rep.Logs[i].Log == st.Log && known[st.Log] {
			rep.Logs[i].Problems = append(rep.Logs[i].Problems, st.Problem)
		} else {
			rep.Problems = append(rep.Problems, st.Problem)
		}
	}
	return rep, nil
}

// anchors lists the non-nil Anchors.
func (o VerifyOptions) anchors() []Anchor {
	var out []Anchor
	for _, a := range o.Anchors {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

// anchorName names an anchor's checkpoint in reports.
func anchorName(a Anchor, i, n int) string {
	switch a.(type) {
	case *DirAnchor:
		return "anchored checkpoint in " + anchorLabel(a, i, n)
	case *HTTPAnchor:
		return "anchored checkpoint at " + anchorLabel(a, i, n)
	}
	if n == 1 {
		return "anchored checkpoint"
	}
	return fmt.Sprintf("anchored checkpoint (%s)", anchorLabel(a, i, n))
}

// anchorLabel names an anchor: its directory, its URL (without
// credentials), or its position among the configured ones.
func anchorLabel(a Anchor, i, n int) string {
	switch a := a.(type) {
	case *DirAnchor:
		return a.Dir
	case *HTTPAnchor:
		u, err := url.Parse(a.URL)
		if err != nil {
			return "the HTTP anchor"
		}
		u.User = nil // never report credentials
		return u.String()
	}
	if n == 1 {
		return "the anchor"
	}
	return fmt.Sprintf("anchor %d", i+1)
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

// logVerifier is the state of one log's verification.
type logVerifier struct {
	ctx    context.Context
	src    CheckpointSource
	o      VerifyOptions
	log    string
	origin string
	lr     LogReport
	stored tlog.HashReader

	cps      []checkpointAt // every checkpoint the log must agree with
	anchored *checkpointAt  // the largest valid anchored one
	base     *checkpointAt  // the checkpoint the scan resumes from, if any

	fr    frontier
	prev  [HashSize]byte
	next  int64 // the seq the scan expects next
	nodes nodeCheck
	adopt []pendingAdoption
}

// pendingAdoption is an adoption record whose claims are checked once the
// stored tree is.
type pendingAdoption struct {
	seq int64
	a   Adoption
}

func (v *logVerifier) bad(format string, args ...any) {
	v.lr.Problems = append(v.lr.Problems, fmt.Sprintf(format, args...))
}

func verifyLog(ctx context.Context, src CheckpointSource, o VerifyOptions, log string) (LogReport, error) {
	v := &logVerifier{ctx: ctx, src: src, o: o, log: log, origin: Origin(o.OriginBase, log), lr: LogReport{Log: log}}
	v.stored = tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return src.ReadHashes(ctx, log, idx) })
	v.fr = frontier{}
	if err := v.readCheckpoints(); err != nil {
		return v.lr, err
	}
	if err := v.resumeAtFloor(); err != nil {
		return v.lr, err
	}
	v.resumeIncremental()
	v.checkBelowBase()
	// The head is read before the scan and bounds it, so entries appended
	// while verify runs are left for the next run.
	head, err := src.Head(ctx, log)
	if err != nil {
		return v.lr, err
	}
	from := v.next
	v.nodes.start(ctx, src, log)
	past, err := v.scan(head)
	if nerr := v.nodes.wait(); err == nil {
		err = nerr
	}
	if err != nil {
		return v.lr, err
	}
	v.lr.Size, v.lr.Checked = v.next, v.next-from
	if err := v.finish(head, past); err != nil {
		return v.lr, err
	}
	return v.lr, nil
}

// readCheckpoints reads and checks the signature of every anchored
// checkpoint and the newest stored one.
func (v *logVerifier) readCheckpoints() error {
	as := v.o.anchors()
	for i, a := range as {
		name := anchorName(a, i, len(as))
		signed, err := a.Latest(v.ctx, v.origin)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if signed == nil {
			v.lr.AnchorsWithout = append(v.lr.AnchorsWithout, anchorLabel(a, i, len(as)))
			continue
		}
		size, root, err := OpenCheckpoint(signed, v.origin, v.o.Verifier)
		if err != nil {
			v.bad("%s is not valid for this log's key and origin (forged or altered): %v", name, err)
			continue
		}
		c := checkpointAt{name, size, root}
		v.cps = append(v.cps, c)
		if v.anchored == nil || size > v.anchored.size {
			v.anchored = &c
			v.lr.Anchored = size
		}
	}
	signed, err := v.src.LatestCheckpoint(v.ctx, v.log)
	if err != nil || signed == nil {
		return err
	}
	size, root, err := OpenCheckpoint(signed, v.origin, v.o.Verifier)
	if err != nil {
		v.bad("stored checkpoint is not valid for this log's key and origin (forged or altered): %v", err)
		return nil
	}
	v.cps = append(v.cps, checkpointAt{"stored checkpoint", size, root})
	return nil
}

// resumeAtFloor starts the scan at the prune floor: entries below
// floor-1 were pruned by retention, and the signed checkpoint kept at the
// floor stands for them.
func (v *logVerifier) resumeAtFloor() error {
	pr, ok := v.src.(Pruner)
	if !ok {
		return nil
	}
	floor, err := pr.PrunedBefore(v.ctx, v.log)
	if err != nil || floor <= 0 {
		return err
	}
	signed, err := v.src.CheckpointAt(v.ctx, v.log, floor)
	if err != nil {
		return err
	}
	size, root, cerr := OpenCheckpoint(signed, v.origin, v.o.Verifier)
	pc := checkpointAt{"prune checkpoint", size, root}
	if signed == nil || cerr != nil || size != floor || !v.resume(pc) {
		v.bad("entries below %d were removed, but the checkpoint kept at the prune floor is missing or does not match (entries deleted outside retention)", floor)
		return nil
	}
	if v.o.Retention <= 0 {
		return nil
	}
	now := time.Now
	if v.o.Now != nil {
		now = v.o.Now
	}
	if b, err := v.src.Body(v.ctx, v.log, floor-1); err == nil {
		if e, err := Decode(b); err == nil && e.Record.Time.After(now().Add(-v.o.Retention)) {
			v.bad("entries below %d were removed although entry %d is within the %s retention (deleted early)", floor, floor-1, v.o.Retention)
		}
	}
	return nil
}

// resumeIncremental starts the scan at the newest anchored checkpoint.
func (v *logVerifier) resumeIncremental() {
	if !v.o.Incremental || v.anchored == nil || v.anchored.size <= v.next {
		return
	}
	if !v.resume(*v.anchored) {
		v.bad("stored tree or entry %d does not match the anchored checkpoint; re-run without --incremental to locate the change", v.anchored.size-1)
	}
}

// checkBelowBase: the entries before the resume point are not re-hashed
// (pruned, or skipped by --incremental), so every checkpoint at or below
// it must be a prefix of the tree the resume checkpoint signs, or a log
// rewritten from its start and then pruned past an anchor would pass.
func (v *logVerifier) checkBelowBase() {
	if v.base == nil {
		return
	}
	for _, c := range v.cps {
		if c.size < 1 || c.size > v.base.size {
			continue
		}
		p, err := tlog.ProveTree(v.base.size, c.size, v.stored)
		if err != nil || tlog.CheckTree(p, v.base.size, v.base.root, c.size, c.root) != nil {
			v.bad("the first %d entries do not match the %s of that size (entries rewritten, reordered or forked)", c.size, c.what)
		}
	}
}

// scan checks every stored entry from v.next up to the head and returns
// the seq of the first stored entry at or past it (-1 if none).
func (v *logVerifier) scan(head Head) (int64, error) {
	past := int64(-1)
	err := v.src.Scan(v.ctx, v.log, v.next, func(r Row) error {
		if r.Seq >= head.Size && head.Size >= v.next {
			past = r.Seq
			return errStopScan
		}
		v.entry(r)
		if len(v.nodes.pending) >= nodeChunk {
			return v.nodes.flush()
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return past, err
	}
	return past, v.nodes.flush()
}

// entry checks one stored entry and adds it to the recomputed tree.
func (v *logVerifier) entry(r Row) {
	if r.Seq != v.next {
		if r.Seq > v.next {
			v.bad("entries %d..%d are missing", v.next, r.Seq-1)
		} else {
			v.bad("entry %d appears twice", r.Seq)
		}
		// The leaves no longer line up with the stored tree: its nodes
		// cannot be compared past here (the gap is the finding).
		v.nodes.off = true
	}
	e, err := Decode(r.Body)
	switch {
	case err != nil:
		v.bad("entry %d: %v", r.Seq, err)
	case e.Log != v.log || e.Seq != r.Seq:
		v.bad("entry %d: its encoding names %s, not %s (moved or reordered)", r.Seq, e.ID(), EntryID(v.log, r.Seq))
	case e.PrevHash != v.prev:
		v.bad("entry %d: prev_hash does not match entry %d (an entry was edited, removed or reordered)", r.Seq, r.Seq-1)
	}
	if err == nil {
		checkCopies(r, FieldsOf(e), v.bad)
		if e.Record.Outcome == Adopted {
			v.adoption(r.Seq, e.Record)
		}
	}
	ch := ChainHash(r.Body)
	if !bytes.Equal(r.Hash, ch[:]) {
		v.bad("entry %d: stored hash is not the hash of its bytes (entry edited)", r.Seq)
	}
	v.prev = ch
	hs, idx := v.fr.add(r.Body)
	if !v.nodes.off {
		for i, h := range hs {
			v.nodes.pending = append(v.nodes.pending, StoredHash{Index: idx + int64(i), Hash: h})
		}
	}
	v.next = r.Seq + 1
	for _, c := range v.cps {
		if c.size == v.next && v.fr.root() != c.root {
			v.bad("the first %d entries do not match the %s of that size (entries rewritten, reordered or forked)", c.size, c.what)
		}
	}
}

// adoption records an adoption record for the report.
func (v *logVerifier) adoption(seq int64, r Record) {
	var a Adoption
	if err := r.Detail.Decode(&a); err != nil {
		v.bad("entry %d: an adoption record without a readable detail: %v", seq, err)
		return
	}
	v.adopt = append(v.adopt, pendingAdoption{seq, a})
	v.lr.Adoptions = append(v.lr.Adoptions, AdoptionReport{Seq: seq, Time: r.Time, Operator: a.Operator, Reason: a.Reason, Size: a.Size})
}

// finish checks what only the whole scan tells: the head, checkpoints
// beyond the log, stored nodes past it, the adoptions' claims, and how
// much of the log the anchors cover.
func (v *logVerifier) finish(head Head, past int64) error {
	if past >= 0 {
		// An append writes its entries and the head in one transaction: an
		// entry the scan saw is covered by the head read after it, unless
		// it was inserted outside an append (queries would still show it).
		h, err := v.src.Head(v.ctx, v.log)
		if err != nil {
			return err
		}
		if past >= h.Size {
			v.bad("entry %d is stored past the head (%d entries): inserted outside an append", past, h.Size)
		}
	}
	if head.Size != v.next || (v.next > 0 && head.Hash != v.prev) {
		v.bad("head row says %d entries, the log holds %d (rows deleted or head rewritten)", head.Size, v.next)
	}
	for _, c := range v.cps {
		if c.size > v.next {
			v.bad("the %s covers %d entries but the log holds %d (truncated or rolled back)", c.what, c.size, v.next)
		}
	}
	if err := v.nodesPastTheLog(max(head.Size, v.next)); err != nil {
		return err
	}
	v.nodes.report(v.bad)
	for _, p := range v.adopt {
		root, err := tlog.TreeHash(p.a.Size, v.stored)
		if p.a.Size > p.seq || err != nil || root != p.a.Root {
			v.bad("entry %d: the adoption record's adopted tree (%d entries) is not the log's", p.seq, p.a.Size)
		}
	}
	switch {
	case v.anchored != nil && v.anchored.size <= v.next:
		v.lr.Unanchored = v.next - v.anchored.size
	case v.anchored == nil:
		v.lr.Unanchored = v.next
	}
	v.lr.AnchorMissing = v.next > 0 && len(v.lr.AnchorsWithout) > 0
	return nil
}

// nodesPastTheLog reports stored Merkle nodes beyond the log's entries:
// inserted outside an append, they would make the next append fail.
func (v *logVerifier) nodesPastTheLog(size int64) error {
	extra, err := v.src.ReadHashRange(v.ctx, v.log, tlog.StoredHashIndex(0, size), 1<<62)
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		v.bad("%d stored Merkle nodes lie past the log's %d entries, the first at index %d (inserted outside an append; the next append would fail on them)",
			len(extra), size, extra[0].Index)
	}
	return nil
}

// nodeChunk is how many recomputed nodes are compared per range read.
const nodeChunk = 8192

// nodeCheck compares recomputed Merkle nodes with the stored ones. The
// scan hands it chunks in index order; one goroutine reads each chunk's
// stored range and compares, while the scan goes on.
type nodeCheck struct {
	pending []StoredHash // recomputed, in index order, not yet handed over
	off     bool         // the leaves stopped lining up with the tree
	chunks  chan []StoredHash
	done    chan error

	// Set by the comparing goroutine; read after wait.
	bad     int64
	first   int64 // stored index of the first bad node
	missing bool  // the first bad node is absent rather than different
}

// start starts the comparing goroutine; wait must follow.
func (n *nodeCheck) start(ctx context.Context, src LogReader, log string) {
	n.chunks, n.done = make(chan []StoredHash, 2), make(chan error, 1)
	go func() {
		var err error
		for c := range n.chunks {
			if err == nil {
				err = n.compare(ctx, src, log, c)
			}
		}
		n.done <- err
	}()
}

// flush hands the pending nodes to the comparing goroutine.
func (n *nodeCheck) flush() error {
	if len(n.pending) == 0 {
		return nil
	}
	n.chunks <- n.pending
	n.pending = make([]StoredHash, 0, nodeChunk)
	return nil
}

// wait ends the comparisons and returns the first read error.
func (n *nodeCheck) wait() error {
	close(n.chunks)
	return <-n.done
}

// compare compares one chunk of recomputed nodes with the stored ones in
// one range read.
func (n *nodeCheck) compare(ctx context.Context, src LogReader, log string, chunk []StoredHash) error {
	lo, hi := chunk[0].Index, chunk[len(chunk)-1].Index+1
	got, err := src.ReadHashRange(ctx, log, lo, hi)
	if err != nil {
		return err
	}
	j := 0
	for _, want := range chunk {
		for j < len(got) && got[j].Index < want.Index {
			j++
		}
		missing := j == len(got) || got[j].Index != want.Index
		if missing || got[j].Hash != want.Hash {
			if n.bad == 0 {
				n.first, n.missing = want.Index, missing
			}
			n.bad++
		}
	}
	return nil
}

// report names the first bad node, which entries it covers and how many
// nodes were bad in all.
func (n *nodeCheck) report(bad func(string, ...any)) {
	if n.bad == 0 {
		return
	}
	level, i := tlog.SplitStoredHashIndex(n.first)
	what := "does not match the entries"
	if n.missing {
		what = "is missing"
	}
	more := ""
	if n.bad > 1 {
		more = fmt.Sprintf("; %d stored nodes are bad in all", n.bad)
	}
	bad("stored Merkle node level %d #%d (entries %d..%d) %s (stored index %d): inclusion proofs through it would not verify%s",
		level, i, i<<level, (i+1)<<level-1, what, n.first, more)
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
		if d := want.Diff(c.Fields); len(d) > 0 {
			bad("entry %d: %s of %s differ from the entry's bytes (edited; queries would miss or misfile it)", r.Seq, strings.Join(d, ", "), c.Where)
		}
	}
}

// resume rebuilds the verifier's state at a checkpoint from the stored
// tree, after checking the tree against the checkpoint's root and the last
// entry's bytes against the tree, and makes it the scan's base.
func (v *logVerifier) resume(cp checkpointAt) bool {
	var fr frontier
	var idx []int64
	start := int64(0)
	for k := 62; k >= 0; k-- {
		if cp.size&(1<<k) != 0 {
			fr.nodes = append(fr.nodes, frontierNode{level: k, n: start >> k})
			idx = append(idx, tlog.StoredHashIndex(k, start>>k))
			start += 1 << k
		}
	}
	hs, err := v.stored.ReadHashes(idx)
	if err != nil {
		return false
	}
	for i := range hs {
		fr.nodes[i].hash = hs[i]
	}
	fr.leaves = cp.size
	if fr.root() != cp.root {
		return false
	}
	body, err := v.src.Body(v.ctx, v.log, cp.size-1)
	if err != nil {
		return false
	}
	p, err := tlog.ProveRecord(cp.size, cp.size-1, v.stored)
	if err != nil || tlog.CheckRecord(p, cp.size, cp.root, cp.size-1, tlog.RecordHash(body)) != nil {
		return false
	}
	v.fr, v.prev, v.next, v.base = fr, ChainHash(body), cp.size, &cp
	return true
}

// frontier is the right edge of an RFC 6962 tree: its perfect subtrees,
// largest first. It computes the stored hashes each new leaf adds
// (tlog.StoredHashes reads the left siblings from it) and tree roots in
// O(log n) memory.
type frontier struct {
	nodes  []frontierNode
	leaves int64
}

type frontierNode struct {
	level int
	n     int64 // index of the node within its level
	hash  tlog.Hash
}

// ReadHashes serves the frontier's nodes to tlog.StoredHashes.
func (f *frontier) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		level, n := tlog.SplitStoredHashIndex(x)
		found := false
		for _, fn := range f.nodes {
			if fn.level == level && fn.n == n {
				out[i], found = fn.hash, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("audit: node %d is not on the tree's right edge", x)
		}
	}
	return out, nil
}

// add appends a leaf and returns the stored hashes it adds and the stored
// index of the first (the others follow it).
func (f *frontier) add(body []byte) ([]tlog.Hash, int64) {
	n := f.leaves
	hs, err := tlog.StoredHashes(n, body, f)
	if err != nil {
		// The frontier holds every left sibling by construction.
		panic(err)
	}
	m := len(hs) - 1 // trailing ones of n: the subtrees this leaf completes
	f.nodes = append(f.nodes[:len(f.nodes)-m], frontierNode{level: m, n: n >> m, hash: hs[m]})
	f.leaves++
	return hs, tlog.StoredHashIndex(0, n)
}

func (f *frontier) root() tlog.Hash {
	if len(f.nodes) == 0 {
		return emptyRoot
	}
	r := f.nodes[len(f.nodes)-1].hash
	for i := len(f.nodes) - 2; i >= 0; i-- {
		r = tlog.NodeHash(f.nodes[i].hash, r)
	}
	return r
}
