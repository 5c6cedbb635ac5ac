package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
)

// lockedBuffer is a bytes.Buffer the child process writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// archiveGrant is the grant the tests add to tenant acme by editing the file.
const archiveGrant = `        operations: [get, put, check, tag]
      - bucket: archive
        prefixes: ["acme/"]
        operations: [get]
`

// reloadProcess is a running dispenser binary over a config file it may
// reload.
type reloadProcess struct {
	cmd            *exec.Cmd
	cfgPath        string
	base, adminURL string
	stderr         *lockedBuffer
	token          string
}

// startReloadProcess builds and starts the binary over examples/local.yaml
// (plus edit applied to its text), in dir so relative files land there.
func startReloadProcess(t *testing.T, edit func(string) string) *reloadProcess {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgPath := localConfig(t, dir)
	b, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(b), "level: error", "level: info", 1)
	if edit != nil {
		s = edit(s)
	}
	writeFile(t, cfgPath, s)
	addr, admin := freePort(t), freePort(t)
	p := &reloadProcess{cfgPath: cfgPath, base: "http://" + addr, adminURL: "http://" + admin, stderr: &lockedBuffer{}}
	p.cmd = exec.Command(bin, "serve", "--config", cfgPath, "--listen", addr, "--admin-listen", admin)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = &lockedBuffer{}, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.cmd.Wait()
	})
	waitReady(t, p.adminURL+"/readyz")
	tok, err := exec.Command(bin, "token", "--config", cfgPath, "--subject", "w1", "--org", "acme").Output()
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(tok))
	return p
}

// status asks for credentials at location and returns the HTTP status.
func (p *reloadProcess) status(t *testing.T, location string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", p.base+"/credentials?operation=get&location="+location, nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond for up to 10 s (reloads are asynchronous to the test).
func waitFor(t *testing.T, what string, cond func() bool, logs *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; log:\n%s", what, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reloadCount reads dispenser_config_reloads_total{result} from /metrics.
func (p *reloadProcess) reloadCount(t *testing.T, result string) string {
	t.Helper()
	resp, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	prefix := fmt.Sprintf(`dispenser_config_reloads_total{result=%q} `, result)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0"
}

// replaceFile swaps the file like an editor or a ConfigMap update does:
// write a new file and rename it over the old one.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadOnSIGHUP edits the configuration of the running binary and
// sends SIGHUP: the new grant is served. A bad file and SIGHUP: the
// rejection is logged and counted, and the previous configuration (new
// grant included) keeps serving.
func TestReloadOnSIGHUP(t *testing.T) {
	p := startReloadProcess(t, nil)
	const newLoc, oldLoc = "s3://archive/acme/x/", "s3://media/acme/in/"
	if c := p.status(t, oldLoc); c != 200 {
		t.Fatalf("granted location before reload: %d", c)
	}
	if c := p.status(t, newLoc); c != 403 {
		t.Fatalf("ungranted location before reload: %d, want 403", c)
	}

	b, _ := os.ReadFile(p.cfgPath)
	good := strings.Replace(string(b), "        operations: [get, put, check, tag]\n", archiveGrant, 1)
	if good == string(b) {
		t.Fatal("grant not added")
	}
	replaceFile(t, p.cfgPath, good)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", func() bool { return p.reloadCount(t, "ok") == "1" }, p.stderr)
	if c := p.status(t, newLoc); c != 200 {
		t.Fatalf("new grant after SIGHUP: %d, want 200\n%s", c, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "configuration reloaded") {
		t.Errorf("no reload log line:\n%s", p.stderr.String())
	}

	// A bad file: the role ARN is invalid and the archive grant is gone.
	bad := strings.Replace(string(b), "role_arn: arn:aws:iam::111122223333:role/vtk-dispenser-target", "role_arn: not-an-arn", 1)
	replaceFile(t, p.cfgPath, bad)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rejection", func() bool { return p.reloadCount(t, "rejected") == "1" }, p.stderr)
	logs := p.stderr.String()
	if !strings.Contains(logs, "configuration reload rejected; keeping the running configuration") || !strings.Contains(logs, "role_arn") {
		t.Errorf("the rejection and its reason are not logged:\n%s", logs)
	}
	if c := p.status(t, newLoc); c != 200 {
		t.Fatalf("the running configuration stopped serving after a bad reload: %d", c)
	}
	if c := p.status(t, oldLoc); c != 200 {
		t.Fatalf("the original grant after a bad reload: %d", c)
	}
}

// TestReloadOnFileWatch: with server.watch_config the binary picks up an
// edit without a signal.
func TestReloadOnFileWatch(t *testing.T) {
	p := startReloadProcess(t, func(s string) string {
		return strings.Replace(s, "  min_remaining: 20m\n", "  min_remaining: 20m\n  watch_config: true\n", 1)
	})
	const newLoc = "s3://archive/acme/x/"
	if c := p.status(t, newLoc); c != 403 {
		t.Fatalf("ungranted location before the edit: %d, want 403", c)
	}
	b, _ := os.ReadFile(p.cfgPath)
	replaceFile(t, p.cfgPath, strings.Replace(string(b), "        operations: [get, put, check, tag]\n", archiveGrant, 1))
	waitFor(t, "the watched reload", func() bool { return p.status(t, newLoc) == 200 }, p.stderr)
	if got := p.reloadCount(t, "ok"); got != "1" {
		t.Errorf("reloads ok = %s, want 1 (one edit, debounced)", got)
	}
}

// TestSIGHUPDuringStartupDoesNotKill: a reload signal that arrives while
// the dispenser is still starting (here: connecting to a database that
// does not answer) must not terminate it (SIGHUP's default action), as a
// `systemctl reload` or a config reloader sidecar may send it at any time.
func TestSIGHUPDuringStartupDoesNotKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	// A "database" that accepts connections and never answers keeps the
	// dispenser in its startup for up to 30 seconds.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connected := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connected <- c
		}
	}()
	dir := t.TempDir()
	key := filepath.Join(dir, "checkpoint.key")
	if _, err := audit.GenerateKey(key, "dispenser-audit"); err != nil {
		t.Fatal(err)
	}
	cfgPath := localConfig(t, dir)
	b, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(b), "  type: sqlite\n  path: "+filepath.Join(dir, "audit.db")+"\n",
		"  type: postgres\n  dsn: postgres://dispenser@"+ln.Addr().String()+"/dispenser?sslmode=disable\n  anchor_dir: "+filepath.Join(dir, "anchors")+"\n  checkpoint:\n    signing_key_file: "+key+"\n", 1)
	if s == string(b) {
		t.Fatal("audit section not replaced")
	}
	writeFile(t, cfgPath, s)
	var stderr lockedBuffer
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--listen", freePort(t), "--admin-listen", "127.0.0.1:0")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &lockedBuffer{}, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	select {
	case c := <-connected:
		defer c.Close()
	case <-exited:
		t.Fatalf("exited before connecting to the database: %v\n%s", waitErr, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("never connected to the database\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("SIGHUP during startup terminated the dispenser: %v\n%s", waitErr, stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
}
