package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/validate"
)

func TestConfigIntegrityDefaults(t *testing.T) {
	var c audit.Config
	c.ApplyDefaults()
	if c.OnMissingAnchor != audit.OnMissingAnchorRefuse {
		t.Errorf("on_missing_anchor default %q, want refuse", c.OnMissingAnchor)
	}
	if c.Checkpoint.Interval.D() != 200*time.Millisecond || c.Checkpoint.MaxRecords != 1024 {
		t.Errorf("checkpoint cadence default %s / %d records, want 200ms / 1024", c.Checkpoint.Interval.D(), c.Checkpoint.MaxRecords)
	}
	var p validate.Problems
	c.Validate(&p, "audit")
	if err := p.Err(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestConfigIntegrityProblems(t *testing.T) {
	cases := []struct {
		name string
		edit func(*audit.Config)
		path string
	}{
		{"unknown on_missing_anchor", func(c *audit.Config) { c.OnMissingAnchor = "ignore" }, "audit.on_missing_anchor"},
		{"negative max_records", func(c *audit.Config) { c.Checkpoint.MaxRecords = -1 }, "audit.checkpoint.max_records"},
		{"max_records too large", func(c *audit.Config) { c.Checkpoint.MaxRecords = 2_000_000 }, "audit.checkpoint.max_records"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c audit.Config
			c.ApplyDefaults()
			tc.edit(&c)
			var p validate.Problems
			c.Validate(&p, "audit")
			err := p.Err()
			if err == nil || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("problems %v, want one at %s", err, tc.path)
			}
		})
	}
}

// TestAnchorDirOnTheDatabaseFilesystem: an anchor directory beside the
// SQLite database (the default layout) is warned about unless another
// anchor (anchor_url) is configured; one on another filesystem is not.
func TestAnchorDirOnTheDatabaseFilesystem(t *testing.T) {
	dir := t.TempDir()
	c := audit.Config{Path: dir + "/audit.db"}
	c.ApplyDefaults()
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "same filesystem") {
		t.Fatalf("default layout: warnings %q", w)
	}
	c.AnchorURL = "https://witness.example/checkpoints"
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("with an HTTP witness too: warnings %q", w)
	}
	c.AnchorURL = ""
	for _, other := range []string{"/dev/shm", "/proc"} {
		if same, err := audit.SameFilesystem(other, dir); err != nil || same {
			continue
		}
		c.AnchorDir = other + "/dispenser-anchors-not-created"
		if w := c.Warnings(); len(w) != 0 {
			t.Fatalf("anchor_dir on %s: warnings %q", other, w)
		}
		return
	}
	t.Log("no second filesystem to place an anchor directory on; only the same-filesystem case was checked")
}
