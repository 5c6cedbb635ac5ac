package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveProcess is the dispenser binary serving a test configuration.
type serveProcess struct {
	cmd            *exec.Cmd
	cfgPath        string
	addr, admin    string
	stderr, stdout *lockedBuffer
	token          string
}

// startServe runs the binary over examples/local.yaml (JSON logs at info,
// edit applied to the text) and waits until it is ready. wrap, when set,
// is the command line the binary runs under (prlimit ...).
func startServe(t *testing.T, edit func(string) string, wrap ...string) *serveProcess {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgPath := localConfig(t, dir)
	b, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(b), "level: error", "level: info", 1)
	s = strings.Replace(s, "format: console", "format: json", 1)
	if edit != nil {
		s = edit(s)
	}
	writeFile(t, cfgPath, s)
	p := &serveProcess{cfgPath: cfgPath, addr: freePort(t), admin: freePort(t), stderr: &lockedBuffer{}, stdout: &lockedBuffer{}}
	args := append(append([]string{}, wrap...), bin, "serve", "--config", cfgPath, "--listen", p.addr, "--admin-listen", p.admin)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := exec.Command(bin, "token", "--config", cfgPath, "--subject", "w1", "--org", "acme").Output()
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(tok))
	return p
}

// credentials asks for a download grant with c and returns the status.
func (p *serveProcess) credentials(t *testing.T, c *http.Client, job string) (int, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/credentials?operation=get&location=s3://media/acme/in/&job_id="+job, nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestRedisLogsAreJSON: go-redis writes its own lines ("redis: connection
// pool: failed to dial ...") to stderr through the standard library
// logger, in the middle of the JSON log. Routed through zap, every line on
// stderr is one JSON object, the Redis one included.
func TestRedisLogsAreJSON(t *testing.T) {
	closed := freePort(t) // nothing listens here
	p := startServe(t, func(s string) string {
		return strings.Replace(s, "  per_principal: {rate: 10, burst: 50}\n",
			"  per_principal: {rate: 10, burst: 50}\n  redis: {addr: \""+closed+"\", timeout: 200ms, retry_after: 100ms}\n", 1)
	})
	for i := 0; i < 3; i++ {
		if code, err := p.credentials(t, http.DefaultClient, "J1"); err != nil || code != 200 {
			t.Fatalf("request with Redis down: %d %v (the local limiter decides)", code, err)
		}
		time.Sleep(150 * time.Millisecond) // past retry_after: Redis is tried again
	}
	var sawRedis bool
	deadline := time.Now().Add(5 * time.Second)
	for !sawRedis && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		sawRedis = strings.Contains(p.stderr.String(), "failed to dial")
	}
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("a log line is not JSON: %q", line)
		}
	}
	if !sawRedis {
		t.Fatalf("go-redis's dial failure was not logged at all; stderr:\n%s", p.stderr.String())
	}
}
