package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/scope"
)

// policyConfig is examples/local.yaml itself, by absolute path: policy
// reads no state, and the file's key paths resolve against its directory
// whatever the working directory.
func policyConfig(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../examples/local.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runPolicy(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"policy"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestPolicyCommandPrintsTheExactPolicy(t *testing.T) {
	cfg := policyConfig(t)
	// From any directory: the configuration's key paths are relative to it.
	t.Chdir(t.TempDir())
	want := func(op scope.Operation, loc scope.Location, keys []string) string {
		p, _, err := scope.BuildPolicy(op, loc, keys, scope.PolicyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p + "\n"
	}
	acmeIn := scope.Location{Bucket: "media", Prefix: "acme/in/"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"get", []string{"--operation", "get", "--location", "s3://media/acme/in/"}, want(scope.OpGet, acmeIn, nil)},
		{"tool name, no slash", []string{"--operation", "storage:put", "--location", "s3://media/acme/in"}, want(scope.OpPut, acmeIn, nil)},
		{"files", []string{"--operation", "get", "--location", "s3://media/acme/in/", "--file", "b.mp4", "--file", "a*.mp4"},
			want(scope.OpGet, acmeIn, []string{"acme/in/a*.mp4", "acme/in/b.mp4"})},
		{"userinfo stripped", []string{"--operation", "tag", "--location", "s3://AKIAEXAMPLE:top/secret@media/acme/in/"}, want(scope.OpTag, acmeIn, nil)},
	}
	for _, tt := range tests {
		code, stdout, stderr := runPolicy(t, append([]string{"--config", cfg, "--org", "acme"}, tt.args...)...)
		if code != 0 || stdout != tt.want {
			t.Errorf("%s: exit %d\nstdout %s\nwant   %s\nstderr %s", tt.name, code, stdout, tt.want, stderr)
		}
		if !json.Valid([]byte(stdout)) {
			t.Errorf("%s: output is not JSON", tt.name)
		}
		if strings.Contains(stdout+stderr, "secret") || strings.Contains(stdout+stderr, "AKIAEXAMPLE") {
			t.Errorf("%s: userinfo printed: %s %s", tt.name, stdout, stderr)
		}
	}
}

func TestPolicyCommandCompactionNote(t *testing.T) {
	args := []string{"--config", policyConfig(t), "--org", "acme", "--operation", "get", "--location", "s3://media/acme/in/"}
	for i := range 200 {
		args = append(args, "--file", "hls/segment-"+strings.Repeat("0", 3)+string(rune('a'+i%26))+string(rune('a'+i/26))+".ts")
	}
	code, stdout, stderr := runPolicy(t, args...)
	if code != 0 || !strings.Contains(stdout, `"arn:aws:s3:::media/acme/in/hls/*"`) {
		t.Fatalf("exit %d stdout %s stderr %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "200 files") || !strings.Contains(stderr, "s3://media/acme/in/hls/") {
		t.Errorf("no compaction note on stderr: %q", stderr)
	}
}

func TestPolicyCommandDenies(t *testing.T) {
	cfg := policyConfig(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"other prefix", []string{"--org", "acme", "--operation", "put", "--location", "s3://media/other/in/"}, 1,
			"denied: AccessDenied: operation put is not allowed on s3://media/other/in/ for org acme\n"},
		{"sibling", []string{"--org", "acme", "--operation", "get", "--location", "s3://media/acme-other/"}, 1,
			"denied: AccessDenied: operation get is not allowed on s3://media/acme-other/ for org acme\n"},
		{"other bucket", []string{"--org", "acme", "--operation", "get", "--location", "s3://archive/acme/"}, 1,
			"denied: AccessDenied: operation get is not allowed on s3://archive/acme/ for org acme\n"},
		{"unknown org", []string{"--org", "globex", "--operation", "get", "--location", "s3://media/globex/"}, 1,
			"denied: AccessDenied: no tenant is configured for org \"globex\"\n"},
		{"no org", []string{"--operation", "get", "--location", "s3://media/acme/"}, 1,
			"denied: AccessDenied: the caller has no organization, so no tenant applies\n"},
		{"bad location", []string{"--org", "acme", "--operation", "get", "--location", "s3://media/acme/../x/"}, 1,
			"denied: InvalidRequest: invalid location: location prefix must not contain '.' or '..' segments\n"},
		{"bad operation", []string{"--org", "acme", "--operation", "delete", "--location", "s3://media/acme/"}, 1,
			"denied: InvalidRequest: unknown operation"},
		{"userinfo denied", []string{"--org", "acme", "--operation", "get", "--location", "s3://KEY:top/secret@media/other/"}, 1,
			"denied: AccessDenied: operation get is not allowed on s3://media/other/ for org acme\n"},
		{"bad file", []string{"--org", "acme", "--operation", "get", "--location", "s3://media/acme/", "--file", "../x"}, 1,
			"denied: InvalidRequest: invalid file"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runPolicy(t, append([]string{"--config", cfg}, tt.args...)...)
		if code != tt.code || stdout != "" || !strings.HasPrefix(stderr, tt.want) {
			t.Errorf("%s: exit %d stdout %q stderr %q; want exit %d stderr %q", tt.name, code, stdout, stderr, tt.code, tt.want)
		}
		if strings.Contains(stderr, "secret") {
			t.Errorf("%s: userinfo printed: %s", tt.name, stderr)
		}
	}
	if code, _, stderr := runPolicy(t, "--org", "acme", "--operation", "get", "--location", "s3://media/acme/"); code != 2 || !strings.Contains(stderr, "--config is required") {
		t.Errorf("missing config: exit %d %q", code, stderr)
	}
	if code, _, _ := runPolicy(t, "--no-such-flag"); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
}
