package main

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/revoke"
)

// cmdRevoke changes the revocation list directly in the audit database (the
// same store the servers poll), for operators with database access; the
// admin API does the same over HTTP.
func cmdRevoke(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "revoke: add, list or delete")
		return 2
	}
	sub, args := args[0], args[1:]
	fs := newFlags("revoke "+sub, stderr)
	path := fs.String("config", "", "configuration file")
	kind := fs.String("kind", "", "org, principal, job, task or access_key_id")
	value := fs.String("value", "", "the org, principal, job id, task id or access key id")
	reason := fs.String("reason", "", "why (recorded in the audit trail)")
	expiresIn := fs.Duration("expires-in", 0, "end the revocation after this long")
	expiresAt := fs.String("expires-at", "", "end the revocation at this RFC 3339 time")
	id := fs.String("id", "", "revocation id (delete)")
	all := fs.Bool("all", false, "list expired revocations too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, _ := zap.NewProduction()
	if log == nil {
		log = zap.NewNop()
	}
	defer func() { _ = log.Sync() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, closeStore, err := openRevocationStore(ctx, c.Audit)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer closeStore()
	kill, err := newKillSwitch(ctx, c.Revocation.AWSKillSwitch, func() *config.Config { return c })
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	reg := revoke.NewRegistry(revoke.Options{Store: store, Kill: kill, Logger: log.Named("revoke")})
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	switch sub {
	case "add":
		r := revoke.Revocation{Kind: revoke.Kind(*kind), Value: *value, Reason: *reason}
		switch {
		case *expiresIn != 0 && *expiresAt != "":
			fmt.Fprintln(stderr, "revoke add: set --expires-in or --expires-at, not both")
			return 2
		case *expiresIn != 0:
			t := time.Now().Add(*expiresIn)
			r.ExpiresAt = &t
		case *expiresAt != "":
			t, err := time.Parse(time.RFC3339, *expiresAt)
			if err != nil {
				fmt.Fprintln(stderr, "revoke add: --expires-at:", err)
				return 2
			}
			r.ExpiresAt = &t
		}
		added, err := reg.Add(ctx, r, actor)
		if added.ID != "" {
			fmt.Fprintln(stdout, added)
		}
		if err != nil {
			fmt.Fprintln(stderr, "revoke add:", err)
			return 1
		}
		return 0
	case "list":
		list, err := reg.List(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "revoke list:", err)
			return 1
		}
		now := time.Now()
		for _, r := range list {
			if *all || r.Active(now) {
				fmt.Fprintln(stdout, r)
			}
		}
		return 0
	case "delete":
		if *id == "" {
			fmt.Fprintln(stderr, "revoke delete: --id is required")
			return 2
		}
		if err := reg.Delete(ctx, *id, actor); err != nil {
			fmt.Fprintln(stderr, "revoke delete:", err)
			return 1
		}
		fmt.Fprintf(stdout, "deleted %s\n", *id)
		return 0
	}
	fmt.Fprintf(stderr, "revoke: unknown subcommand %q (add, list, delete)\n", sub)
	return 2
}
