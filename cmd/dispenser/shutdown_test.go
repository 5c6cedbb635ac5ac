package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
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
)

// built is the binary buildBinary compiled, shared by the tests that run
// it (each link took seconds); TestMain removes its directory.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
	out      []byte
}

// buildBinary compiles the dispenser once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "dispenser-test-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "dispenser")
		built.out, built.err = exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestGracefulShutdown starts the real binary, holds a POST in flight by
// trickling its body, sends SIGTERM, and checks the request still completes
// and the process exits 0 without accepting new connections.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	root, _ := filepath.Abs("../..")
	cfg, err := os.ReadFile(filepath.Join(root, "examples/local.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	copyDevKeys(t, dir)
	s := string(cfg)
	s = strings.ReplaceAll(s, "path: dispenser-audit.db", "path: "+filepath.Join(dir, "audit.db"))
	cfgPath := filepath.Join(dir, "local.yaml")
	if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--listen", addr, "--admin-listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitReady(t, "http://"+addr+"/readyz")

	tok, err := exec.Command(bin, "token", "--config", cfgPath, "--subject", "w1", "--org", "acme").Output()
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	// A raw connection lets the test control when the body arrives.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"operation":"get","location":"s3://media/acme/in/","job_id":"J1","task_id":"T1"}`
	fmt.Fprintf(conn, "POST /credentials HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, token, len(body))
	io.WriteString(conn, body[:10])
	time.Sleep(200 * time.Millisecond) // the server is now reading this request's body

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Wait until the listener is closed: new connections are refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	io.WriteString(conn, body[10:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request was dropped: %v\n%s", err, stderr.String())
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"AccessKeyId":"ASIA`) {
		t.Fatalf("in-flight request: %d %s", resp.StatusCode, b)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "shutdown complete") {
		t.Errorf("no shutdown log line:\n%s", stderr.String())
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", url)
}

// TestShutdownExitsNonZeroWhenTheLastCheckpointFails: SIGTERM ends with a
// last checkpoint anchoring the records served; when it cannot be
// anchored (the anchor directory replaced by a file), the drain itself
// went well but the log's tail is unanchored, and the exit code says so
// (a supervisor or an operator sees a failed stop, not a clean one).
func TestShutdownExitsNonZeroWhenTheLastCheckpointFails(t *testing.T) {
	p := startServe(t, nil)
	anchors := filepath.Join(filepath.Dir(p.cfgPath), "audit.db.anchors")
	if err := os.Rename(anchors, anchors+".moved"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, anchors, "not a directory")
	if code, err := p.credentials(t, http.DefaultClient, "J1"); err != nil || code != 200 {
		t.Fatalf("credentials: %d %v", code, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := p.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit after SIGTERM with the last checkpoint unanchored: %v, want exit code 1\nstderr:\n%s", err, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "final audit checkpoint failed") {
		t.Fatalf("no log of the failed checkpoint:\n%s", p.stderr.String())
	}
}

// waitExit waits for p to exit, failing the test if it has not within a
// minute (far less than the delays and timeouts the tests configure, so
// only a process that ignored its signal reaches it).
func waitExit(t *testing.T, p *serveProcess) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-done
		t.Fatalf("still running a minute after the signals:\n%s", p.stderr.String())
		return -1
	}
}

// readyz returns the admin listener's /readyz status code and body.
func (p *serveProcess) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestShutdownDelayDrainsBeforeTheListenerCloses: on SIGTERM, /readyz
// answers 503 at once while the API listener goes on accepting and
// serving for server.shutdown_delay, so a load balancer takes the replica
// out before its connections are refused. A second signal cuts the delay
// short.
func TestShutdownDelayDrainsBeforeTheListenerCloses(t *testing.T) {
	p := startServe(t, func(s string) string {
		return strings.Replace(s, "server:\n", "server:\n  shutdown_delay: 10m\n", 1)
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := p.readyz(t)
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"stopping"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after SIGTERM: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if code, err := p.credentials(t, fresh, "J1"); err != nil || code != 200 {
		t.Fatalf("a new connection during the shutdown delay: %d %v\n%s", code, err, p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d after a second signal cut the delay short\n%s", code, p.stderr.String())
	}
	if logs := p.stderr.String(); !strings.Contains(logs, "second signal") || !strings.Contains(logs, "shutdown complete") {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestSecondSignalCutsTheDrainShort: a second SIGTERM while a request is
// still in flight closes its connection instead of waiting up to
// server.shutdown_timeout; the app still closes (last records, last
// checkpoint) and the exit code says requests were cut off.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	p := startServe(t, func(s string) string {
		return strings.Replace(s, "server:\n", "server:\n  shutdown_timeout: 10m\n", 1)
	})
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// With Expect: 100-continue the server answers "100 Continue" once the
	// handler reads the body: the request is then in flight. Its body
	// never comes.
	fmt.Fprintf(conn, "POST /credentials HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 80\r\nExpect: 100-continue\r\n\r\n", p.addr, p.token)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("no 100 Continue: %q %v", line, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for code, _ := p.readyz(t); code == http.StatusOK; code, _ = p.readyz(t) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != 1 {
		t.Fatalf("exit %d after a second signal cut an in-flight request off, want 1\n%s", code, p.stderr.String())
	}
	if logs := p.stderr.String(); !strings.Contains(logs, "second signal") {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestShutdownUsesTheSettingsItStartedWith: the server section is
// restart-only (a reload logs so), so a reload that raises
// server.shutdown_delay must not hold the next SIGTERM for it.
func TestShutdownUsesTheSettingsItStartedWith(t *testing.T) {
	p := startServe(t, nil)
	b, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.cfgPath, strings.Replace(string(b), "server:\n", "server:\n  shutdown_delay: 10m\n", 1))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stderr.String(), "only changes on restart") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() { exited <- waitExit(t, p) }()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // the second signal ends the delay
		<-exited
		t.Fatalf("SIGTERM waited for the reloaded shutdown_delay, which only applies after a restart\n%s", p.stderr.String())
	}
}
