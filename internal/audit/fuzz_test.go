package audit_test

import (
	"bytes"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

// FuzzDecode: receipts carry entry bytes from outside, so Decode must never
// panic, and every encoding it accepts is the one Encode produces.
func FuzzDecode(f *testing.F) {
	for i := 0; i < 4; i++ {
		b, _ := audit.Encode(audit.Entry{Log: "main", Seq: int64(i), Record: audittest.Sample(i)})
		f.Add(b)
	}
	withDetail := audittest.Sample(1)
	withDetail.Detail = `{"count":2}`
	b, _ := audit.Encode(audit.Entry{Log: "main", Record: withDetail})
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := audit.Decode(b)
		if err != nil {
			return
		}
		again, err := audit.Encode(e)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding")
		}
	})
}
