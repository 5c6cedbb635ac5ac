package audit

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Head is the state of a log after its last entry: how many entries it holds
// and the chain hash of the newest one (all zero for an empty log).
type Head struct {
	Size int64
	Hash [HashSize]byte
}

// StoredHash is one node of the log's Merkle tree as tlog stores it.
type StoredHash struct {
	Index int64
	Hash  tlog.Hash
}

// Sealed is a batch of records turned into entries, ready to be written in
// one transaction together with their Merkle hashes and the new head.
type Sealed struct {
	Entries []Entry
	// Bodies are the encodings, stored verbatim; Hashes[i] = ChainHash(Bodies[i]).
	Bodies [][]byte
	Hashes [][HashSize]byte
	// Tree holds the new stored Merkle hashes, in index order.
	Tree []StoredHash
	Head Head
}

// Seal appends recs after head: it numbers them, links each to the previous
// entry's chain hash, encodes them and computes the Merkle tree nodes they
// add. r reads stored hashes already in the log. Seal does no I/O of its own,
// so every store seals the same way.
func Seal(log string, head Head, recs []Record, r tlog.HashReader) (*Sealed, error) {
	if !ValidLogName(log) {
		return nil, fmt.Errorf("audit: invalid log name %q", log)
	}
	// A leaf adds 1 + (trailing ones of its index) stored hashes: under 2
	// per record on average.
	s := &Sealed{Head: head, Entries: make([]Entry, 0, len(recs)), Bodies: make([][]byte, 0, len(recs)),
		Hashes: make([][HashSize]byte, 0, len(recs)), Tree: make([]StoredHash, 0, 2*len(recs)+8)}
	ov := &overlay{base: r, m: make(map[int64]tlog.Hash, 2*len(recs)+8)}
	for _, rec := range recs {
		e := Entry{Log: log, Seq: s.Head.Size, PrevHash: s.Head.Hash, Record: rec}
		body, err := Encode(e)
		if err != nil {
			return nil, err
		}
		hs, err := tlog.StoredHashes(e.Seq, body, ov)
		if err != nil {
			return nil, fmt.Errorf("audit: merkle hashes for %s: %w", e.ID(), err)
		}
		base := tlog.StoredHashIndex(0, e.Seq)
		for i, h := range hs {
			ov.m[base+int64(i)] = h
			s.Tree = append(s.Tree, StoredHash{Index: base + int64(i), Hash: h})
		}
		e.Record.ID = e.ID()
		ch := ChainHash(body)
		s.Entries = append(s.Entries, e)
		s.Bodies = append(s.Bodies, body)
		s.Hashes = append(s.Hashes, ch)
		s.Head = Head{Size: e.Seq + 1, Hash: ch}
	}
	return s, nil
}

// overlay serves hashes sealed earlier in the same batch (and caches the
// ones read from the store), falling back to the store.
type overlay struct {
	base tlog.HashReader
	m    map[int64]tlog.Hash
}

func (o *overlay) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	var miss []int64
	for _, i := range idx {
		if _, ok := o.m[i]; !ok {
			miss = append(miss, i)
		}
	}
	if len(miss) > 0 {
		got, err := o.base.ReadHashes(miss)
		if err != nil {
			return nil, err
		}
		if len(got) != len(miss) {
			return nil, fmt.Errorf("audit: store returned %d hashes for %d indexes", len(got), len(miss))
		}
		for j, i := range miss {
			o.m[i] = got[j]
		}
	}
	for j, i := range idx {
		out[j] = o.m[i]
	}
	return out, nil
}
