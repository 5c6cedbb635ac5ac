package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
)

// TestCrashChildProcess is the child of TestCrashKeepsEveryIssuedRecord:
// it only serves, and only when that test starts it.
func TestCrashChildProcess(t *testing.T) {
	path := os.Getenv("DISPENSER_CRASH_CHILD_CONFIG")
	if path == "" {
		t.Skip("child process of TestCrashKeepsEveryIssuedRecord")
	}
	os.Exit(run([]string{"serve", "--config", path}, os.Stdout, os.Stderr))
}

// TestCrashKeepsEveryIssuedRecord kills a dispenser under load with
// SIGKILL, restarts it, and checks that every credential a client received
// has its record and that the trail verifies.
func TestCrashKeepsEveryIssuedRecord(t *testing.T) {
	dir := t.TempDir()
	path := localConfig(t, dir)
	b, _ := os.ReadFile(path)
	s := strings.Replace(string(b), "listen: 127.0.0.1:8080", "listen: 127.0.0.1:0", 1)
	s = strings.Replace(s, "admin_listen: 127.0.0.1:9090", "admin_listen: 127.0.0.1:0", 1)
	// Load, not throttling: at the example's 10/s per principal the 300
	// credentials took 25 s, most requests being 429s.
	unlimited := strings.Replace(s, "per_principal: {rate: 10, burst: 50}", "per_principal: {rate: 1000000000, burst: 1000000000}", 1)
	if unlimited == s {
		t.Fatal("examples/local.yaml rate limit not found")
	}
	if err := os.WriteFile(path, []byte(unlimited), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildProcess$")
	cmd.Env = append(os.Environ(), "DISPENSER_CRASH_CHILD_CONFIG="+path)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	base := ""
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "dispenser listening on "); ok {
			base = addr
			break
		}
	}
	if base == "" {
		t.Fatal("child did not report its address")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 200 {
			t.Fatal("child never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, tok, errs := runCLI(t, "token", "--config", path, "--subject", "worker-1", "--org", "acme", "--task-id", "crash")
	if code != 0 {
		t.Fatalf("token: exit %d: %s", code, errs)
	}
	tok = strings.TrimSpace(tok)

	var mu sync.Mutex
	var received []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopWorkers := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWorkers() // on a failure too: no load goroutine outlives the test
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", base+"/credentials?operation=put&location=s3://media/acme/out/&task_id=crash", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					continue // the server is gone
				}
				var c struct{ AccessKeyId string }
				err = json.NewDecoder(resp.Body).Decode(&c)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 && c.AccessKeyId != "" {
					mu.Lock()
					received = append(received, c.AccessKeyId)
					mu.Unlock()
				}
			}
		}()
	}
	// Load for at least 1.5s, so the kill lands between checkpoints of a
	// running cadence rather than before the first one.
	loaded := time.Now().Add(1500 * time.Millisecond)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= 300 && time.Now().After(loaded) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d credentials issued under load in 2m", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, mid-load
		t.Fatal(err)
	}
	_ = cmd.Wait()
	stopWorkers()

	// The unanchored tail the crash left (what a rewrite before the restart
	// could change undetected): verify reports it (exit 2, or 0 if the
	// last checkpoint caught everything), and so does the restart.
	code, out, stderr := runCLI(t, "audit", "verify", "--config", path, "--format", "json")
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || (code != 0 && code != 2) || len(rep.Logs) == 0 {
		t.Fatalf("audit verify after the crash, before the restart: exit %d\n%s%s", code, out, stderr)
	}
	tail := rep.Logs[0].Unanchored
	span := tailSpan(t, path, rep.Logs[0])

	// Restart on the same files: every credential handed out is on record.
	a, srv := startAuditApp(t, path)
	srv.Close()
	if v := value(scrape(t, a), "dispenser_audit_start_unanchored_entries", nil); v != float64(tail) {
		t.Fatalf("the restart reports an unanchored tail of %v, verify found %d", v, tail)
	}
	ctx := context.Background()
	for _, k := range received {
		p, err := a.trail.Query(ctx, audit.Filter{AccessKeyID: k})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Records) != 1 || p.Records[0].Outcome != audit.Issued {
			t.Fatalf("credential %s was received but has %d records", k, len(p.Records))
		}
	}
	a.close()
	if code, out, stderr := runCLI(t, "audit", "verify", "--config", path); code != 0 {
		t.Fatalf("audit verify after the crash: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("%d credentials received before SIGKILL, all on record; trail verifies; unanchored tail after the kill: %d records spanning %s",
		len(received), tail, span)
}

// tailSpan is how long the records of the unanchored tail were waiting for
// a checkpoint when the process died: from the newest anchored record to
// the newest record.
func tailSpan(t *testing.T, path string, l audit.LogReport) time.Duration {
	t.Helper()
	if l.Unanchored == 0 || l.Anchored == 0 {
		return 0
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	trail, err := openTrail(context.Background(), cfg, trailVerify, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	at := func(seq int64) time.Time {
		b, err := trail.Body(context.Background(), l.Log, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return e.Record.Time
	}
	return at(l.Size - 1).Sub(at(l.Anchored - 1))
}
