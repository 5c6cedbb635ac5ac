package audit

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// encodeReference is the cryptobyte encoder Encode replaced; Encode must
// produce its bytes exactly. It returns the canonical, versioned, length-prefixed encoding of e.
// Every field has a fixed position and an explicit length, so two different
// entries never share an encoding and decoding needs no canonicalization.
func encodeReference(e Entry) ([]byte, error) {
	r := e.Record
	b := cryptobyte.NewBuilder(make([]byte, 0, 512+len(r.Policy)))
	b.AddUint8(EncodingVersion)
	str := func(s string) {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
	}
	i64 := func(v int64) { b.AddUint64(uint64(v)) }
	tm := func(t time.Time) {
		if t.IsZero() {
			i64(0)
			return
		}
		i64(t.UnixNano())
	}
	for _, s := range []string{e.Log, r.RequestID, string(r.Outcome), r.Reason, r.Principal, r.AuthMethod, r.Org, r.JobID,
		r.TaskID, r.Operation, r.Bucket, r.Prefix, r.RoleARN, r.Backend, r.SessionName, r.SourceIdentity, r.AccessKeyID,
		r.PolicySHA256, r.Policy, r.ClientAddr, r.UserAgent, r.ReplicaID} {
		if len(s) > maxField {
			return nil, fmt.Errorf("audit: a record field is longer than %d bytes", maxField)
		}
	}
	str(e.Log)
	i64(e.Seq)
	b.AddBytes(e.PrevHash[:])
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
	return b.Bytes()
}

// TestEncodeMatchesCryptobyte: the hand-written encoder produces exactly
// the bytes of the cryptobyte encoder it replaced (stored entries keep
// their hashes).
func TestEncodeMatchesCryptobyte(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	str := func() string { return strings.Repeat(fmt.Sprint(rng.Intn(1000)), rng.Intn(40)) }
	for i := 0; i < 500; i++ {
		e := Entry{Log: "main", Seq: rng.Int63(), Record: Record{
			RequestID: str(), Outcome: Outcome(str()), Reason: str(), Principal: str(), AuthMethod: str(), Org: str(), JobID: str(),
			TaskID: str(), Operation: str(), Bucket: str(), Prefix: str(), FileCount: rng.Intn(100), RoleARN: str(), Backend: str(),
			SessionName: str(), SourceIdentity: str(), AccessKeyID: str(), Duration: time.Duration(rng.Int63()), PolicySHA256: str(),
			Policy: str(), PackedPolicySize: rng.Intn(100), ClientAddr: str(), UserAgent: str(), Latency: time.Duration(rng.Int63()), ReplicaID: str(),
		}}
		rng.Read(e.PrevHash[:])
		if i%2 == 0 {
			e.Record.Time = time.Unix(0, rng.Int63())
			e.Record.Expiration = time.Unix(0, rng.Int63())
		}
		if i == 0 {
			e.Record.Policy = strings.Repeat("x", 70000)
		}
		got, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		want, err := encodeReference(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("entry %d: encodings differ", i)
		}
	}
	if _, err := Encode(Entry{Log: "main", Record: Record{Policy: strings.Repeat("x", maxField+1)}}); err == nil {
		t.Fatal("oversized field accepted")
	}
}
