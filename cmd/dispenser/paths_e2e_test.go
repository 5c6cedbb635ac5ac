package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vtk/dispenser/internal/auth/authtest"
)

// devKeys are the development key files examples/local.yaml names,
// relative to its directory.
var devKeys = []string{"dev-jwt-verify.DEV-ONLY.pub.pem", "dev-jwt-signing.DEV-ONLY.pem"}

// copyDevKeys copies the development key pair into dir, beside a copy of
// examples/local.yaml written there.
func copyDevKeys(t *testing.T, dir string) {
	t.Helper()
	for _, name := range devKeys {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
}

// TestContainerLayoutFromAnotherDirectory mounts, as a container would,
// only the configuration and its keys in one directory, and runs the real
// binary from another working directory: serve starts and vends, token
// mints with the signing key beside the configuration, keys create writes
// the key store there, and a SIGHUP reload re-reads the same files. The
// working directory stays empty.
func TestContainerLayoutFromAnotherDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	mount := t.TempDir()
	copyDevKeys(t, mount)
	b, err := os.ReadFile("../../examples/local.yaml")
	must(t, err)
	// Tests never take the fixed admin port.
	cfgText := strings.Replace(string(b), "admin_listen: 127.0.0.1:9090", "admin_listen: 127.0.0.1:0", 1)
	cfg := filepath.Join(mount, "dispenser.yaml")
	must(t, os.WriteFile(cfg, []byte(cfgText), 0o600))
	work := t.TempDir()

	runIn := func(args ...string) (string, string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = work
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	if out, errs, err := runIn("check-config", "--config", cfg); err != nil {
		t.Fatalf("check-config: %v\n%s%s", err, out, errs)
	}
	if _, errs, err := runIn("keys", "create", "--config", cfg, "--name", "w1", "--org", "acme"); err != nil {
		t.Fatalf("keys create: %v\n%s", err, errs)
	}
	if _, err := os.Stat(filepath.Join(mount, "dispenser-keys.json")); err != nil {
		t.Fatalf("the key store is not beside the configuration: %v", err)
	}

	addr := freePort(t)
	logs := &lockedBuffer{}
	admin := freePort(t)
	srv := exec.Command(bin, "serve", "--config", cfg, "--listen", addr, "--admin-listen", admin)
	srv.Dir = work
	srv.Stdout, srv.Stderr = io.Discard, logs
	must(t, srv.Start())
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	})
	waitReady(t, "http://"+admin+"/readyz")
	tok, errs, err := runIn("token", "--config", cfg, "--subject", "w1", "--org", "acme")
	if err != nil {
		t.Fatalf("token: %v\n%s", err, errs)
	}
	get := func() int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/credentials?operation=get&location=s3://media/acme/in/", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("credentials: %d\n%s", code, logs.String())
	}
	// The startup line names the pid SIGHUP must reach.
	if !strings.Contains(logs.String(), fmt.Sprintf(`"pid": %d`, srv.Process.Pid)) {
		t.Errorf("the startup log does not name the pid %d:\n%s", srv.Process.Pid, logs.String())
	}
	// A reload resolves against the configuration's directory again.
	must(t, srv.Process.Signal(syscall.SIGHUP))
	waitFor(t, "the reload", func() bool { return strings.Contains(logs.String(), "configuration reloaded") }, logs)
	if strings.Contains(logs.String(), "reload rejected") {
		t.Fatalf("reload rejected:\n%s", logs.String())
	}
	if code := get(); code != 200 {
		t.Fatalf("credentials after reload: %d", code)
	}
	// The database, and the checkpoint key and anchors derived from its
	// path (the first checkpoint follows the first records within 1s).
	for _, name := range []string{"dispenser-audit.db", "dispenser-audit.db.checkpoint-key", "dispenser-audit.db.anchors"} {
		waitFor(t, name+" beside the configuration", func() bool {
			_, err := os.Stat(filepath.Join(mount, name))
			return err == nil
		}, logs)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("files written to the working directory: %v", left)
	}
}

// TestExampleCommandsFromAnyDirectory: the README's example configuration,
// named by absolute path from another directory, passes check-config and
// mints a development token (key files resolve against examples/).
func TestExampleCommandsFromAnyDirectory(t *testing.T) {
	cfg, err := filepath.Abs("../../examples/local.yaml")
	must(t, err)
	t.Chdir(t.TempDir())
	if code, out, errs := runCmd("check-config", "--config", cfg); code != 0 {
		t.Fatalf("check-config: %d %s %s", code, out, errs)
	}
	if code, out, errs := runCmd("token", "--config", cfg, "--subject", "w1", "--org", "acme"); code != 0 || strings.Count(out, ".") != 2 {
		t.Fatalf("token: %d %q %s", code, out, errs)
	}
}

// TestWatchWithRelativeConfigBesideItsCertificate: started as
// `serve --config dispenser.yaml` from the configuration's directory, with
// the certificate beside it and watch_config on, an edit of the
// configuration is reloaded. The directory is watched under one name
// (the configuration path is made absolute like the certificate's), so
// its events are recognised.
func TestWatchWithRelativeConfigBesideItsCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cfgPath := localConfig(t, dir)
	ca := authtest.NewCA(t, "watch-test")
	_, certPEM, keyPEM := ca.Issue(t, authtest.Leaf{CN: "localhost", DNS: []string{"localhost"}, Server: true})
	authtest.WriteFile(t, dir, "cert.pem", certPEM)
	authtest.WriteFile(t, dir, "key.pem", keyPEM)
	b, err := os.ReadFile(cfgPath)
	must(t, err)
	s := strings.Replace(string(b), "  min_remaining: 20m\n", "  min_remaining: 20m\n  watch_config: true\n  tls: {cert_file: cert.pem, key_file: key.pem}\n", 1)
	s = strings.Replace(s, "level: error", "level: info", 1)
	must(t, os.WriteFile(cfgPath, []byte(s), 0o600))
	addr, admin := freePort(t), freePort(t)
	logs := &lockedBuffer{}
	cmd := exec.Command(bin, "serve", "--config", filepath.Base(cfgPath), "--listen", addr, "--admin-listen", admin)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	waitReady(t, "http://"+admin+"/readyz")
	replaceFile(t, cfgPath, strings.Replace(s, "        operations: [get, put, check, tag]\n", archiveGrant, 1))
	waitFor(t, "the watched reload", func() bool { return strings.Contains(logs.String(), "configuration reloaded") }, logs)
}
