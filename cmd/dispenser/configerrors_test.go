package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfigReportsEveryProblemWithItsLine: check-config lists a typo
// (with the key meant), a bad duration, a typo in a backend's own options
// and a semantic problem together, each with its YAML path and line, and
// none of them in Go's terms.
func TestCheckConfigReportsEveryProblemWithItsLine(t *testing.T) {
	good, err := os.ReadFile(testConfig(t, false))
	must(t, err)
	s := strings.Replace(string(good), "  listen: 127.0.0.1:0\n", "  listn: 127.0.0.1:0\n  read_timeout: ten seconds\n", 1)
	s = strings.Replace(s, "    account_id: \"111122223333\"\n", "    acount_id: \"111122223333\"\n", 1)
	s = strings.Replace(s, "    max_duration: 1h\n", "    max_duration: 1m\n", 1)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	must(t, os.WriteFile(bad, []byte(s), 0o600))
	line := func(prefix string) int {
		for i, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line starts with %q", prefix)
		return 0
	}
	code, _, errs := runCmd("check-config", "--config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errs)
	}
	for _, want := range []string{
		lineOf(line("  listn:"), `server.listn: unknown key; did you mean "listen"?`),
		lineOf(line("  read_timeout:"), `server.read_timeout: invalid duration "ten seconds"`),
		lineOf(line("    acount_id:"), `backends.default.acount_id: unknown key; did you mean "account_id"?`),
		lineOf(line("    max_duration:"), "tenants[0].max_duration:"),
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, goish := range []string{"not found in type", "config.", "!!str", "unmarshal"} {
		if strings.Contains(errs, goish) {
			t.Errorf("the message speaks Go: %q", goish)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", errs)
	}
}

func lineOf(n int, rest string) string { return fmt.Sprintf("line %d: %s", n, rest) }

// TestOverriddenValueHasNoLine: a problem with a value --admin-listen set
// does not point at the line of the file's value it replaced.
func TestOverriddenValueHasNoLine(t *testing.T) {
	_, err := loadConfigWithListen(testConfig(t, false), "", "not-an-address")
	if err == nil || !strings.Contains(err.Error(), "\n  server.admin_listen: must be host:port") {
		t.Fatalf("got %v", err)
	}
}
