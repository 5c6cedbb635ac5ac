package main

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/revoke"
)

const revokeUsage = `Usage:
  dispenser revoke add    --config FILE --kind org|principal|job|task|access_key_id --value V --reason R [--expires-in 24h | --expires-at RFC3339]
  dispenser revoke list   --config FILE [--all]
  dispenser revoke delete --config FILE --id ID
`

// revokeFlags are the flags of dispenser revoke.
type revokeFlags struct {
	path, kind, value, reason, expiresAt, id *string
	expiresIn                                *time.Duration
	all                                      *bool
}

// cmdRevoke changes the revocation list directly in the audit database (the
// same store the servers poll), for operators with database access; the
// admin API does the same over HTTP.
func cmdRevoke(args []string, stdout, stderr io.Writer) int {
	sub, args, code, done := subcommand("revoke", revokeUsage, []string{"add", "list", "delete"}, args, stdout, stderr)
	if done {
		return code
	}
	fs := newFlags("revoke "+sub, stderr)
	f := revokeFlags{
		path:      fs.String("config", "", "configuration file"),
		kind:      fs.String("kind", "", "org, principal, job, task or access_key_id"),
		value:     fs.String("value", "", "the org, principal, job id, task id or access key id"),
		reason:    fs.String("reason", "", "why (recorded in the audit trail)"),
		expiresIn: fs.Duration("expires-in", 0, "end the revocation after this long"),
		expiresAt: fs.String("expires-at", "", "end the revocation at this RFC 3339 time"),
		id:        fs.String("id", "", "revocation id (delete)"),
		all:       fs.Bool("all", false, "list expired revocations too"),
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	c, err := loadConfig(*f.path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	log := cliLogger(stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, closeAll, err := cliRegistry(ctx, c, log, sub == "add" || sub == "delete")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer closeAll()
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	switch sub {
	case "add":
		return revokeAdd(ctx, reg, f, actor, stdout, stderr)
	case "list":
		return revokeList(ctx, reg, *f.all, stdout, stderr)
	case "delete":
		if *f.id == "" {
			fmt.Fprintln(stderr, "revoke delete: --id is required")
			return 2
		}
		if err := reg.Delete(ctx, *f.id, actor); err != nil {
			fmt.Fprintln(stderr, "revoke delete:", err)
			return 1
		}
		fmt.Fprintf(stdout, "deleted %s\n", *f.id)
		return 0
	}
	fmt.Fprintf(stderr, "revoke: unknown subcommand %q (add, list, delete)\n", sub)
	return 2
}

// cliRegistry opens the revocation store and the kill switch of c, and,
// when the command changes the list (recorded), the CLI's audit journal.
// The returned function closes what it opened.
func cliRegistry(ctx context.Context, c *config.Config, log *zap.Logger, recorded bool) (*revoke.Registry, func(), error) {
	store, closeStore, err := openRevocationStore(ctx, c.Audit)
	if err != nil {
		return nil, nil, err
	}
	closers := []func() error{closeStore}
	closeAll := func() { // the trail before the store, as opened in reverse
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	kill, err := newKillSwitch(ctx, c.Revocation.AWSKillSwitch, func() *config.Config { return c })
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	var journal revoke.Journal = revoke.LogJournal{Logger: log.Named("revoke")}
	if recorded {
		j, closeTrail, err := cliJournal(ctx, c, log)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("revoke: %w", err)
		}
		closers = append(closers, func() error { closeTrail(); return nil })
		journal = revoke.MultiJournal{j, journal}
	}
	reg := revoke.NewRegistry(revoke.Options{Store: store, Journal: journal, Kill: kill, Logger: log.Named("revoke")})
	return reg, closeAll, nil
}

// revokeAdd is dispenser revoke add.
func revokeAdd(ctx context.Context, reg *revoke.Registry, f revokeFlags, actor string, stdout, stderr io.Writer) int {
	r := revoke.Revocation{Kind: revoke.Kind(*f.kind), Value: *f.value, Reason: *f.reason}
	switch {
	case *f.expiresIn != 0 && *f.expiresAt != "":
		fmt.Fprintln(stderr, "revoke add: set --expires-in or --expires-at, not both")
		return 2
	case *f.expiresIn != 0:
		t := time.Now().Add(*f.expiresIn)
		r.ExpiresAt = &t
	case *f.expiresAt != "":
		t, err := time.Parse(time.RFC3339, *f.expiresAt)
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
}

// revokeList is dispenser revoke list.
func revokeList(ctx context.Context, reg *revoke.Registry, all bool, stdout, stderr io.Writer) int {
	list, err := reg.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "revoke list:", err)
		return 1
	}
	now := time.Now()
	shown := 0
	for _, r := range list {
		if all || r.Active(now) {
			fmt.Fprintln(stdout, r)
			shown++
		}
	}
	// Said on stderr, as kubectl does: stdout stays one revocation per
	// line for scripts, and a person sees the list was read.
	switch {
	case shown > 0:
	case all:
		fmt.Fprintln(stderr, "no revocations")
	default:
		fmt.Fprintln(stderr, "no active revocations (--all also lists expired ones)")
	}
	return 0
}

// cliLog is the audit log the revoke CLI appends to. It is its own log, so
// the CLI never races a running server for the head of the server's log
// (on PostgreSQL a second CLI run at the same moment waits for nothing: it
// fails to claim the log and changes nothing).
const cliLog = "revoke-cli"

// cliJournal records the CLI's changes in the audit trail like the admin
// API does, in log cliLog, and anchors a checkpoint after each one so
// `audit verify` covers them. It needs the checkpoint signing key.
func cliJournal(ctx context.Context, c *config.Config, log *zap.Logger) (revoke.Journal, func(), error) {
	cc := *c
	cc.Audit.Log = cliLog
	trail, err := openTrail(ctx, &cc, trailServe, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("audit trail (revocation changes are recorded there): %w", err)
	}
	signer, _, err := checkpointSigner(&cc, log)
	if err != nil {
		_ = trail.Close()
		return nil, nil, fmt.Errorf("audit checkpoint key: %w", err)
	}
	cp := &audit.Checkpointer{Source: trail, Log: cliLog, Origin: audit.Origin(cc.Audit.Checkpoint.Origin, cliLog), Signer: signer,
		Anchors: anchors(&cc), Logger: log.Named("audit")}
	// Anchors the empty log's genesis checkpoint on first use (and checks
	// the log against its anchors), so every record after it extends one.
	if _, err := cp.Resume(ctx); err != nil {
		log.Warn("the revocation CLI's audit log could not be checkpointed; its records stay unanchored", zap.Error(err))
	}
	j := revoke.AuditJournal{Recorder: anchoredAppend{trail: trail, cp: cp, log: log}, ReplicaID: cc.Server.ReplicaID}
	return j, func() { _ = trail.Close() }, nil
}

// anchoredAppend appends one record and then signs and anchors a
// checkpoint of the CLI's log.
type anchoredAppend struct {
	trail audit.Trail
	cp    *audit.Checkpointer
	log   *zap.Logger
}

// Record implements revoke.Recorder. It fails only when the record is not
// durable; a failed checkpoint is a warning (the record is in the trail,
// and `audit verify` reports the unanchored tail).
func (r anchoredAppend) Record(ctx context.Context, rec audit.Record) error {
	if _, err := r.trail.Append(ctx, []audit.Record{rec}); err != nil {
		return err
	}
	if _, err := r.cp.Checkpoint(ctx, true); err != nil {
		r.log.Warn("revocation recorded, but its audit checkpoint was not signed or anchored", zap.Error(err))
	}
	return nil
}
