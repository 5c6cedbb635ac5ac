package docs

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEShape keeps the README what a newcomer reads in five minutes:
// at most 200 lines, with exactly the two commands they need, verbatim
// (.ci/run runs the second one, and says so).
func TestREADMEShape(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if n := strings.Count(readme, "\n"); n > 200 {
		t.Errorf("README.md has %d lines, want at most 200: move detail into docs/", n)
	}
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		"go run ./cmd/dispenser serve --config examples/local.yaml",
		"go test -race -count=1 ./...",
	} {
		if !strings.Contains(readme, "\n"+cmd+"\n") {
			t.Errorf("README.md lost the command line %q", cmd)
		}
	}
	if !strings.Contains(string(ci), "\ngo test -race -count=1 ./...\n") {
		t.Error(".ci/run no longer runs the README's test command verbatim")
	}
}
