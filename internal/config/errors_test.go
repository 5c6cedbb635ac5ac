package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/validate"
)

// problemsOf parses y and returns its problems by path, failing unless the
// error is a validation error listing them.
func problemsOf(t *testing.T, y string) map[string]validate.Problem {
	t.Helper()
	_, err := Parse([]byte(y))
	var ve *validate.Error
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a list of problems", err)
	}
	out := map[string]validate.Problem{}
	for _, p := range ve.Problems {
		out[p.Path] = p
	}
	return out
}

// TestConfigErrorsNameThePathTheLineAndASuggestion: a typo is reported at
// its YAML path and line with the key it probably meant, in the words of
// the file rather than Go's.
func TestConfigErrorsNameThePathTheLineAndASuggestion(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	y := "server:\n  listn: 127.0.0.1:8080\n" + minimal
	ps := problemsOf(t, y)
	p, ok := ps["server.listn"]
	if !ok {
		t.Fatalf("no problem at server.listn: %v", ps)
	}
	if p.Line != 2 || !strings.Contains(p.Message, `did you mean "listen"?`) {
		t.Fatalf("got %+v, want line 2 and a suggestion of listen", p)
	}
	_, err := Parse([]byte(y))
	if msg := err.Error(); !strings.Contains(msg, `line 2: server.listn: unknown key`) || strings.Contains(msg, "config.ServerConfig") {
		t.Fatalf("message %q", msg)
	}
}

// TestConfigErrorsAreAllReported: a typo, a bad duration, a value of the
// wrong type and a semantic problem are all reported at once, each with
// its line.
func TestConfigErrorsAreAllReported(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	y := `server:
  listn: 127.0.0.1:8080
  read_timeout: 5 seconds
  max_body_bytes: lots
log:
  level: loud
` + minimal
	ps := problemsOf(t, y)
	for path, line := range map[string]int{"server.listn": 2, "server.read_timeout": 3, "server.max_body_bytes": 4, "log.level": 6} {
		p, ok := ps[path]
		if !ok {
			t.Errorf("no problem at %s: %v", path, ps)
			continue
		}
		if p.Line != line {
			t.Errorf("%s: line %d, want %d", path, p.Line, line)
		}
	}
	if m := ps["server.read_timeout"].Message; !strings.Contains(m, `"5 seconds"`) {
		t.Errorf("duration message %q", m)
	}
	if m := ps["server.max_body_bytes"].Message; !strings.Contains(m, "whole number") || strings.Contains(m, "int64") {
		t.Errorf("integer message %q", m)
	}
}

// TestConfigErrorsInDeeperSections: keys in lists, maps and backend
// options are reported with their full path.
func TestConfigErrorsInDeeperSections(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	y := strings.Replace(minimal, "        operations: [get]\n", "        operations: [get]\n        prefix: x/\n", 1) +
		"rate_limits:\n  tenants:\n    acme: {per_orgg: {rate: 1}}\n" +
		"audit: {typ: sqlite}\n"
	ps := problemsOf(t, y)
	for path, want := range map[string]string{
		"tenants[0].grants[0].prefix":       `did you mean "prefixes"?`,
		"rate_limits.tenants.acme.per_orgg": `did you mean "per_org"?`,
		"audit.typ":                         `did you mean "type"?`,
	} {
		if p, ok := ps[path]; !ok || !strings.Contains(p.Message, want) || p.Line == 0 {
			t.Errorf("%s: got %+v (present %v), want %q with a line", path, p, ok, want)
		}
	}
}

// TestConfigErrorsDuplicateKey: a key set twice is a problem (the second
// value would silently win).
func TestConfigErrorsDuplicateKey(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	ps := problemsOf(t, "log:\n  level: info\n  level: debug\n"+minimal)
	if p, ok := ps["log.level"]; !ok || p.Line != 3 || !strings.Contains(p.Message, "line 2") {
		t.Fatalf("got %+v", ps)
	}
}

// TestConfigErrorsNoFollowOnNoise: a value that cannot be decoded is
// reported once, not again by the checks that then see it missing.
func TestConfigErrorsNoFollowOnNoise(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	y := strings.Replace(minimal, "    grants:\n      - bucket: media\n        prefixes: [\"acme/\"]\n        operations: [get]\n", "    grants: media\n", 1)
	_, err := Parse([]byte(y))
	var ve *validate.Error
	if !errors.As(err, &ve) {
		t.Fatal(err)
	}
	if len(ve.Problems) != 1 || ve.Problems[0].Path != "tenants[0].grants" || !strings.Contains(ve.Problems[0].Message, "list") {
		t.Fatalf("got %v", ve.Problems)
	}
}

// TestValidationProblemsCarryTheirLine: a semantic problem points at the
// line of the value (or of the section that lacks it).
func TestValidationProblemsCarryTheirLine(t *testing.T) {
	t.Setenv("CONFIG_TEST_HMAC", strings.Repeat("s", 32))
	ps := problemsOf(t, "server:\n  min_remaining: 1m\n"+minimal)
	if p := ps["server.min_remaining"]; p.Line != 2 {
		t.Fatalf("got %+v", p)
	}
}
