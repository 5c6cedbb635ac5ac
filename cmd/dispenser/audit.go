package main

import (
	"context"
	"fmt"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/config"
)

// openTrail opens the configured audit store (creating and migrating it).
func openTrail(ctx context.Context, cfg *config.Config) (audit.Trail, error) {
	c := cfg.Audit
	switch c.Type {
	case "sqlite":
		return sqlite.Open(ctx, sqlite.Options{Path: c.Path, Log: c.Log})
	}
	return nil, fmt.Errorf("audit: unsupported store type %q", c.Type)
}
