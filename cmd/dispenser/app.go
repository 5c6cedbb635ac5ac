package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	dispenser "github.com/vtk/dispenser"
	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/denials"
	"github.com/vtk/dispenser/internal/diskspace"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/ratelimit"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/revoke/awsdeny"
	revokepg "github.com/vtk/dispenser/internal/revoke/postgres"
	revokesqlite "github.com/vtk/dispenser/internal/revoke/sqlite"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/cache"

	// Backends register themselves.
	_ "github.com/vtk/dispenser/internal/vend/assumerole"
	_ "github.com/vtk/dispenser/internal/vend/mock"
	_ "github.com/vtk/dispenser/internal/vend/static"
)

// This file is where the dispenser is wired: what a configuration builds
// (components, built once per load or reload), the app made of it
// (newAppFrom), the background loops it runs (run) and the order it stops
// in (close). Nothing else constructs a store, a backend or an
// authenticator for serving.

// startupTimeout bounds each store the app opens at start (connecting,
// migrating, the first checkpoint): a database that accepts connections
// and never answers fails the start instead of hanging it.
const startupTimeout = 30 * time.Second

// components are what one configuration builds: the backends, the worker
// and admin authenticators. build makes them once per load or reload;
// check-config builds them to report what only construction finds, serve
// runs them, a reload swaps in its authenticators.
type components struct {
	cfg      *config.Config
	backends map[string]vend.Vendor
	worker   auth.Chain
	admin    auth.Authenticator // nil without an admin section
	// opened is what the worker chain opened (a SQL key store's pool).
	opened []io.Closer
}

// release closes what the components opened (check-config, a rejected
// reload).
func (c *components) release() { closeAll(c.opened) }

// buildDeps are the collaborators of the components: none for a check,
// the app's logger, metrics and STS client when serving.
type buildDeps struct {
	Logger    *zap.Logger
	Metrics   *metrics.Metrics
	STSClient *http.Client
}

// build constructs the components of cfg. problems are those reading cfg
// found; build adds what the backends (their options, the tenants using
// them) and the authenticators (key stores, CA bundles) find, and returns
// them all as one error, located in the file.
func build(cfg *config.Config, problems validate.Problems, d buildDeps) (*components, error) {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	p := &problems
	backends := vend.Build(cfg.Backends, vend.Deps{Logger: d.Logger, Metrics: d.Metrics, MinRemaining: cfg.Server.MinRemaining.D()}, p)
	for i, t := range cfg.Tenants {
		if tv, ok := backends[t.Backend].(vend.TenantValidator); ok {
			tv.ValidateTenant(t, p, validate.Join("tenants", i))
		}
	}
	p.Locate(cfg.Line)
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	c := &components{cfg: cfg, backends: backends}
	var err error
	c.worker, c.opened, err = cfg.Auth.BuildWith(auth.BuildDeps{Logger: d.Logger.Named("auth"), STSClient: d.STSClient, Metrics: d.Metrics})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	if c.admin, err = cfg.Admin.Build(auth.WithLogger(d.Logger)); err != nil {
		c.release()
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	return c, nil
}

// app is the wired dispenser: everything built once from a configuration.
type app struct {
	current     atomic.Pointer[config.Config]
	log         *zap.Logger
	metrics     *metrics.Metrics
	server      *api.Server
	vendor      vend.Router
	limiter     *ratelimit.Limiter
	revocations *revoke.Registry
	certs       *certReloader // nil without TLS
	auth        authResources
	deps        appDeps

	mu     sync.Mutex // serialises reload, run and close
	parts  []*part    // in construction order
	closed bool       // close has run: reload builds nothing

	readyMu  sync.Mutex // orders becoming ready against shutting down
	stopping bool

	trail        audit.Trail
	checkpointer *audit.Checkpointer
	// refuseUnanchored is audit.on_missing_anchor: refuse, read at start.
	refuseUnanchored bool
}

// appDeps are collaborators newApp builds itself in production and tests
// replace: the zero value is production.
type appDeps struct {
	// STSClient is the HTTP client of the auth.iam method (default: one
	// built from its configuration). Tests point it at a local STS while
	// requests keep naming the real STS hosts, so the endpoint allow-list
	// is exercised as in production.
	STSClient *http.Client
	// FreeSpace reads the SQLite audit volume's free space (default
	// statfs). Tests report a nearly full volume without filling one.
	FreeSpace diskspace.FreeFunc
	// StartupTimeout replaces startupTimeout (tests: a store that hangs
	// fails the start within seconds).
	StartupTimeout time.Duration
}

// startupTimeout is the bound of each store's opening at start.
func (d appDeps) startupTimeout() time.Duration {
	if d.StartupTimeout > 0 {
		return d.StartupTimeout
	}
	return startupTimeout
}

// part is one thing the app owns: a background loop run starts, what
// close releases, or both. close walks the parts backwards, stopping a
// part's loop before releasing it, so each part stops before anything
// built ahead of it that it uses.
type part struct {
	name    string
	loop    func(ctx context.Context)
	release func() error
	stop    func() // set by run: cancels the loop and waits for it
}

// add registers a part; loop or release may be nil.
func (a *app) add(name string, loop func(context.Context), release func() error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.parts = append(a.parts, &part{name: name, loop: loop, release: release})
}

// buildDeps are the components' collaborators when serving.
func (a *app) buildDeps() buildDeps {
	return buildDeps{Logger: a.log, Metrics: a.metrics, STSClient: a.deps.STSClient}
}

// newApp wires the dispenser from cfg. It does not listen.
func newApp(cfg *config.Config, log *zap.Logger) (*app, error) {
	return newAppWith(cfg, log, appDeps{})
}

// newAppWith is newApp with replaced collaborators (tests): it builds the
// components of cfg, then the app of them.
func newAppWith(cfg *config.Config, log *zap.Logger, deps appDeps) (*app, error) {
	m := metrics.New(version)
	c, err := build(cfg, validate.Problems{}, buildDeps{Logger: log, Metrics: m, STSClient: deps.STSClient})
	if err != nil {
		return nil, err
	}
	return newAppFrom(c, log, m, deps)
}

// newAppFrom wires the dispenser from components built with the app's
// logger and metrics m. It does not listen, and starts no background loop
// (run does). On error, everything it opened is closed again, the
// components' resources included.
func newAppFrom(c *components, log *zap.Logger, m *metrics.Metrics, deps appDeps) (_ *app, err error) {
	cfg := c.cfg
	a := &app{log: log, metrics: m, deps: deps}
	a.current.Store(cfg)
	a.auth.current = c.opened
	a.add("authenticators", nil, a.auth.closeAll)
	defer func() {
		if err != nil {
			_ = a.close()
		}
	}()
	// Backends whose options enable the credential cache (assume-role:
	// `cache.enabled`, default true) are wrapped in it here.
	caches := cache.WrapAll(c.backends, cfg.Server.MinRemaining.D(), cache.Deps{Logger: log.Named("cache"), Metrics: m})
	a.add("credential caches", nil, func() error { return closeFuncs(caches) })
	a.vendor = vend.Router(c.backends)
	names := map[string]bool{}
	for n := range c.backends {
		names[n] = true
	}
	rules, err := scope.Compile(cfg.Tenants, names)
	if err != nil {
		return nil, err
	}
	if cfg.Server.TLS.Enabled() {
		a.certs = &certReloader{m: m}
		crt, err := a.certs.read(cfg.Server.TLS)
		if err != nil {
			return nil, err
		}
		a.certs.install(crt)
	}
	if a.limiter, err = ratelimit.New(cfg.RateLimits, ratelimit.Options{Logger: log.Named("ratelimit"), Metrics: m}); err != nil {
		return nil, err
	}
	a.add("rate limiter", nil, a.limiter.Close)
	store, kill, err := a.openRevocations()
	if err != nil {
		return nil, err
	}
	writer, err := a.wireAudit()
	if err != nil {
		return nil, err
	}
	a.wireRevocations(store, kill, writer)
	a.server = api.New(api.Options{
		Logger:             log,
		Authenticator:      c.worker,
		AdminAuthenticator: c.admin,
		Rules:              rules,
		Vendor:             a.vendor,
		// Refusals past the denial-record budget (or with the audit
		// volume low) become summaries; issuances and revocation changes
		// are all recorded.
		Recorder:        announcingTrail{a.wireDenials(writer)},
		Audit:           &audit.Service{Trail: a.trail, Checkpointer: a.checkpointer, OriginBase: cfg.Audit.Checkpoint.Origin},
		MinRemaining:    cfg.Server.MinRemaining.D(),
		AllowedHosts:    cfg.Server.AllowedHosts,
		MaxBodyBytes:    cfg.Server.MaxBodyBytes,
		Correlate:       api.CorrelateSettings{MaxBodyBytes: cfg.Correlate.MaxBodyBytes, ClockSkew: cfg.Correlate.Skew()},
		ReplicaID:       cfg.Server.ReplicaID,
		OpenAPI:         dispenser.OpenAPI,
		Metrics:         m,
		Limiter:         a.limiter,
		Revocations:     a.revocations,
		AuthFailures:    authFailureGuard(cfg),
		AuthInFlight:    authInFlight(cfg),
		TrustedProxies:  trustedProxies(cfg),
		RevocationAdmin: a.revocations,
		Gate:            a.auditGate,
	})
	return a, nil
}

// wireAudit opens the audit store (creating and migrating it), the writer
// in front of it and the checkpointer and retention behind it, and makes
// the first checkpoint.
func (a *app) wireAudit() (*audit.Writer, error) {
	cfg := a.current.Load()
	alog := a.log.Named("audit")
	for _, w := range cfg.Audit.Warnings() {
		alog.Warn(w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.deps.startupTimeout())
	defer cancel()
	trail, err := openTrail(ctx, cfg, trailServe, func(problem string) {
		a.metrics.AuditFailure("index")
		alog.Error("audit query index inconsistent or failing (a row with no entry behind it, an index file not of this trail or edited; run dispenser audit verify)", zap.String("problem", problem))
	})
	if err != nil {
		return nil, err
	}
	a.trail = trail
	a.add("audit store", nil, trail.Close)
	signer, _, err := checkpointSigner(cfg, a.log)
	if err != nil {
		return nil, err
	}
	mirror, err := auditMirror(cfg.Audit.Mirror)
	if err != nil {
		return nil, err
	}
	if mirror != nil {
		a.add("audit mirror", nil, func() error { _ = mirror.Sync(); return nil })
	}
	cp := &audit.Checkpointer{
		Source: trail, Log: logName(cfg), Origin: audit.Origin(cfg.Audit.Checkpoint.Origin, logName(cfg)), Signer: signer,
		Anchors:  anchors(cfg),
		Interval: cfg.Audit.Checkpoint.Interval.D(), MaxRecords: cfg.Audit.Checkpoint.MaxRecords, Idle: cfg.Audit.Checkpoint.IdleInterval.D(),
		Metrics: a.metrics, Logger: alog,
	}
	a.checkpointer = cp
	a.refuseUnanchored = cfg.Audit.OnMissingAnchor == audit.OnMissingAnchorRefuse
	// The first checkpoint: the genesis of an empty log, or the unanchored
	// tail a crash left, reported and anchored at once; or the finding that
	// no anchor holds this log (logged by the checkpointer; Gate).
	rctx, rcancel := context.WithTimeout(context.Background(), a.deps.startupTimeout())
	if _, err := cp.Resume(rctx); err != nil && !errors.Is(err, audit.ErrAnchorMissing) {
		alog.Error("first audit checkpoint failed; retrying on the checkpoint cadence", zap.Error(err))
	}
	rcancel()
	// Stopping, the checkpointer signs and anchors a last checkpoint after
	// the writer (closed first) committed what was queued; its failure is
	// close's (serve then exits non-zero).
	var last error // the last checkpoint's, read once the loop ended
	a.add("audit checkpoints", func(ctx context.Context) { last = cp.Run(ctx) }, func() error { return last })
	if keep := cfg.Audit.Retention.D(); keep > 0 {
		rt := &audit.Retention{Source: trail, Log: cp.Log, Origin: cp.Origin, Signer: signer, Anchors: cp.Anchors, Keep: keep, Logger: cp.Logger}
		a.add("audit retention", func(ctx context.Context) { rt.Run(ctx, time.Hour) }, nil)
	}
	w := audit.NewWriter(trail, audit.WriterOptions{BatchSize: cfg.Audit.BatchSize, MaxWait: cfg.Audit.Wait(), Metrics: a.metrics, Mirror: mirror})
	a.add("audit writer", nil, w.Close)
	return w, nil
}

// auditMirror builds the logger audit.mirror writes every record to, or
// nil without one.
func auditMirror(path string) (*zap.Logger, error) {
	if path == "" {
		return nil, nil
	}
	zc := zap.NewProductionConfig()
	zc.OutputPaths = []string{path}
	zc.EncoderConfig.TimeKey = "logged_at"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Sampling = nil // every record, never sampled
	zc.DisableCaller, zc.DisableStacktrace = true, true
	mirror, err := zc.Build()
	if err != nil {
		return nil, fmt.Errorf("audit.mirror: %w", err)
	}
	return mirror, nil
}

// openRevocations opens the revocation store (in the audit database) and
// the AWS kill switch.
func (a *app) openRevocations() (revoke.Store, revoke.KillSwitch, error) {
	cfg := a.current.Load()
	ctx, cancel := context.WithTimeout(context.Background(), a.deps.startupTimeout())
	defer cancel()
	store, closeStore, err := openRevocationStore(ctx, cfg.Audit)
	if err != nil {
		return nil, nil, err
	}
	a.add("revocation store", nil, closeStore)
	kill, err := newKillSwitch(ctx, cfg.Revocation.AWSKillSwitch, a.current.Load)
	if err != nil {
		return nil, nil, err
	}
	return store, kill, nil
}

// wireRevocations builds the registry that polls the revocation store and
// records every change in the audit trail through recorder.
func (a *app) wireRevocations(store revoke.Store, kill revoke.KillSwitch, recorder *audit.Writer) {
	cfg := a.current.Load()
	// Every revocation change is a durable record in the audit trail
	// (outcome revoked/unrevoked), then a log line.
	journal := revoke.MultiJournal{
		revoke.AuditJournal{Recorder: recorder, RequestID: api.RequestID, ReplicaID: cfg.Server.ReplicaID},
		revoke.LogJournal{Logger: a.log.Named("revoke")},
	}
	// Past five missed polls (at least 10s) the list is stale and issuance
	// stops, so a replica cut off from the store never ignores revocations.
	maxAge := max(5*cfg.Revocation.PollInterval.D(), 10*time.Second)
	a.revocations = revoke.NewRegistry(revoke.Options{Store: store, Journal: journal, Kill: kill, Logger: a.log.Named("revoke"), Metrics: a.metrics, MaxAge: maxAge})
	poll := cfg.Revocation.PollInterval.D()
	a.add("revocation polling", func(ctx context.Context) { a.revocations.Run(ctx, poll) }, nil)
}

// openRevocationStore opens the revocation table in the audit database.
func openRevocationStore(ctx context.Context, c audit.Config) (revoke.Store, func() error, error) {
	switch c.Type {
	case "postgres":
		s, err := revokepg.Open(ctx, c.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("revocation store: %w", err)
		}
		return s, s.Close, nil
	default:
		s, err := revokesqlite.Open(ctx, c.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("revocation store: %w", err)
		}
		return s, s.Close, nil
	}
}

// newKillSwitch builds the AWS kill switch when configured. roles reads the
// current tenants, so a reload that adds a tenant covers its role.
func newKillSwitch(ctx context.Context, c *revoke.AWSKillSwitchConfig, current func() *config.Config) (revoke.KillSwitch, error) {
	if c == nil || !c.Enabled {
		return nil, nil
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.Region))
	if err != nil {
		return nil, fmt.Errorf("revocation.aws_kill_switch: %w", err)
	}
	client := iam.NewFromConfig(awsCfg, func(o *iam.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = &c.Endpoint
		}
	})
	return &awsdeny.KillSwitch{IAM: client, Roles: func(r revoke.Revocation) []string {
		var out []string
		for _, t := range current().Tenants {
			if t.RoleARN != "" && (r.Kind != revoke.KindOrg || t.Org == r.Value) {
				out = append(out, t.RoleARN)
			}
		}
		return out
	}}, nil
}

// volumeCheckInterval is how often the SQLite audit volume's free space is
// read (one statfs).
const volumeCheckInterval = 5 * time.Second

// wireDenials puts the denial-record budget in front of the audit writer
// and, on SQLite, the free-space guard of the audit volume. Both stop
// before the writer does (close walks the parts backwards), so the last
// summaries are written through it.
func (a *app) wireDenials(next *audit.Writer) *denials.Trail {
	cfg := a.current.Load()
	var low func() bool
	if cfg.Audit.Type == "sqlite" && cfg.Audit.MinFreeSpace != nil && *cfg.Audit.MinFreeSpace > 0 {
		g := diskspace.New(filepath.Dir(cfg.Audit.Path), uint64(*cfg.Audit.MinFreeSpace),
			diskspace.Options{Free: a.deps.FreeSpace, Metrics: a.metrics, Logger: a.log.Named("audit")})
		g.Check() // the first refusal already knows
		a.add("audit volume guard", func(ctx context.Context) { g.Run(ctx, volumeCheckInterval) }, nil)
		low = g.Low
	}
	lim := cfg.RateLimits.DenialRecords
	t := denials.New(denials.Options{Next: next, Expect: func() denials.Expectation { return next.Expect() }, Rate: lim.Rate, Burst: lim.Burst, Interval: cfg.RateLimits.DenialSummaryInterval.D(),
		Low: low, ReplicaID: cfg.Server.ReplicaID, Metrics: a.metrics, Logger: a.log.Named("audit")})
	a.add("denial summaries", t.Run, t.Close)
	return t
}

// The denial trail writes through the audit writer and announces to it.
var (
	_ denials.Recorder    = (*audit.Writer)(nil)
	_ denials.Expectation = (*audit.Expected)(nil)
)

// announcingTrail lets the API announce each request's record through the
// denial budget to the audit writer (api.Announcer), so the writer's group
// commit waits only for requests actually on their way.
type announcingTrail struct{ *denials.Trail }

// Expect implements api.Announcer.
func (t announcingTrail) Expect() api.Expectation { return t.Trail.Expect() }

var _ api.Announcer = announcingTrail{}

// run starts every background loop the app owns (revocation polling,
// audit checkpoints and retention, the audit volume guard, denial
// summaries). Each runs until ctx ends or close stops it, in close's
// order; serve passes a context only close ends, so the loops outlive the
// drain of in-flight requests. run is idempotent, and starts nothing once
// close has run.
func (a *app) run(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.parts {
		if p.loop == nil || p.stop != nil {
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func(loop func(context.Context)) { defer close(done); loop(lctx) }(p.loop)
		p.stop = func() { cancel(); <-done }
	}
}

// start makes the app ready once every backend is initialised.
func (a *app) start(ctx context.Context) error {
	if err := a.vendor.Ready(ctx); err != nil {
		return err
	}
	// A replica that cannot see the revocation list must not vend.
	if err := a.revocations.Ready(ctx); err != nil {
		return fmt.Errorf("revocation list: %w", err)
	}
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	if a.stopping {
		// Shutdown began while the checks ran: stay out of service.
		return errors.New("shutting down")
	}
	a.server.SetReady(true)
	return nil
}

// stopServing takes the replica out of service for good: /readyz answers
// 503 ("stopping") and a start still in progress cannot make it ready
// again. Requests that still arrive are served (shutdown drains them).
func (a *app) stopServing() {
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	a.stopping = true
	a.server.SetStopping()
}

// close stops the app: the parts backwards, each one's loop before its
// release. It returns what failed (the last audit checkpoint, a store's
// close), each also logged. It is idempotent.
func (a *app) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for i := len(a.parts) - 1; i >= 0; i-- {
		p := a.parts[i]
		if p.stop != nil {
			p.stop()
		}
		if p.release != nil {
			if err := p.release(); err != nil {
				a.log.Warn("close", zap.String("part", p.name), zap.Error(err))
				errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
			}
		}
	}
	a.parts, a.closed = nil, true
	return errors.Join(errs...)
}

// authResources are what the authenticator chains opened (a SQL key
// store's pool). A reload builds a new chain; the one it replaces may
// still be finishing requests, so its resources are closed one grace
// period later rather than at once, and not left open until exit (a
// dispenser reloaded every few minutes would pile up connections).
type authResources struct {
	mu      sync.Mutex
	current []io.Closer
	retired [][]io.Closer
	grace   time.Duration // default authRetireGrace
}

// authRetireGrace outlasts any request: server.write_timeout is at most
// a few minutes and a key lookup happens at its start.
const authRetireGrace = 5 * time.Minute

// replace makes next current and closes the previous set after the grace
// period.
func (r *authResources) replace(next []io.Closer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current
	r.current = next
	if len(old) == 0 {
		return
	}
	r.retired = append(r.retired, old)
	grace := r.grace
	if grace <= 0 {
		grace = authRetireGrace
	}
	time.AfterFunc(grace, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, set := range r.retired {
			if len(set) > 0 && &set[0] == &old[0] {
				closeAll(set)
				r.retired = append(r.retired[:i], r.retired[i+1:]...)
				return
			}
		}
	})
}

// closeAll closes everything still open (at exit).
func (r *authResources) closeAll() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, set := range r.retired {
		closeAll(set)
	}
	closeAll(r.current)
	r.retired, r.current = nil, nil
	return nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// closeFuncs calls every close function, returning their errors joined.
func closeFuncs(fs []func() error) error {
	var errs []error
	for _, f := range fs {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}
