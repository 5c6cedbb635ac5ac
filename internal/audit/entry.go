package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// EncodingVersion is the version byte that starts every encoded entry. A new
// layout gets a new version; old entries keep verifying with their own.
// Version 1 is the decision layout; version 2 appends Record.Detail and is
// used only for entries that carry one, so a decision encodes exactly as it
// always did.
const EncodingVersion = 1

// EncodingVersionDetail is the layout of entries with a Record.Detail.
const EncodingVersionDetail = 2

// HashSize is the size of every hash in the trail (SHA-256).
const HashSize = sha256.Size

// Entry is a Record sealed into a log: its position (Seq, from 0) and the
// chain hash of the entry before it. The encoding of an Entry is what the
// store keeps verbatim and what every hash covers.
type Entry struct {
	// Version is the encoding version the entry was decoded from; zero
	// (a new entry) encodes with the version its record needs.
	Version  uint8
	Log      string
	Seq      int64
	PrevHash [HashSize]byte
	Record   Record
}

// ID is the public identifier of an entry: "<log>:<seq>".
func (e Entry) ID() string { return EntryID(e.Log, e.Seq) }

// EntryID formats a record id.
func EntryID(log string, seq int64) string { return log + ":" + strconv.FormatInt(seq, 10) }

// ParseID splits a record id into its log and seq.
func ParseID(id string) (log string, seq int64, err error) {
	i := strings.LastIndexByte(id, ':')
	if i <= 0 {
		return "", 0, errors.New("record id must be <log>:<seq>")
	}
	seq, err = strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq < 0 {
		return "", 0, errors.New("record id must end in a non-negative sequence number")
	}
	if !ValidLogName(id[:i]) {
		return "", 0, errors.New("record id has an invalid log name")
	}
	return id[:i], seq, nil
}

var logNameRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidLogName reports whether s can name a log (shard).
func ValidLogName(s string) bool { return logNameRe.MatchString(s) }

// ChainHash is the hash the next entry carries as PrevHash: SHA-256 of the
// encoded bytes exactly as stored.
func ChainHash(body []byte) [HashSize]byte { return sha256.Sum256(body) }

// maxField bounds every variable-length field (uint24 length prefix).
const maxField = 1<<24 - 1

// Encode returns the canonical, versioned, length-prefixed encoding of e.
// Every field has a fixed position and an explicit length, so two different
// entries never share an encoding and decoding needs no canonicalization.
// The layout is the one golang.org/x/crypto/cryptobyte builds (uint8
// version; strings with a big-endian uint24 length; integers and times as
// big-endian uint64; the previous hash as 32 raw bytes); it is written
// directly because Encode runs on the commit path for every record.
func Encode(e Entry) ([]byte, error) {
	r := e.Record
	ver := e.Version
	switch {
	case ver == 0 && r.Detail == "":
		ver = EncodingVersion
	case ver == 0:
		ver = EncodingVersionDetail
	case ver == EncodingVersion && r.Detail != "":
		return nil, errors.New("audit: a version 1 entry cannot carry a detail")
	case ver != EncodingVersion && ver != EncodingVersionDetail:
		return nil, fmt.Errorf("audit: unknown entry encoding version %d", ver)
	}
	if !r.Detail.valid() {
		return nil, errors.New("audit: record detail must be a JSON object")
	}
	n := 1 + HashSize + 8*7 + 3 + len(r.Detail)
	for _, s := range [...]string{e.Log, r.RequestID, string(r.Outcome), r.Reason, r.Principal, r.AuthMethod, r.Org, r.JobID,
		r.TaskID, r.Operation, r.Bucket, r.Prefix, r.RoleARN, r.Backend, r.SessionName, r.SourceIdentity, r.AccessKeyID,
		r.PolicySHA256, r.Policy, r.ClientAddr, r.UserAgent, r.ReplicaID, string(r.Detail)} {
		if len(s) > maxField {
			return nil, fmt.Errorf("audit: a record field is longer than %d bytes", maxField)
		}
		n += 3 + len(s)
	}
	b := make([]byte, 0, n)
	str := func(s string) {
		b = append(b, byte(len(s)>>16), byte(len(s)>>8), byte(len(s)))
		b = append(b, s...)
	}
	i64 := func(v int64) { b = binary.BigEndian.AppendUint64(b, uint64(v)) }
	tm := func(t time.Time) {
		if t.IsZero() {
			i64(0)
			return
		}
		i64(t.UnixNano())
	}
	b = append(b, ver)
	str(e.Log)
	i64(e.Seq)
	b = append(b, e.PrevHash[:]...)
	tm(r.Time)
	str(r.RequestID)
	str(string(r.Outcome))
	str(r.Reason)
	str(r.Principal)
	str(r.AuthMethod)
	str(r.Org)
	str(r.JobID)
	str(r.TaskID)
	str(r.Operation)
	str(r.Bucket)
	str(r.Prefix)
	i64(int64(r.FileCount))
	str(r.RoleARN)
	str(r.Backend)
	str(r.SessionName)
	str(r.SourceIdentity)
	str(r.AccessKeyID)
	tm(r.Expiration)
	i64(int64(r.Duration))
	str(r.PolicySHA256)
	str(r.Policy)
	i64(int64(r.PackedPolicySize))
	str(r.ClientAddr)
	str(r.UserAgent)
	i64(int64(r.Latency))
	str(r.ReplicaID)
	if ver == EncodingVersionDetail {
		str(string(r.Detail))
	}
	return b, nil
}

// ErrMalformed is returned by Decode for bytes that are not an entry.
var ErrMalformed = errors.New("audit: malformed entry encoding")

// Decode parses an encoding made by Encode. It refuses unknown versions and
// trailing bytes, so Encode(Decode(b)) == b for every accepted b.
func Decode(body []byte) (Entry, error) {
	d := decoder{s: cryptobyte.String(body), ok: true}
	var e Entry
	var ver uint8
	if !d.s.ReadUint8(&ver) {
		return e, ErrMalformed
	}
	if ver != EncodingVersion && ver != EncodingVersionDetail {
		return e, fmt.Errorf("audit: unknown entry encoding version %d", ver)
	}
	e.Version = ver
	d.str(&e.Log)
	d.i64(&e.Seq)
	var prev []byte
	if d.ok && !d.s.ReadBytes(&prev, HashSize) {
		d.ok = false
	}
	copy(e.PrevHash[:], prev)
	d.record(&e.Record)
	if ver == EncodingVersionDetail {
		var detail string
		d.str(&detail)
		e.Record.Detail = Detail(detail)
		// Version 2 exists for the detail: an empty or non-object one is
		// not an encoding Encode makes.
		if detail == "" || !e.Record.Detail.valid() {
			d.ok = false
		}
	}
	if !d.ok || !d.s.Empty() {
		return Entry{}, ErrMalformed
	}
	e.Record.ID = e.ID()
	return e, nil
}

// decoder reads the fields of an encoding in order; the first field that
// cannot be read clears ok and every later read is a no-op.
type decoder struct {
	s  cryptobyte.String
	ok bool
}

func (d *decoder) str(out *string) {
	var v cryptobyte.String
	if d.ok && d.s.ReadUint24LengthPrefixed(&v) {
		*out = string(v)
		return
	}
	d.ok = false
}

func (d *decoder) i64(out *int64) {
	var v uint64
	if d.ok && d.s.ReadUint64(&v) {
		*out = int64(v)
		return
	}
	d.ok = false
}

func (d *decoder) tm(out *time.Time) {
	var n int64
	d.i64(&n)
	if d.ok && n != 0 {
		*out = time.Unix(0, n).UTC()
	}
}

func (d *decoder) integer(out *int) {
	var n int64
	d.i64(&n)
	*out = int(n)
}

func (d *decoder) dur(out *time.Duration) {
	var n int64
	d.i64(&n)
	*out = time.Duration(n)
}

// record reads a Record's fields in the order Encode writes them.
func (d *decoder) record(r *Record) {
	var outcome string
	d.tm(&r.Time)
	d.str(&r.RequestID)
	d.str(&outcome)
	d.str(&r.Reason)
	d.str(&r.Principal)
	d.str(&r.AuthMethod)
	d.str(&r.Org)
	d.str(&r.JobID)
	d.str(&r.TaskID)
	d.str(&r.Operation)
	d.str(&r.Bucket)
	d.str(&r.Prefix)
	d.integer(&r.FileCount)
	d.str(&r.RoleARN)
	d.str(&r.Backend)
	d.str(&r.SessionName)
	d.str(&r.SourceIdentity)
	d.str(&r.AccessKeyID)
	d.tm(&r.Expiration)
	d.dur(&r.Duration)
	d.str(&r.PolicySHA256)
	d.str(&r.Policy)
	d.integer(&r.PackedPolicySize)
	d.str(&r.ClientAddr)
	d.str(&r.UserAgent)
	d.dur(&r.Latency)
	d.str(&r.ReplicaID)
	r.Outcome = Outcome(outcome)
}
