package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vtk/dispenser/internal/revoke/revoketest"
)

func TestStore(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "audit db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revoketest.RunStore(t, s)
}
