package audit

import (
	"os"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/diskspace"
	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

// Config selects and tunes the audit store.
type Config struct {
	// Type is sqlite (default) or postgres.
	Type string `yaml:"type"`
	// Path is the SQLite database file.
	Path string `yaml:"path" config:"path"`
	// DSN is the PostgreSQL connection string.
	DSN string `yaml:"dsn"`
	// Log names the log this dispenser appends to: "main" on SQLite; on
	// PostgreSQL each replica needs its own (default server.replica_id).
	Log string `yaml:"log"`
	// BatchSize bounds the records of one group commit (default 256).
	BatchSize int `yaml:"batch_size"`
	// BatchWait bounds how long a commit waits for more records once the
	// first is in. It waits only while requests that passed authentication
	// have not yet queued their record (so a lone caller, or a burst that
	// is all queued, commits at once). Default 2ms: under load, fewer and
	// larger commits cost less CPU per record. 0s commits as soon as the
	// store is free.
	BatchWait *duration.Duration `yaml:"batch_wait"`

	generatedKey bool
	// Checkpoint configures the signed checkpoints.
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	// AnchorDir receives every checkpoint outside the database. Put it on
	// another volume, writable by the dispenser but not by whoever
	// administers the database. Default for SQLite: "<path>.anchors".
	AnchorDir string `yaml:"anchor_dir" config:"path"`
	// AnchorURL, when set, also sends every checkpoint to an HTTP witness
	// (PUT/GET {anchor_url}/{origin}); AnchorTokenEnv names an environment
	// variable with a bearer token for it.
	AnchorURL      string `yaml:"anchor_url"`
	AnchorTokenEnv string `yaml:"anchor_token_env"`
	// Mirror, when set, also writes every durable record as a JSON line to
	// "stdout" or a file, for log shipping. It is a copy, not the evidence.
	Mirror string `yaml:"mirror" config:"sink"`
	// Retention deletes records older than this (0: keep forever). The
	// boundary record and a signed checkpoint at the cut are kept, so the
	// remaining trail still verifies.
	Retention duration.Duration `yaml:"retention"`
	// MinFreeSpace is the free-space floor of the SQLite volume (default
	// 256MiB; 0 turns the check off): below it refusals are recorded as
	// summaries only and dispenser_audit_volume_low is 1, well before a
	// full volume fails every write (and so every request).
	MinFreeSpace *diskspace.Bytes `yaml:"min_free_space"`
	// OnMissingAnchor is what a replica does when its log holds entries
	// but no anchor holds a checkpoint of it (anchors deleted or moved, a
	// new anchor location): "refuse" (default) stops vending (/readyz 503
	// audit_anchor_missing) until an operator runs dispenser audit adopt;
	// "serve" keeps vending. Either way nothing is signed or anchored
	// until the adoption.
	OnMissingAnchor string `yaml:"on_missing_anchor"`
}

// DefaultMinFreeSpace is the SQLite volume's free-space floor when none is
// configured.
const DefaultMinFreeSpace = 256 << 20

// On-missing-anchor policies.
const (
	OnMissingAnchorRefuse = "refuse"
	OnMissingAnchorServe  = "serve"
)

// CheckpointConfig configures the signed checkpoints.
type CheckpointConfig struct {
	// SigningKeyFile holds the Ed25519 note signer key ("dispenser audit
	// keygen" writes one). It is separate from the database credentials:
	// whoever can write the database cannot sign. Default for SQLite:
	// "<path>.checkpoint-key", generated on first start.
	SigningKeyFile string `yaml:"signing_key_file" config:"path"`
	// Origin prefixes every log's checkpoint origin (default
	// "dispenser/audit"); the origin of log L is "<origin>/L".
	Origin string `yaml:"origin"`
	// Interval bounds how long a record waits for a checkpoint (default
	// 200ms): a checkpoint is signed and anchored once the oldest record
	// no checkpoint covers is this old, or MaxRecords records are
	// uncovered. What no anchor covers yet is what a crash leaves open to
	// an undetectable rewrite.
	Interval duration.Duration `yaml:"interval"`
	// MaxRecords checkpoints as soon as this many records are uncovered
	// (default 1024).
	MaxRecords int64 `yaml:"max_records"`
	// IdleInterval re-anchors the newest checkpoint when idle (default 1m).
	IdleInterval duration.Duration `yaml:"idle_interval"`
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
	if c.BatchWait == nil {
		d := duration.Duration(2 * time.Millisecond)
		c.BatchWait = &d
	}
	cp := &c.Checkpoint
	if cp.Origin == "" {
		cp.Origin = "dispenser/audit"
	}
	if cp.Interval == 0 {
		cp.Interval = duration.Duration(DefaultCheckpointInterval)
	}
	if cp.MaxRecords == 0 {
		cp.MaxRecords = DefaultCheckpointRecords
	}
	if c.OnMissingAnchor == "" {
		c.OnMissingAnchor = OnMissingAnchorRefuse
	}
	if cp.IdleInterval == 0 {
		cp.IdleInterval = duration.Duration(time.Minute)
	}
	if c.Type == "sqlite" {
		if cp.SigningKeyFile == "" {
			cp.SigningKeyFile = c.Path + ".checkpoint-key"
			c.generatedKey = true
		}
		if c.AnchorDir == "" {
			c.AnchorDir = c.Path + ".anchors"
		}
		if c.MinFreeSpace == nil {
			v := diskspace.Bytes(DefaultMinFreeSpace)
			c.MinFreeSpace = &v
		}
	}
}

// GeneratedKey reports whether the signing key path is the SQLite default,
// which the dispenser creates on first start.
func (c *Config) GeneratedKey() bool { return c.generatedKey }

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
	if c.Type == "postgres" && c.Checkpoint.SigningKeyFile == "" {
		p.Addf(validate.Join(path, "checkpoint", "signing_key_file"), "is required for type postgres (create one with dispenser audit keygen)")
	}
	if c.Type == "postgres" && c.AnchorDir == "" && c.AnchorURL == "" {
		p.Addf(validate.Join(path, "anchor_dir"), "anchor_dir or anchor_url is required for type postgres")
	}
	if c.AnchorURL != "" {
		if err := validate.ServiceURL(c.AnchorURL); err != nil {
			p.Addf(validate.Join(path, "anchor_url"), "%v", err)
		}
	}
	if c.AnchorTokenEnv != "" && os.Getenv(c.AnchorTokenEnv) == "" {
		p.Addf(validate.Join(path, "anchor_token_env"), "environment variable %s is empty", c.AnchorTokenEnv)
	}
	if strings.ContainsAny(c.Checkpoint.Origin, "\n+ ") || c.Checkpoint.Origin == "" {
		p.Addf(validate.Join(path, "checkpoint", "origin"), "must be a non-empty string without spaces, '+' or newlines")
	}
	if c.Checkpoint.Interval.D() < 100*time.Millisecond || c.Checkpoint.Interval.D() > time.Minute {
		p.Addf(validate.Join(path, "checkpoint", "interval"), "must be between 100ms and 1m")
	}
	if n := c.Checkpoint.MaxRecords; n < 1 || n > 1_000_000 {
		p.Addf(validate.Join(path, "checkpoint", "max_records"), "must be between 1 and 1000000")
	}
	switch c.OnMissingAnchor {
	case OnMissingAnchorRefuse, OnMissingAnchorServe:
	default:
		p.Addf(validate.Join(path, "on_missing_anchor"), "must be refuse or serve, got %q", c.OnMissingAnchor)
	}
	if c.Checkpoint.IdleInterval.D() < c.Checkpoint.Interval.D() || c.Checkpoint.IdleInterval.D() > time.Hour {
		p.Addf(validate.Join(path, "checkpoint", "idle_interval"), "must be between checkpoint.interval and 1h")
	}
	if r := c.Retention.D(); r != 0 && r < time.Hour {
		p.Addf(validate.Join(path, "retention"), "must be 0 (keep forever) or at least 1h")
	}
	if c.Type == "postgres" && c.MinFreeSpace != nil && *c.MinFreeSpace != 0 {
		p.Addf(validate.Join(path, "min_free_space"), "applies to type sqlite only (PostgreSQL's volume is the database server's)")
	}
	if w := c.Wait(); w < 0 || w > time.Second {
		p.Addf(validate.Join(path, "batch_wait"), "must be between 0 and 1s")
	}
}

// Wait is the configured batch wait (0 when unset).
func (c Config) Wait() time.Duration {
	if c.BatchWait == nil {
		return 0
	}
	return c.BatchWait.D()
}

// SameFilesystem reports whether a and b (or, for paths not created yet,
// their nearest existing parents) are on one filesystem, by device id.
func SameFilesystem(a, b string) (bool, error) {
	da, err := deviceOf(a)
	if err != nil {
		return false, err
	}
	db, err := deviceOf(b)
	if err != nil {
		return false, err
	}
	return da == db, nil
}

// Warnings lists settings that work but weaken the trail's evidence: an
// anchor directory on the SQLite database's filesystem, with no other
// anchor, can be rewritten by whoever can rewrite the database there.
// check-config prints them and the dispenser logs them at start.
func (c *Config) Warnings() []string {
	if c.Type != "sqlite" || c.AnchorDir == "" || c.AnchorURL != "" {
		return nil
	}
	same, err := SameFilesystem(c.AnchorDir, c.Path)
	if err != nil || !same {
		return nil
	}
	return []string{"audit.anchor_dir (" + c.AnchorDir + ") is on the same filesystem as audit.path (" + c.Path + "): " +
		"whoever can rewrite the database there can delete the anchors too, and a rewritten log then has nothing to be checked against. " +
		"In production put anchor_dir on a volume the database's administrators cannot write, or add audit.anchor_url (an HTTP witness off the database host)"}
}
