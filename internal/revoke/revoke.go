// Package revoke cuts off an organization, principal, job, task or access
// key id. Revocations live in a Store shared by every replica (the audit
// database); each replica's Registry polls it so a revocation is effective
// everywhere within the poll interval (at most 5 s), and checks requests
// against its in-memory snapshot so the hot path never waits on the store.
package revoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/validate"
)

// Kind is what a revocation matches.
type Kind string

// The kinds of revocation.
const (
	KindOrg         Kind = "org"
	KindPrincipal   Kind = "principal"
	KindJob         Kind = "job"
	KindTask        Kind = "task"
	KindAccessKeyID Kind = "access_key_id"
)

// Kinds lists every kind, in the order requests are checked.
var Kinds = []Kind{KindOrg, KindPrincipal, KindJob, KindTask, KindAccessKeyID}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Revocation is one cut-off.
type Revocation struct {
	ID     string `json:"id"`
	Kind   Kind   `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
	// CreatedBy is the admin principal that added it.
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt, when set, ends the revocation.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Active reports whether r applies at now.
func (r Revocation) Active(now time.Time) bool { return r.ExpiresAt == nil || now.Before(*r.ExpiresAt) }

// Validate checks a new revocation; errors are InvalidRequest faults.
func (r Revocation) Validate(now time.Time) error {
	switch {
	case !r.Kind.Valid():
		return fault.New(fault.InvalidRequest, "bad_revocation", "kind must be one of org, principal, job, task, access_key_id")
	case r.Value == "" || len(r.Value) > 256 || !Text(r.Value):
		return fault.New(fault.InvalidRequest, "bad_revocation", "value must be 1 to 256 bytes of UTF-8 without NUL")
	case r.Reason == "" || len(r.Reason) > 1024 || !Text(r.Reason):
		return fault.New(fault.InvalidRequest, "bad_revocation", "reason must be 1 to 1024 bytes of UTF-8 without NUL")
	case r.ExpiresAt != nil && !r.ExpiresAt.After(now):
		return fault.New(fault.InvalidRequest, "bad_revocation", "expires_at must be in the future")
	}
	return nil
}

// Text reports whether s is valid UTF-8 without NUL: what every store
// keeps as text (PostgreSQL refuses both, SQLite would keep them), so a
// value outside it is refused as a bad request before any store sees it.
func Text(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// NewID returns a random revocation id.
func NewID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "rev_" + hex.EncodeToString(b[:])
}

// ErrNotFound is returned by Store.Delete for an unknown id.
var ErrNotFound = errors.New("revocation not found")

// Store keeps revocations durable and shared between replicas.
//
// Add stores r (ID and CreatedAt already set). List returns the stored
// revocations still in force at activeAt (no expiry, or an expiry after
// it) — what a replica must enforce, so a poll does not reread every
// revocation that ever expired; the zero time lists every stored
// revocation, expired ones included. Delete returns ErrNotFound for an
// unknown id. Every method returns other errors when the database fails.
type Store interface {
	Add(ctx context.Context, r Revocation) error
	List(ctx context.Context, activeAt time.Time) ([]Revocation, error)
	Delete(ctx context.Context, id string) error
}

// Event is a change to the revocation list, for the audit trail.
type Event struct {
	Time       time.Time  `json:"time"`
	Action     string     `json:"action"` // "add" or "delete"
	Actor      string     `json:"actor"`
	Revocation Revocation `json:"revocation"`
}

// Journal records revocation changes in the audit trail. Note returns an
// error when the event is not durable. The Registry notes an added
// revocation after storing it (a cut-off is never held back for want of a
// record: the caller is told it is unrecorded) and a deletion before
// deleting (access is never restored unrecorded).
type Journal interface {
	Note(ctx context.Context, e Event) error
}

// LogJournal notes events in the structured log.
type LogJournal struct{ Logger *zap.Logger }

// Note implements Journal.
func (j LogJournal) Note(_ context.Context, e Event) error {
	r := e.Revocation
	fields := []zap.Field{zap.String("action", e.Action), zap.String("actor", e.Actor), zap.String("revocation_id", r.ID),
		zap.String("kind", string(r.Kind)), zap.String("value", r.Value), zap.String("reason", r.Reason)}
	if r.ExpiresAt != nil {
		fields = append(fields, zap.Time("expires_at", *r.ExpiresAt))
	}
	j.Logger.Info("revocation changed", fields...)
	return nil
}

// KillSwitch applies a revocation on the AWS side, so credentials already
// issued stop working (see awsdeny). Apply and Remove are idempotent.
type KillSwitch interface {
	Apply(ctx context.Context, r Revocation) error
	Remove(ctx context.Context, r Revocation) error
}

// Config is the revocation section; the store is the audit database.
type Config struct {
	// PollInterval is how often a replica reloads the list (default 2s, at
	// most 5s: the propagation promise).
	PollInterval duration.Duration `yaml:"poll_interval"`
	// AWSKillSwitch attaches deny policies to tenant roles (optional).
	AWSKillSwitch *AWSKillSwitchConfig `yaml:"aws_kill_switch"`
}

// AWSKillSwitchConfig configures the IAM inline-deny kill switch.
type AWSKillSwitchConfig struct {
	Enabled bool   `yaml:"enabled"`
	Region  string `yaml:"region"`
	// Endpoint overrides the IAM endpoint (tests, FIPS).
	Endpoint string `yaml:"endpoint"`
}

// ApplyDefaults fills unset fields.
func (c *Config) ApplyDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = duration.Duration(2 * time.Second)
	}
	if k := c.AWSKillSwitch; k != nil && k.Region == "" {
		k.Region = "us-east-1"
	}
}

// Validate records problems under path.
func (c *Config) Validate(p *validate.Problems, path string) {
	if d := c.PollInterval.D(); d < 100*time.Millisecond || d > 5*time.Second {
		p.Addf(validate.Join(path, "poll_interval"), "must be between 100ms and 5s (revocations must reach every replica within 5s), got %s", c.PollInterval)
	}
}

// Subject is what a request is checked against.
type Subject struct {
	Org, Principal, JobID, TaskID string
}

// Options are a Registry's dependencies.
type Options struct {
	Store   Store
	Journal Journal    // nil: LogJournal
	Kill    KillSwitch // nil: none
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time
	// MaxAge, when set, is how old the last successful refresh may be
	// before Fresh reports the list stale: a replica that cannot see new
	// revocations must stop vending rather than ignore them.
	MaxAge time.Duration
}

// ErrStale is returned by Fresh when the list has not been refreshed for
// longer than MaxAge.
var ErrStale = errors.New("the revocation list is stale")

// Registry is a replica's view of the revocation list: writes go to the
// store, reads come from a snapshot refreshed by polling.
type Registry struct {
	o      Options
	snap   atomic.Pointer[snapshot]
	loaded atomic.Bool
	mu     sync.Mutex // serializes Refresh
}

type snapshot struct {
	list  []Revocation
	index map[Kind]map[string][]Revocation
	at    time.Time // when it was read from the store
}

// NewRegistry returns a registry with an empty snapshot; call Refresh (or
// Run) before relying on it.
func NewRegistry(o Options) *Registry {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Journal == nil {
		o.Journal = LogJournal{Logger: o.Logger}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Registry{o: o}
	r.snap.Store(&snapshot{index: map[Kind]map[string][]Revocation{}})
	return r
}

// Refresh reloads the snapshot from the store.
func (g *Registry) Refresh(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.o.Now()
	list, err := g.o.Store.List(ctx, now)
	if err != nil {
		return err
	}
	sort.Slice(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	s := &snapshot{list: list, index: map[Kind]map[string][]Revocation{}, at: now}
	for _, r := range list {
		if s.index[r.Kind] == nil {
			s.index[r.Kind] = map[string][]Revocation{}
		}
		s.index[r.Kind][r.Value] = append(s.index[r.Kind][r.Value], r)
	}
	g.snap.Store(s)
	g.loaded.Store(true)
	return nil
}

// Fresh returns ErrStale (wrapped with the list's age) when the last
// successful refresh is older than MaxAge.
func (g *Registry) Fresh() error {
	if g.o.MaxAge <= 0 {
		return nil
	}
	s := g.snap.Load()
	if s == nil || s.at.IsZero() {
		return nil // not loaded yet: Ready keeps the replica out of service
	}
	if age := g.o.Now().Sub(s.at); age > g.o.MaxAge {
		return fmt.Errorf("%w: last refreshed %s ago", ErrStale, age.Truncate(time.Second))
	}
	return nil
}

// Ready reports whether the list was loaded at least once: a replica that
// cannot see revocations must not vend.
func (g *Registry) Ready(ctx context.Context) error {
	if g.loaded.Load() {
		return nil
	}
	return g.Refresh(ctx)
}

// Run polls the store every interval until ctx ends. A failed poll keeps
// the last snapshot (logged): revocations already known stay in force.
func (g *Registry) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A poll that hangs (a database that accepts and never answers)
		// must not stop the polling: the next one starts on time.
		pctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		err := g.Refresh(pctx)
		cancel()
		if err != nil {
			if !failing && ctx.Err() == nil {
				g.o.Logger.Error("revocation list refresh failed; keeping the last known list", zap.Error(err))
			}
			failing = true
		} else if failing {
			g.o.Logger.Info("revocation list refresh recovered")
			failing = false
		}
	}
}

func (g *Registry) lookup(k Kind, v string) (Revocation, bool) {
	if v == "" {
		return Revocation{}, false
	}
	now := g.o.Now()
	for _, r := range g.snap.Load().index[k][v] {
		if r.Active(now) {
			return r, true
		}
	}
	return Revocation{}, false
}

// Check returns the first active revocation matching s, counting the hit.
func (g *Registry) Check(s Subject) (Revocation, bool) {
	for _, c := range []struct {
		k Kind
		v string
	}{{KindOrg, s.Org}, {KindPrincipal, s.Principal}, {KindJob, s.JobID}, {KindTask, s.TaskID}} {
		if r, ok := g.lookup(c.k, c.v); ok {
			g.o.Metrics.Revoked(string(c.k))
			return r, true
		}
	}
	return Revocation{}, false
}

// CheckAccessKey returns the active revocation of an access key id.
func (g *Registry) CheckAccessKey(id string) (Revocation, bool) {
	r, ok := g.lookup(KindAccessKeyID, id)
	if ok {
		g.o.Metrics.Revoked(string(KindAccessKeyID))
	}
	return r, ok
}

// Add validates, stores and journals r, applies the kill switch, and
// refreshes this replica's snapshot at once.
func (g *Registry) Add(ctx context.Context, r Revocation, actor string) (Revocation, error) {
	now := g.o.Now()
	if err := r.Validate(now); err != nil {
		return Revocation{}, err
	}
	if !Text(actor) {
		return Revocation{}, fault.New(fault.InvalidRequest, "bad_revocation", "the admin principal must be UTF-8 without NUL")
	}
	r.ID, r.CreatedAt, r.CreatedBy = NewID(), now.UTC().Truncate(time.Microsecond), actor
	if r.ExpiresAt != nil {
		e := r.ExpiresAt.UTC().Truncate(time.Microsecond)
		r.ExpiresAt = &e
	}
	if err := g.o.Store.Add(ctx, r); err != nil {
		return Revocation{}, fault.Wrap(err, fault.BackendUnavailable, "revocation_store", "the revocation store is unavailable").WithRetryAfter(2 * time.Second)
	}
	var warnings []string
	var causes []error
	if err := g.note(ctx, Event{Time: now, Action: "add", Actor: actor, Revocation: r}); err != nil {
		warnings = append(warnings, "audit_unrecorded")
		causes = append(causes, fault.Wrap(err, fault.AuditUnavailable, "audit_unrecorded",
			"revocation %s is in force, but the audit trail could not record it", r.ID))
	}
	if err := g.Refresh(ctx); err != nil {
		g.o.Logger.Warn("revocation stored; local refresh failed (the poll will pick it up)", zap.Error(err))
	}
	if g.o.Kill != nil {
		if err := g.o.Kill.Apply(ctx, r); err != nil {
			g.o.Logger.Error("revocation stored but the AWS kill switch failed; credentials already issued stay valid until they expire",
				zap.String("revocation_id", r.ID), zap.Error(err))
			warnings = append(warnings, "aws_kill_switch_failed")
			causes = append(causes, fault.Wrap(err, fault.BackendUnavailable, "kill_switch_failed",
				"revocation %s is in force for new requests, but the AWS deny policy could not be attached", r.ID))
		}
	}
	if len(warnings) > 0 {
		return r, &Incomplete{Warnings: warnings, Err: errors.Join(causes...)}
	}
	return r, nil
}

// List returns every stored revocation, expired ones included, oldest
// first.
func (g *Registry) List(ctx context.Context) ([]Revocation, error) {
	list, err := g.o.Store.List(ctx, time.Time{})
	if err != nil {
		return nil, fault.Wrap(err, fault.BackendUnavailable, "revocation_store", "the revocation store is unavailable").WithRetryAfter(2 * time.Second)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	return list, nil
}

// Delete removes a revocation (and its AWS deny). The deletion is
// recorded in the audit trail first: when the trail cannot record it, the
// revocation stays in force and Delete returns AuditUnavailable.
func (g *Registry) Delete(ctx context.Context, id, actor string) error {
	unavailable := func(err error) error {
		return fault.Wrap(err, fault.BackendUnavailable, "revocation_store", "the revocation store is unavailable").WithRetryAfter(2 * time.Second)
	}
	notFound := fault.New(fault.NotFound, "no_such_revocation", "no revocation with id %q", truncate(id, 64))
	list, err := g.o.Store.List(ctx, time.Time{}) // an expired one can be deleted too
	if err != nil {
		return unavailable(err)
	}
	var found *Revocation
	for i := range list {
		if list[i].ID == id {
			found = &list[i]
		}
	}
	if found == nil {
		return notFound
	}
	ev := Event{Time: g.o.Now(), Action: "delete", Actor: actor, Revocation: *found}
	if err := g.note(ctx, ev); err != nil {
		return fault.Wrap(err, fault.AuditUnavailable, "audit_unavailable",
			"the audit trail cannot record this change; revocation %s stays in force", found.ID).WithRetryAfter(2 * time.Second)
	}
	if err := g.o.Store.Delete(ctx, id); err != nil {
		// The trail already says "unrevoked": follow it with the failure so
		// a reader does not take the first record for the result.
		ev.Time, ev.Action = g.o.Now(), "delete_failed"
		_ = g.note(ctx, ev)
		if errors.Is(err, ErrNotFound) {
			return notFound
		}
		return unavailable(err)
	}
	if err := g.Refresh(ctx); err != nil {
		g.o.Logger.Warn("revocation deleted; local refresh failed (the poll will pick it up)", zap.Error(err))
	}
	if g.o.Kill != nil {
		if err := g.o.Kill.Remove(ctx, *found); err != nil {
			// The deletion happened: report what did not, rather than an
			// error a client would retry into a 404.
			return &Incomplete{Warnings: []string{"kill_switch_not_removed"}, Err: err}
		}
	}
	return nil
}

func (g *Registry) note(ctx context.Context, e Event) error {
	err := g.o.Journal.Note(ctx, e)
	if err != nil {
		g.o.Logger.Error("revocation change not recorded in the audit trail", zap.String("action", e.Action),
			zap.String("revocation_id", e.Revocation.ID), zap.Error(err))
		g.o.Metrics.AuditFailure("revocation")
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// String renders r for the CLI.
func (r Revocation) String() string {
	exp := "never"
	if r.ExpiresAt != nil {
		exp = r.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\texpires=%s\t%s", r.ID, r.Kind, r.Value, r.CreatedAt.UTC().Format(time.RFC3339), exp, r.Reason)
}
