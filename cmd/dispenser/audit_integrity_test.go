package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/audittest"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/testenv"
)

// TestAuditVerifyMissingDatabase: verify against a database that does not
// exist fails with exit 3 and writes nothing: no database, -wal or -shm
// file, no anchor directory.
func TestAuditVerifyMissingDatabase(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	if _, err := audit.GenerateKey(filepath.Join(dir, "audit.db.checkpoint-key"), "test"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	code, out, stderr := runCLI(t, "audit", "verify", "--config", path)
	if code != 3 || !strings.Contains(stderr, "does not exist") {
		t.Fatalf("verify of a missing database: exit %d\n%s%s\nwant exit 3 saying it does not exist", code, out, stderr)
	}
	after, _ := os.ReadDir(dir)
	if len(after) != len(before) {
		var names []string
		for _, e := range after {
			names = append(names, e.Name())
		}
		t.Fatalf("verify created files: %v", names)
	}
}

// issueSome starts the app on path, issues n credentials and stops it (a
// clean shutdown anchors a last checkpoint); it returns the access keys.
func issueSome(t *testing.T, path string, n int) []string {
	t.Helper()
	a, srv := startAuditApp(t, path)
	defer func() { srv.Close(); a.close() }()
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	var keys []string
	for i := 0; i < n; i++ {
		code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", tok)
		if code != 200 {
			t.Fatalf("credentials: %d %s", code, body)
		}
		var c struct{ AccessKeyId string }
		_ = json.Unmarshal(body, &c)
		keys = append(keys, c.AccessKeyId)
	}
	return keys
}

// resealSQLite is the anchor-laundering attack on a stopped dispenser's
// files: the anchor directory deleted, every row of the log deleted and n
// forged records appended through the store (consistent hashes and head),
// stored checkpoints gone.
func resealSQLite(t *testing.T, dir string, n int) {
	t.Helper()
	ctx := context.Background()
	db := filepath.Join(dir, "audit.db")
	if err := os.RemoveAll(db + ".anchors"); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER audit_records_no_update`, `DROP TRIGGER audit_records_no_delete`,
		`DROP TRIGGER audit_hashes_no_update`, `DROP TRIGGER audit_hashes_no_delete`,
		`DELETE FROM audit_records`, `DELETE FROM audit_hashes`, `DELETE FROM audit_checkpoints`, `DELETE FROM audit_heads`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	must(t, raw.Close())
	// ... and the query index, in its own file.
	if raw, err = sql.Open("sqlite", "file:"+sqlite.IndexPath(db)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DELETE FROM audit_index`, `DELETE FROM audit_index_cursor`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	must(t, raw.Close())
	s, err := sqlite.Open(ctx, sqlite.Options{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for i := 0; i < n; i++ {
		r := audittest.Sample(i)
		r.AccessKeyID = fmt.Sprintf("ASIAFORGED%06d", i)
		recs = append(recs, r)
	}
	if _, err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	must(t, s.Close())
}

// TestAnchorsDeletedRestartRefuses: after the anchors are deleted and the
// log re-sealed, the restarted dispenser (on_missing_anchor: refuse, the
// default) signs and anchors nothing, is not ready on either listener and
// refuses /credentials; verify exits 4. An audited adoption records the
// operator's decision in the log and anchors it; the running replica picks
// it up and serves again, and verify reports the adoption.
func TestAnchorsDeletedRestartRefuses(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	issueSome(t, path, 3)
	resealSQLite(t, dir, 5)
	anchorFile := filepath.Join(dir, "audit.db.anchors")

	a, srv := startAuditApp(t, path)
	defer srv.Close()
	if st := a.server.ReadyState(); st != "audit_anchor_missing" {
		t.Fatalf("ReadyState with no anchor for a non-empty log = %q, want audit_anchor_missing", st)
	}
	admin := httptest.NewServer(adminHandler(a.metrics, a.server.ReadyState))
	defer admin.Close()
	for _, base := range []string{srv.URL, admin.URL} {
		code, body, _ := call(t, "GET", base+"/readyz", "")
		if code != 503 || !strings.Contains(string(body), `"audit_anchor_missing"`) {
			t.Fatalf("%s/readyz: %d %s", base, code, body)
		}
	}
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	code, body, hdr := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", tok)
	if code != 503 || hdr.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"code":"AuditUnavailable"`) ||
		!strings.Contains(string(body), "audit adopt") {
		t.Fatalf("/credentials with the anchor missing: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	if v := value(scrape(t, a), "dispenser_audit_anchor_missing", nil); v != 1 {
		t.Fatalf("dispenser_audit_anchor_missing = %v, want 1", v)
	}
	if _, err := os.Stat(anchorFile); err == nil {
		if ents, _ := os.ReadDir(anchorFile); len(ents) > 0 {
			t.Fatalf("the forged log was anchored: %v", ents)
		}
	}
	code, out, stderr := runCLI(t, "audit", "verify", "--config", path)
	if code != 4 || !strings.Contains(out, "ANCHOR MISSING") {
		t.Fatalf("verify with the anchor missing: exit %d\n%s%s\nwant exit 4", code, out, stderr)
	}

	// The operator investigates and adopts the log as it stands.
	if code, _, stderr := runCLI(t, "audit", "adopt", "--config", path); code != 2 || !strings.Contains(stderr, "--reason") {
		t.Fatalf("adopt without --reason: exit %d %s", code, stderr)
	}
	code, out, stderr = runCLI(t, "audit", "adopt", "--config", path, "--reason", "anchor volume lost in INC-42", "--operator", "alice")
	if code != 0 {
		t.Fatalf("adopt: exit %d\n%s%s", code, out, stderr)
	}
	deadline := time.Now().Add(20 * time.Second)
	for a.server.ReadyState() != "ready" {
		if time.Now().After(deadline) {
			t.Fatalf("the running replica did not pick up the adoption: %q", a.server.ReadyState())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", tok); code != 200 {
		t.Fatalf("/credentials after the adoption: %d %s", code, body)
	}
	if v := value(scrape(t, a), "dispenser_audit_anchor_missing", nil); v != 0 {
		t.Fatalf("dispenser_audit_anchor_missing after the adoption = %v, want 0", v)
	}
	srv.Close()
	a.close()
	code, out, stderr = runCLI(t, "audit", "verify", "--config", path)
	if code != 0 || !strings.Contains(out, "adopted") || !strings.Contains(out, "alice") || !strings.Contains(out, "INC-42") {
		t.Fatalf("verify after the adoption: exit %d\n%s%s\nwant 0 and the adoption reported", code, out, stderr)
	}
	// The adoption is a record in the log, found by a query.
	code, out, stderr = runCLI(t, "audit", "query", "--config", path, "--outcome", "adopted", "--format", "json")
	if code != 0 || !strings.Contains(out, `"principal": "alice"`) || !strings.Contains(out, `"adopted_size": 5`) {
		t.Fatalf("audit query --outcome adopted: exit %d\n%s%s", code, out, stderr)
	}
	// A second adoption is refused: the anchor exists now.
	if code, _, stderr := runCLI(t, "audit", "adopt", "--config", path, "--reason", "again"); code != 1 || !strings.Contains(stderr, "holds a checkpoint") {
		t.Fatalf("adopt with an anchor present: exit %d %s", code, stderr)
	}
}

// TestAnchorMissingServeMode: with on_missing_anchor: serve the replica
// vends, but anchors nothing until an adoption, and says so in its metric.
func TestAnchorMissingServeMode(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	issueSome(t, path, 2)
	resealSQLite(t, dir, 4)
	addToAudit(t, path, "  on_missing_anchor: serve\n")
	a, srv := startAuditApp(t, path)
	defer srv.Close()
	if st := a.server.ReadyState(); st != "ready" {
		t.Fatalf("ReadyState in serve mode = %q", st)
	}
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	if code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", tok); code != 200 {
		t.Fatalf("/credentials in serve mode: %d %s", code, body)
	}
	if v := value(scrape(t, a), "dispenser_audit_anchor_missing", nil); v != 1 {
		t.Fatalf("dispenser_audit_anchor_missing = %v, want 1", v)
	}
	srv.Close()
	a.close() // the final checkpoint must not anchor either
	if ents, _ := os.ReadDir(filepath.Join(dir, "audit.db.anchors")); len(ents) > 0 {
		t.Fatalf("serve mode anchored the unadopted log: %v", ents)
	}
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 4 {
		t.Fatalf("verify: exit %d\n%s%s; want 4", code, out, stderr)
	}
}

// TestCheckConfigWarnsAboutAnchorsBesideTheDatabase: the default SQLite
// layout keeps the anchors on the database's filesystem; check-config says
// so (and still exits 0), unless an HTTP witness is configured too.
func TestCheckConfigWarnsAboutAnchorsBesideTheDatabase(t *testing.T) {
	path := localConfig(t, t.TempDir())
	code, out, stderr := runCLI(t, "check-config", "--config", path)
	if code != 0 || !strings.Contains(out, "configuration is valid") || !strings.Contains(stderr, "warning: audit.anchor_dir") ||
		!strings.Contains(stderr, "same filesystem as audit.path") {
		t.Fatalf("check-config: exit %d\n%s%s", code, out, stderr)
	}
	addToAudit(t, path, "  anchor_url: https://witness.example/checkpoints\n")
	if code, _, stderr := runCLI(t, "check-config", "--config", path); code != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("check-config with a witness: exit %d %s", code, stderr)
	}
}

// TestGhostIndexRowIsCountedAndLogged: a query through the admin API that
// meets a ghost index row answers (without it) and the row is counted as
// an index failure.
func TestGhostIndexRowIsCountedAndLogged(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	a, srv := startAuditApp(t, path)
	defer srv.Close()
	tok := mintToken(t, path, "--subject", "worker-1", "--org", "acme")
	if code, body, _ := call(t, "GET", srv.URL+"/credentials?operation=get&location=s3://media/acme/in/", tok); code != 200 {
		t.Fatalf("credentials: %d %s", code, body)
	}
	raw, err := sql.Open("sqlite", "file:"+sqlite.IndexPath(filepath.Join(dir, "audit.db"))+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`INSERT INTO audit_index (id, log, seq, time_ns, outcome, org, principal, job_id, task_id, access_key_id, bucket)
		VALUES (1000000, 'main', 1000000, ?, 'issued', 'acme', 'worker-1', '', '', 'ASIAGHOST', 'media')`, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	code, body, _ := call(t, "GET", srv.URL+"/v1/audit?org=acme", devAdminToken)
	if code != 200 || strings.Contains(string(body), "ASIAGHOST") || !strings.Contains(string(body), `"outcome":"issued"`) {
		t.Fatalf("/v1/audit with a ghost row: %d %s", code, body)
	}
	if v := value(scrape(t, a), "dispenser_audit_failures_total", map[string]string{"kind": "index"}); v != 1 {
		t.Fatalf("index failures = %v, want 1", v)
	}
}

// TestAnchorMissingOnPostgres: verify against a schema with no trail fails
// (exit 3) and creates no table; a replica whose anchor was lost refuses
// to vend and verify exits 4; `audit adopt` borrows the running replica's
// log (it holds the advisory lock), and the replica serves again.
func TestAnchorMissingOnPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresSchema(t, "dispenser_anchor_")
	dir := t.TempDir()
	key := filepath.Join(dir, "checkpoint.key")
	if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
		t.Fatal(err)
	}
	path := opsTestConfig(t, dir, "audit:\n  type: postgres\n  dsn: "+dsn+"\n  log: replica-a\n  anchor_dir: "+dir+"/anchors\n"+
		"  checkpoint:\n    signing_key_file: "+key+"\n", "")
	t.Setenv("DISPENSER_TEST_ADMIN_TOKEN", adminToken)
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 3 || !strings.Contains(stderr, "does not exist") {
		t.Fatalf("verify of a schema with no trail: exit %d\n%s%s", code, out, stderr)
	}
	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	var tables int
	if err := raw.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("verify left %d tables (%v)", tables, err)
	}

	a, srv := startOpsApp(t, path)
	for i := 0; i < 3; i++ {
		if code, body := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/acme/in/", token(t, "worker-1", "acme"), ""); code != 200 {
			t.Fatalf("credentials: %d %s", code, body)
		}
	}
	srv.Close()
	a.close()
	if err := os.RemoveAll(filepath.Join(dir, "anchors")); err != nil {
		t.Fatal(err)
	}
	a, srv = startOpsApp(t, path)
	if st := a.server.ReadyState(); st != "audit_anchor_missing" {
		t.Fatalf("ReadyState = %q, want audit_anchor_missing", st)
	}
	if code, body := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/acme/in/", token(t, "worker-1", "acme"), ""); code != 503 {
		t.Fatalf("credentials with the anchor missing: %d %s", code, body)
	}
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 4 {
		t.Fatalf("verify: exit %d\n%s%s; want 4", code, out, stderr)
	}
	if code, out, stderr := runCLI(t, "audit", "adopt", "--config", path, "--reason", "anchor volume replaced", "--operator", "carol"); code != 0 {
		t.Fatalf("adopt while the replica runs: exit %d\n%s%s", code, out, stderr)
	}
	deadline := time.Now().Add(20 * time.Second)
	for a.server.ReadyState() != "ready" {
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not pick up the adoption: %q", a.server.ReadyState())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := opsCall(t, srv, "GET", "/credentials?operation=get&location=s3://media/acme/in/", token(t, "worker-1", "acme"), ""); code != 200 {
		t.Fatalf("credentials after the adoption: %d %s", code, body)
	}
	srv.Close()
	a.close()
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 || !strings.Contains(out, "by carol") {
		t.Fatalf("verify after the adoption: exit %d\n%s%s", code, out, stderr)
	}
}

// TestAuditVerifyHelpListsExitCodes: scripts act on verify's exit codes, so
// its --help lists every one.
func TestAuditVerifyHelpListsExitCodes(t *testing.T) {
	code, _, stderr := runCLI(t, "audit", "verify", "--help")
	if code != 0 {
		t.Fatalf("audit verify --help: exit %d", code)
	}
	for _, want := range []string{"0  verified", "1  tampering", "2  verified, but", "3  could not run", "4  anchor missing"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("audit verify --help does not list %q:\n%s", want, stderr)
		}
	}
}

// TestAuditVerifyIndexFileEdited: a trigger slipped into a stopped
// dispenser's index file (it could hide chosen records from queries) makes
// verify exit 1 naming it, without touching the file, and audit query
// refuse the index with what to do.
func TestAuditVerifyIndexFileEdited(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	issueSome(t, path, 2)
	idx := sqlite.IndexPath(filepath.Join(dir, "audit.db"))
	raw, err := sql.Open("sqlite", "file:"+idx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TRIGGER hide AFTER INSERT ON audit_index BEGIN DELETE FROM audit_index WHERE id = NEW.id; END`); err != nil {
		t.Fatal(err)
	}
	must(t, raw.Close())
	before, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "audit", "verify", "--config", path)
	if code != 1 || !strings.Contains(out, "the query index file holds trigger hide") {
		t.Fatalf("verify with a trigger in the index file: exit %d\n%s%s", code, out, stderr)
	}
	if after, err := os.ReadFile(idx); err != nil || string(after) != string(before) {
		t.Fatalf("verify changed the index file (%v)", err)
	}
	code, out, stderr = runCLI(t, "audit", "query", "--config", path)
	if code != 1 || !strings.Contains(stderr, "cannot be trusted") || !strings.Contains(stderr, "remove it") {
		t.Fatalf("query with a trigger in the index file: exit %d\n%s%s", code, out, stderr)
	}
}

// TestAnchorMissingHintAdoptsEachLog: with the anchors gone, audit verify
// prints, for every log, the adopt command that vouches for it; run as
// printed, each one adopts its log (the revoke CLI's log is not the
// configuration's default, so the hint must name it), and verify passes.
func TestAnchorMissingHintAdoptsEachLog(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	issueSome(t, path, 2)
	if code, out, stderr := runCLI(t, "revoke", "add", "--config", path, "--kind", "job", "--value", "J1", "--reason", "test"); code != 0 {
		t.Fatalf("revoke add: exit %d %s %s", code, out, stderr)
	}
	if err := os.RemoveAll(filepath.Join(dir, "audit.db.anchors")); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "audit", "verify", "--config", path)
	if code != 4 {
		t.Fatalf("verify without anchors: exit %d, want 4\n%s%s", code, out, stderr)
	}
	const lead = "to vouch for the log as it stands: dispenser "
	var hints []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, lead); i >= 0 {
			hints = append(hints, strings.ReplaceAll(l[i+len(lead):], `"..."`, "INC-7"))
		}
	}
	if len(hints) != 2 {
		t.Fatalf("want one adopt hint for each of the 2 logs (main, revoke-cli):\n%s", out)
	}
	for _, h := range hints {
		if code, out, stderr := runCLI(t, strings.Fields(h)...); code != 0 {
			t.Errorf("the hint %q, run as printed: exit %d\n%s%s", h, code, out, stderr)
		}
	}
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 {
		t.Fatalf("verify after following the hints: exit %d\n%s%s", code, out, stderr)
	}
}
