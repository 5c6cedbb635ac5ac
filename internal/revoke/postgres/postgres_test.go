package postgres

import (
	"context"
	"testing"

	"github.com/vtk/dispenser/internal/revoke/revoketest"
	"github.com/vtk/dispenser/internal/testenv"
)

func TestStore(t *testing.T) {
	s, err := Open(context.Background(), testenv.PostgresSchema(t, "revoke_test_"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revoketest.RunStore(t, s)
}
