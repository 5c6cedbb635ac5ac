package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
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

// holdIdle opens n keep-alive connections to addr from 127.<block>.x.y
// (ten per source address), sends one request on each so it becomes an
// idle keep-alive connection, and returns them still open. It takes about
// two seconds whatever the server does.
func holdIdle(t *testing.T, addr string, n, block int) []net.Conn {
	t.Helper()
	var out []net.Conn
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(loopback(block, i/10))}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			continue
		}
		out = append(out, c)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	}
	// Read the answers together: a connection the server never accepted
	// (or closed at once) gives up at the shared deadline or at once.
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for _, c := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(deadline)
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			_ = c.SetReadDeadline(time.Time{})
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range out {
			c.Close()
		}
	})
	return out
}

// metricValue reads one sample (name{labels} value) from /metrics text.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestIdleConnectionsCannotExhaustDescriptors runs the binary with a
// hard descriptor limit of 512 and holds more idle keep-alive connections
// than it can have open (600 on the API listener from 60 addresses, 100
// on the admin listener). Without connection caps the process ran out of
// descriptors: accepts failed, /healthz and /credentials timed out and
// checkpoint anchoring failed with "too many open files". With them, both
// listeners' /healthz and a real /credentials request still answer.
func TestIdleConnectionsCannotExhaustDescriptors(t *testing.T) {
	p := startServe(t, nil, "sh", "-c", `ulimit -n 512 && exec "$0" "$@"`)
	holdIdle(t, p.addr, 600, 5)
	holdIdle(t, p.admin, 100, 6)
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, u := range []string{"http://" + p.addr + "/healthz", "http://" + p.admin + "/healthz", "http://" + p.admin + "/readyz"} {
		resp, err := fresh.Get(u)
		if err != nil {
			t.Fatalf("%s while the idle connections are held: %v\nstderr:\n%s", u, err, p.stderr.String())
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	if code, err := p.credentials(t, fresh, "J1"); err != nil || code != 200 {
		t.Fatalf("/credentials while the idle connections are held: %d %v\nstderr:\n%s", code, err, p.stderr.String())
	}
	resp, err := fresh.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	limit := metricValue(t, text, `dispenser_connections_limit{listener="api"}`)
	open := metricValue(t, text, `dispenser_connections_open{listener="api"}`)
	if limit != 512-256-64 || open > limit {
		t.Fatalf("api listener: %v open, cap %v; want the cap derived from 512 descriptors (192) and no more open", open, limit)
	}
	shed := metricValue(t, text, `dispenser_connections_idle_closed_total{listener="api"}`) +
		metricValue(t, text, `dispenser_connections_refused_total{listener="api",reason="max_connections"}`)
	if shed < 600-limit {
		t.Fatalf("%v connections shed on the api listener, want at least %v", shed, 600-limit)
	}
	if metricValue(t, text, `dispenser_connections_idle_closed_total{listener="admin"}`)+
		metricValue(t, text, `dispenser_connections_refused_total{listener="admin",reason="max_connections"}`) < 100-64 {
		t.Fatalf("admin listener shed too few connections:\n%s", text)
	}
	// Checkpoints go on being signed and anchored (they failed with
	// "unable to open database file" once descriptors ran out).
	time.Sleep(1500 * time.Millisecond) // more than one checkpoint interval
	if logs := p.stderr.String(); strings.Contains(logs, "too many open files") || strings.Contains(logs, "checkpoint failed") {
		t.Fatalf("the process ran out of descriptors:\n%s", logs)
	}
}
