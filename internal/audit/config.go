package audit

import "github.com/vtk/dispenser/internal/validate"

// Config selects the audit store.
type Config struct {
	// Type is sqlite (default) or postgres.
	Type string `yaml:"type"`
	// Path is the SQLite database file.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string.
	DSN string `yaml:"dsn"`
}

// ApplyDefaults fills unset fields.
func (c *Config) ApplyDefaults() {
	if c.Type == "" {
		c.Type = "sqlite"
	}
	if c.Type == "sqlite" && c.Path == "" {
		c.Path = "dispenser-audit.db"
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
}
