package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stateFiles are what a dispenser run from the repository writes with the
// example configuration (relative paths land beside it, in examples/) or
// from the root (an unset audit.path): the audit database and its SQLite
// companions, the generated checkpoint key, the anchors, the SigV4 key
// store and its lock, the query index beside the database and its
// companions.
var stateFiles = []string{
	"dispenser-audit.db", "dispenser-audit.db-wal", "dispenser-audit.db-shm",
	"dispenser-audit.db.index", "dispenser-audit.db.index-wal", "dispenser-audit.db.index-shm",
	"dispenser-audit.db.checkpoint-key", "dispenser-audit.db.anchors/main-000001",
	"dispenser-keys.json", "dispenser-keys.json.lock",
}

// TestStateFilesAreIgnored: no local state (secrets among it) can be
// committed or sent into a docker build context, wherever it was written.
func TestStateFilesAreIgnored(t *testing.T) {
	var paths []string
	for _, f := range stateFiles {
		paths = append(paths, f, "examples/"+f)
	}
	t.Run(".gitignore", func(t *testing.T) {
		inTree := exec.Command("git", "rev-parse", "--is-inside-work-tree")
		inTree.Dir = ".."
		if out, err := inTree.Output(); err != nil || strings.TrimSpace(string(out)) != "true" {
			t.Skip("not a git work tree (an exported source tree)")
		}
		for _, p := range paths {
			cmd := exec.Command("git", "check-ignore", "--no-index", "-q", p)
			cmd.Dir = ".."
			if err := cmd.Run(); err != nil {
				t.Errorf("%s is not ignored by .gitignore", p)
			}
		}
	})
	t.Run(".dockerignore", func(t *testing.T) {
		b, err := os.ReadFile("../.dockerignore")
		if err != nil {
			t.Fatal(err)
		}
		var patterns []string
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				patterns = append(patterns, filepath.Clean(l))
			}
		}
		for _, p := range paths {
			if !dockerIgnored(patterns, p) {
				t.Errorf("%s is not excluded by .dockerignore", p)
			}
		}
	})
}

// dockerIgnored applies .dockerignore's rules to a path relative to the
// build context: a pattern matches the whole path or one of its parent
// directories (filepath.Match), "**/" matches any number of leading
// directories, and the last matching pattern decides ("!" re-includes).
func dockerIgnored(patterns []string, path string) bool {
	ignored := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(pat, "!")
		for p := path; p != "." && p != "/"; p = filepath.Dir(p) {
			if dockerMatch(pat, p) {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

func dockerMatch(pat, path string) bool {
	if ok, _ := filepath.Match(pat, path); ok {
		return true
	}
	if rest, ok := strings.CutPrefix(pat, "**/"); ok {
		parts := strings.Split(path, "/")
		for i := range parts {
			if ok, _ := filepath.Match(rest, strings.Join(parts[i:], "/")); ok {
				return true
			}
		}
	}
	return false
}
