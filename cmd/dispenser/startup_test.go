package main

import (
	"context"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestAuditStoreOpenHasAStartupTimeout: an audit store that never
// finishes opening (here its migration waits on a lock another session
// holds, as behind a replica stuck migrating) fails the start within the
// start-up timeout instead of hanging it.
func TestAuditStoreOpenHasAStartupTimeout(t *testing.T) {
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	dsn := testenv.PostgresSchema(t, "dispenser_startup_")
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('dispenser-audit-migrate:' || $1, 0))`, schema); err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "checkpoint.key")
	if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(opsTestConfig(t, t.TempDir(), "audit:\n  type: postgres\n  dsn: "+dsn+
		"\n  anchor_dir: "+filepath.Join(keyDir, "anchors")+"\n  checkpoint:\n    signing_key_file: "+key+"\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		a   *app
		err error
	}
	done := make(chan result, 1)
	began := time.Now()
	go func() {
		a, err := newAppWith(cfg, zap.NewNop(), appDeps{StartupTimeout: time.Second})
		done <- result{a, err}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			r.a.close()
			t.Fatal("the start succeeded while the audit store could not be migrated")
		}
		if !strings.Contains(r.err.Error(), "migrate") {
			t.Fatalf("start failed with %v, want the audit migration named", r.err)
		}
		t.Logf("failed after %s: %v", time.Since(began).Round(time.Millisecond), r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the start still hangs on the audit store 20s after a 1s start-up timeout")
	}
}
