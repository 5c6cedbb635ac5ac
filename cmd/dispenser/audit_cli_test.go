package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/audit/sqlite"
)

// failingWriter accepts n bytes, then fails every write (a full disk, a
// closed pipe).
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errors.New("no space left on device")
	}
	w.n -= len(p)
	return len(p), nil
}

// TestAuditQueryReportsWriteErrors: an export cut short by a failing
// output must not exit 0 as if it were complete.
func TestAuditQueryReportsWriteErrors(t *testing.T) {
	path := testConfig(t, true)
	s, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(filepath.Dir(path), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for i := 0; i < 30; i++ {
		recs = append(recs, audittest.Sample(i))
	}
	if _, err := s.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	must(t, s.Close())
	for _, format := range []string{"ndjson", "json", "table"} {
		var errb bytes.Buffer
		code := run([]string{"audit", "query", "--config", path, "--format", format, "--limit", "7"}, &failingWriter{n: 600}, &errb)
		if code == 0 || !strings.Contains(errb.String(), "no space left on device") {
			t.Errorf("--format %s with a failing output: exit %d, stderr %q; want a non-zero exit and the error", format, code, errb.String())
		}
		var out bytes.Buffer
		if code := run([]string{"audit", "query", "--config", path, "--format", format, "--limit", "7"}, &out, &errb); code != 0 {
			t.Errorf("--format %s: exit %d, stderr %q", format, code, errb.String())
		}
	}
}

// TestAuditVerifyRefusesUnknownFormat: a mistyped --format must not fall
// back to text (a script parsing JSON would then read the wrong thing).
func TestAuditVerifyRefusesUnknownFormat(t *testing.T) {
	path := testConfig(t, true)
	if _, err := audit.GenerateKey(filepath.Join(filepath.Dir(path), "audit.db.checkpoint-key"), "test"); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "verify", "--config", path, "--format", "jsn"}, &out, &errb); code != 3 || !strings.Contains(errb.String(), "--format") {
		t.Fatalf("--format jsn: exit %d, stdout %q, stderr %q; want exit 3 naming --format", code, out.String(), errb.String())
	}
}
