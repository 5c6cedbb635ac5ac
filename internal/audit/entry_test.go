package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

func TestEncodeRoundTrip(t *testing.T) {
	for i, r := range []audit.Record{{}, audittest.Sample(0), audittest.Sample(2), {Outcome: audit.Denied, Policy: string(make([]byte, 70000))}} {
		e := audit.Entry{Log: "main", Seq: int64(i), PrevHash: [32]byte{1, 2, 3}, Record: r}
		b, err := audit.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := audit.Decode(b)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		r.ID = e.ID()
		if got.Record != r || got.Seq != e.Seq || got.Log != e.Log || got.PrevHash != e.PrevHash {
			t.Fatalf("%d: round trip\n got %+v\nwant %+v", i, got, e)
		}
		again, _ := audit.Encode(got)
		if !bytes.Equal(again, b) {
			t.Fatalf("%d: re-encoding differs", i)
		}
	}
}

func TestEncodingIsUnambiguous(t *testing.T) {
	// Moving bytes between adjacent fields must change the encoding.
	a := audit.Entry{Log: "main", Record: audit.Record{Org: "ab", JobID: "c"}}
	b := audit.Entry{Log: "main", Record: audit.Record{Org: "a", JobID: "bc"}}
	ea, _ := audit.Encode(a)
	eb, _ := audit.Encode(b)
	if bytes.Equal(ea, eb) {
		t.Fatal("different records share an encoding")
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := audit.Encode(audit.Entry{Log: "main", Record: audittest.Sample(1)})
	bad := map[string][]byte{
		"empty":    nil,
		"version":  append([]byte{9}, good[1:]...),
		"trailing": append(append([]byte{}, good...), 0),
		"short":    good[:len(good)-1],
	}
	for name, b := range bad {
		if _, err := audit.Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseID(t *testing.T) {
	for _, c := range []struct {
		id  string
		log string
		seq int64
		ok  bool
	}{{"main:0", "main", 0, true}, {"host-1.example:42", "host-1.example", 42, true}, {"main", "", 0, false}, {"main:-1", "", 0, false}, {":3", "", 0, false}, {"a/b:1", "", 0, false}} {
		log, seq, err := audit.ParseID(c.id)
		if (err == nil) != c.ok || log != c.log || seq != c.seq {
			t.Errorf("ParseID(%q) = %q, %d, %v", c.id, log, seq, err)
		}
	}
}

// fakeStore is an audit.Store with a function field.
type fakeStore struct {
	append func(ctx context.Context, recs []audit.Record) ([]audit.Entry, error)
}

var _ audit.Store = (*fakeStore)(nil)

func (f *fakeStore) Append(ctx context.Context, recs []audit.Record) ([]audit.Entry, error) {
	return f.append(ctx, recs)
}

func TestWriterHonoursContext(t *testing.T) {
	block := make(chan struct{})
	w := audit.NewWriter(&fakeStore{append: func(context.Context, []audit.Record) ([]audit.Entry, error) {
		<-block
		return nil, nil
	}}, audit.WriterOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Record(ctx, audit.Record{}); err == nil {
		t.Fatal("Record with a cancelled context returned nil before the record was durable")
	}
	close(block)
	_ = w.Close()
}

// TestDetailEntries: a record with a Detail is a version 2 entry that
// round-trips byte for byte; a decision without one keeps the version 1
// layout; details that are not one JSON object are refused both ways.
func TestDetailEntries(t *testing.T) {
	d, err := audit.NewDetail(map[string]any{"count": 3, "sample": []string{"10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := audittest.Sample(1)
	r.Detail = d
	e := audit.Entry{Log: "main", Seq: 7, Record: r}
	b, err := audit.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != audit.EncodingVersionDetail {
		t.Fatalf("version %d, want %d", b[0], audit.EncodingVersionDetail)
	}
	got, err := audit.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	r.ID = e.ID()
	if got.Record != r || got.Version != audit.EncodingVersionDetail {
		t.Fatalf("round trip\n got %+v\nwant %+v", got.Record, r)
	}
	if again, _ := audit.Encode(got); !bytes.Equal(again, b) {
		t.Fatal("re-encoding differs")
	}
	var back struct{ Count int }
	if err := got.Record.Detail.Decode(&back); err != nil || back.Count != 3 {
		t.Fatalf("detail decode: %v %+v", err, back)
	}
	js, err := json.Marshal(got.Record)
	if err != nil || !strings.Contains(string(js), `"detail":{"count":3,"sample":["10.0.0.1"]}`) {
		t.Fatalf("json: %v %s", err, js)
	}

	plain, _ := audit.Encode(audit.Entry{Log: "main", Record: audittest.Sample(1)})
	if plain[0] != audit.EncodingVersion {
		t.Fatalf("a decision without detail encodes as version %d", plain[0])
	}
	// Version 2 bytes whose detail is empty, or not an object, are not
	// what Encode makes.
	for name, detail := range map[string]string{"empty": "", "array": "[1]", "broken": "{"} {
		forged := append([]byte{audit.EncodingVersionDetail}, plain[1:]...)
		forged = append(forged, byte(len(detail)>>16), byte(len(detail)>>8), byte(len(detail)))
		forged = append(forged, detail...)
		if _, err := audit.Decode(forged); err == nil {
			t.Errorf("%s detail accepted", name)
		}
	}
	for _, bad := range []audit.Detail{"[1]", "{", "7"} {
		r := audittest.Sample(1)
		r.Detail = bad
		if _, err := audit.Encode(audit.Entry{Log: "main", Record: r}); err == nil {
			t.Errorf("detail %q encoded", bad)
		}
	}
	if _, err := audit.NewDetail([]int{1}); err == nil {
		t.Error("NewDetail accepted a non-object")
	}
	if _, err := audit.Encode(audit.Entry{Version: audit.EncodingVersion, Log: "main", Record: r}); err == nil {
		t.Error("a version 1 entry carried a detail")
	}
}
