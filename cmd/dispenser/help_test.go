package main

import (
	"strings"
	"testing"
)

// TestCommandHelp: docs/cli.md promises that `dispenser COMMAND --help`
// prints the flags. Asking for help is not bad usage: it exits 0 and never
// needs a configuration, for every command and subcommand.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // in stdout or stderr
	}{
		{[]string{"serve", "--help"}, []string{"-admin-listen", "-listen", "-config"}},
		{[]string{"check-config", "--help"}, []string{"-config"}},
		{[]string{"token", "--help"}, []string{"-subject", "-org", "-ttl", "-job-id", "-task-id"}},
		{[]string{"policy", "-h"}, []string{"-location", "-operation", "-file", "-principal", "-job-id", "-task-id"}},
		{[]string{"credentials", "--help"}, []string{"-url", "-token-file", "-sigv4", "-ca-file", "-timeout"}},
		{[]string{"keys", "--help"}, []string{"keys create", "keys list", "keys disable"}},
		{[]string{"keys", "help"}, []string{"keys create", "keys list", "keys disable"}},
		{[]string{"keys", "create", "--help"}, []string{"-name", "-org", "-config"}},
		{[]string{"revoke", "--help"}, []string{"revoke add", "revoke list", "revoke delete"}},
		{[]string{"revoke", "add", "--help"}, []string{"-kind", "-value", "-reason", "-expires-in", "-expires-at"}},
		{[]string{"audit", "query", "--help"}, []string{"-access-key-id", "-outcome", "-format"}},
		{[]string{"audit", "verify", "--help"}, []string{"-incremental", "-key"}},
		{[]string{"audit", "adopt", "--help"}, []string{"-reason", "-operator", "-log"}},
		{[]string{"audit", "verify-receipt", "--help"}, []string{"-key", "-config"}},
		{[]string{"audit", "keygen", "--help"}, []string{"-out", "-name", "-if-missing"}},
		{[]string{"audit", "verifier-key", "--help"}, []string{"-config"}},
		{[]string{"audit", "correlate", "--help"}, []string{"-cloudtrail", "-by", "-skew"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := runCmd(tc.args...)
			if code != 0 {
				t.Errorf("exit %d, want 0\nstdout: %s\nstderr: %s", code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(out+errs, w) {
					t.Errorf("help does not mention %q:\n%s%s", w, out, errs)
				}
			}
		})
	}
}

// TestUsageListsDocumentedFlags: the top-level and audit usage texts list
// the flags docs/cli.md documents for each command.
func TestUsageListsDocumentedFlags(t *testing.T) {
	_, top, _ := runCmd("help")
	_, audit, _ := runCmd("audit", "help")
	for _, tc := range []struct{ text, line, flag string }{
		{top, "dispenser policy", "--job-id"},
		{top, "dispenser policy", "--task-id"},
		{audit, "dispenser audit keygen", "--if-missing"},
	} {
		found := false
		for _, l := range strings.Split(tc.text, "\n") {
			if strings.Contains(l, tc.line) {
				found = true
				if !strings.Contains(l, tc.flag) {
					t.Errorf("usage line %q lacks %s", strings.TrimSpace(l), tc.flag)
				}
			}
		}
		if !found {
			t.Errorf("usage has no line for %q", tc.line)
		}
	}
}

// TestUnknownSubcommandNeedsNoConfig: a mistyped keys or revoke subcommand
// is bad usage (exit 2) named as such, not a missing --config.
func TestUnknownSubcommandNeedsNoConfig(t *testing.T) {
	for _, cmd := range []string{"keys", "revoke"} {
		code, _, errs := runCmd(cmd, "lst")
		if code != 2 || !strings.Contains(errs, `unknown `+cmd+` command "lst"`) {
			t.Errorf("%s lst: exit %d, stderr %q; want 2 and the unknown command named", cmd, code, errs)
		}
	}
}

// TestMissingConfigIsBadUsage: a command run without its required --config
// exits with its bad-usage code (docs/troubleshooting.md#exit-codes: 2 for
// most commands, 3 "could not run (bad flags ...)" for audit verify), as a
// missing --subject or --reason does, not with the code of a failure.
func TestMissingConfigIsBadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"serve"}, 2},
		{[]string{"check-config"}, 2},
		{[]string{"token", "--subject", "w", "--org", "acme"}, 2},
		{[]string{"policy", "--org", "acme", "--location", "s3://media/acme/", "--operation", "get"}, 2},
		{[]string{"keys", "list"}, 2},
		{[]string{"revoke", "list"}, 2},
		{[]string{"audit", "query"}, 2},
		{[]string{"audit", "adopt", "--reason", "x", "--operator", "me"}, 2},
		{[]string{"audit", "verifier-key"}, 2},
		{[]string{"audit", "correlate", "--cloudtrail", "ct.json"}, 2},
		{[]string{"audit", "verify"}, 3},
	} {
		code, _, errs := runCmd(tc.args...)
		if code != tc.want || !strings.Contains(errs, "--config is required") {
			t.Errorf("%v: exit %d, stderr %q; want %d and --config named", tc.args, code, errs, tc.want)
		}
	}
}
