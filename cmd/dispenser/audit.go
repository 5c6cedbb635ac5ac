package main

import (
	"context"
	"fmt"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/postgres"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/config"
)

// openTrail opens the configured audit store (creating and migrating it).
func openTrail(ctx context.Context, cfg *config.Config) (audit.Trail, error) {
	c := cfg.Audit
	switch c.Type {
	case "sqlite":
		return sqlite.Open(ctx, sqlite.Options{Path: c.Path, Log: c.Log})
	case "postgres":
		log := c.Log
		if log == "" {
			log = cfg.Server.ReplicaID
		}
		return postgres.Open(ctx, postgres.Options{DSN: c.DSN, Log: log})
	}
	return nil, fmt.Errorf("audit: unsupported store type %q", c.Type)
}
