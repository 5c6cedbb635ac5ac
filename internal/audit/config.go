package audit

import (
	"time"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// Config selects and tunes the audit store.
type Config struct {
	// Type is sqlite (default) or postgres.
	Type string `yaml:"type"`
	// Path is the SQLite database file.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string.
	DSN string `yaml:"dsn"`
	// Log names the log this dispenser appends to: "main" on SQLite; on
	// PostgreSQL each replica needs its own (default server.replica_id).
	Log string `yaml:"log"`
	// BatchSize bounds the records of one group commit (default 256).
	BatchSize int `yaml:"batch_size"`
	// BatchWait is how long a commit waits for more records once the first
	// is in (default 0: commit as soon as the store is free; records that
	// arrive during a commit share the next one).
	BatchWait duration.Duration `yaml:"batch_wait"`
}

// ApplyDefaults fills unset fields.
func (c *Config) ApplyDefaults() {
	if c.Type == "" {
		c.Type = "sqlite"
	}
	if c.Type == "sqlite" && c.Path == "" {
		c.Path = "dispenser-audit.db"
	}
	if c.Type == "sqlite" && c.Log == "" {
		c.Log = "main"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	switch c.Type {
	case "sqlite", "postgres":
	default:
		p.Addf(validate.Join(path, "type"), "must be sqlite or postgres, got %q", c.Type)
	}
	if c.Type == "postgres" && c.DSN == "" {
		p.Addf(validate.Join(path, "dsn"), "is required for type postgres")
	}
	if c.Log != "" && !ValidLogName(c.Log) {
		p.Addf(validate.Join(path, "log"), "must be 1-64 characters of A-Z a-z 0-9 . _ -")
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		p.Addf(validate.Join(path, "batch_size"), "must be between 1 and 10000")
	}
	if c.BatchWait.D() < 0 || c.BatchWait.D() > time.Second {
		p.Addf(validate.Join(path, "batch_wait"), "must be between 0 and 1s")
	}
}
