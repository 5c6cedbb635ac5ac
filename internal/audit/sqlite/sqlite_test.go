package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Path: filepath.Join(t.TempDir(), "audit.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audit.Trail { return openTemp(t) })
}

func TestReopenKeepsChain(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err = Open(ctx, Options{Path: path}) // migrations are idempotent
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	es, err := s.Append(ctx, []audit.Record{audittest.Sample(1)})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := s.Body(ctx, "main", 0)
	if es[0].Seq != 1 || es[0].PrevHash != audit.ChainHash(body) {
		t.Fatalf("after reopen: seq %d, chained=%v", es[0].Seq, es[0].PrevHash == audit.ChainHash(body))
	}
}

func TestAppendOnlyTriggers(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, []audit.Record{audittest.Sample(0)}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE audit_records SET org = 'x'`, `DELETE FROM audit_records`, `DELETE FROM audit_hashes`} {
		if _, err := s.w.ExecContext(ctx, q); err == nil {
			t.Errorf("%s succeeded", q)
		}
	}
}
