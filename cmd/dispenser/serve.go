package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	dispenser "github.com/vtk/dispenser"
	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/diskspace"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/ratelimit"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/cache"

	// Backends register themselves.
	_ "github.com/vtk/dispenser/internal/vend/assumerole"
	_ "github.com/vtk/dispenser/internal/vend/mock"
	_ "github.com/vtk/dispenser/internal/vend/static"
)

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
	closer      []func() error
	reloadMu    sync.Mutex // serialises reload and close
	auth        authResources
	readyMu     sync.Mutex // orders becoming ready against shutting down
	stopping    bool

	trail        audit.Trail
	checkpointer *audit.Checkpointer
	// refuseUnanchored is audit.on_missing_anchor: refuse, read at start.
	refuseUnanchored bool
	deps             appDeps
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
}

// authDeps are the authenticator dependencies of a build or a reload.
func (a *app) authDeps() auth.BuildDeps {
	return auth.BuildDeps{Logger: a.log.Named("auth"), STSClient: a.deps.STSClient, Metrics: a.metrics}
}

// newApp wires the dispenser from cfg. It does not listen.
func newApp(cfg *config.Config, log *zap.Logger) (*app, error) {
	return newAppWith(cfg, log, appDeps{})
}

// newAppWith is newApp with replaced collaborators (tests).
func newAppWith(cfg *config.Config, log *zap.Logger, deps appDeps) (_ *app, err error) {
	a := &app{log: log, metrics: metrics.New(version), deps: deps}
	// Whatever was opened before a failure (caches, key stores, the
	// limiter, stores) is closed again.
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.current.Store(cfg)
	var p validate.Problems
	backends := vend.Build(cfg.Backends, vend.Deps{Logger: log, Metrics: a.metrics, MinRemaining: cfg.Server.MinRemaining.D()}, &p)
	if err = p.Err(); err != nil {
		return nil, err
	}
	// Backends whose options enable the credential cache (assume-role:
	// `cache.enabled`, default true) are wrapped in it here.
	a.closer = append(a.closer, cache.WrapAll(backends, cfg.Server.MinRemaining.D(), cache.Deps{Logger: log.Named("cache"), Metrics: a.metrics})...)
	a.vendor = vend.Router(backends)
	names := map[string]bool{}
	for n := range backends {
		names[n] = true
	}
	rules, err := scope.Compile(cfg.Tenants, names)
	if err != nil {
		return nil, err
	}
	chain, closers, err := cfg.Auth.BuildWith(a.authDeps())
	if err != nil {
		return nil, err
	}
	a.auth.current = closers
	a.closer = append(a.closer, a.auth.closeAll)
	admin, err := cfg.Admin.Build(auth.WithLogger(log))
	if err != nil {
		return nil, err
	}
	if cfg.Server.TLS.Enabled() {
		a.certs = &certReloader{m: a.metrics}
		crt, err := a.certs.read(cfg.Server.TLS)
		if err != nil {
			return nil, err
		}
		a.certs.install(crt)
	}
	a.limiter, err = ratelimit.New(cfg.RateLimits, ratelimit.Options{Logger: log.Named("ratelimit"), Metrics: a.metrics})
	if err != nil {
		return nil, err
	}
	a.closer = append(a.closer, a.limiter.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, closeStore, err := openRevocationStore(ctx, cfg.Audit)
	if err != nil {
		return nil, err
	}
	a.closer = append(a.closer, closeStore)
	kill, err := newKillSwitch(ctx, cfg.Revocation.AWSKillSwitch, a.current.Load)
	if err != nil {
		return nil, err
	}
	recorder, err := a.wireAudit(context.Background())
	if err != nil {
		return nil, err
	}
	// Every revocation change is a durable record in the audit trail
	// (outcome revoked/unrevoked), then a log line.
	journal := revoke.MultiJournal{
		revoke.AuditJournal{Recorder: recorder, RequestID: api.RequestID, ReplicaID: cfg.Server.ReplicaID},
		revoke.LogJournal{Logger: log.Named("revoke")},
	}
	// Past five missed polls (at least 10s) the list is stale and issuance
	// stops, so a replica cut off from the store never ignores revocations.
	maxAge := max(5*cfg.Revocation.PollInterval.D(), 10*time.Second)
	a.revocations = revoke.NewRegistry(revoke.Options{Store: store, Journal: journal, Kill: kill, Logger: log.Named("revoke"), Metrics: a.metrics, MaxAge: maxAge})
	// Refusals past the denial-record budget (or with the audit volume
	// low) become summaries; issuances and revocation changes are all
	// recorded.
	decisions := a.wireDenials(recorder)
	a.server = api.New(api.Options{
		Logger:             log,
		Authenticator:      chain,
		AdminAuthenticator: admin,
		Rules:              rules,
		Vendor:             a.vendor,
		Recorder:           announcingTrail{decisions},
		Audit:              &audit.Service{Trail: a.trail, Checkpointer: a.checkpointer, OriginBase: cfg.Audit.Checkpoint.Origin},
		MinRemaining:       cfg.Server.MinRemaining.D(),
		AllowedHosts:       cfg.Server.AllowedHosts,
		MaxBodyBytes:       cfg.Server.MaxBodyBytes,
		Correlate:          api.CorrelateSettings{MaxBodyBytes: cfg.Correlate.MaxBodyBytes, ClockSkew: cfg.Correlate.Skew()},
		ReplicaID:          cfg.Server.ReplicaID,
		OpenAPI:            dispenser.OpenAPI,
		Metrics:            a.metrics,
		Limiter:            a.limiter,
		Revocations:        a.revocations,
		AuthFailures:       authFailureGuard(cfg),
		TrustedProxies:     trustedProxies(cfg),
		RevocationAdmin:    a.revocations,
		Gate:               a.auditGate,
	})
	return a, nil
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
// 503 and a start still in progress cannot make it ready again.
func (a *app) stopServing() {
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	a.stopping = true
	a.server.SetReady(false)
}

// run starts the background loops (revocation polling) until ctx ends.
func (a *app) run(ctx context.Context) {
	go a.revocations.Run(ctx, a.current.Load().Revocation.PollInterval.D())
}

func (a *app) close() {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	for i := len(a.closer) - 1; i >= 0; i-- {
		if err := a.closer[i](); err != nil {
			a.log.Warn("close", zap.Error(err))
		}
	}
	a.closer = nil // close is idempotent
}

// newLogger builds the configured logger; opts are applied last (tests
// observe its entries).
func newLogger(c config.LogConfig, opts ...zap.Option) (*zap.Logger, error) {
	var zc zap.Config
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		// The development preset adds a stack trace to every warning,
		// which buries one line ("generated an audit checkpoint signing
		// key") under eight frames, and makes DPanic panic. A person
		// reading the console gets stack traces for panics only.
		zc.Development = false
		zc.DisableStacktrace = true
		opts = append([]zap.Option{zap.AddStacktrace(zapcore.DPanicLevel)}, opts...)
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "time"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	return zc.Build(opts...)
}

// authFailureGuard builds the per-client budget of failed authentications,
// or returns nil (no guard) when it is turned off.
//
// Unset, it is on by default, keyed on the TCP peer, the address a trusted
// proxy forwards or the caller a trusted gateway asserts. Only behind a
// TLS proxy the dispenser does not trust to forward addresses is it off:
// every caller would have the proxy's address, and one misbehaving worker
// would get every worker refused.
func authFailureGuard(cfg *config.Config) api.AuthFailureGuard {
	l := authFailureLimit(cfg)
	if l == nil {
		return nil
	}
	return ratelimit.NewFailureGuard(*l, 100000, nil)
}

// authFailureLimit is the failed-authentication budget in effect, nil
// when there is none.
func authFailureLimit(cfg *config.Config) *ratelimit.Limit {
	l := cfg.RateLimits.AuthFailuresPerClient
	if l == nil {
		if behindUntrustedProxy(cfg) {
			return nil
		}
		d := ratelimit.DefaultAuthFailures()
		l = &d
	}
	if !l.Enabled() {
		return nil
	}
	return l
}

// serverTLSConfig is the listener's TLS configuration: the server
// certificate and, when auth.mtls is configured, the client CA bundle and
// whether a client certificate is optional or required. Those are taken
// from the current configuration at each handshake (cached per
// configuration), so a reload that adds or removes a CA applies to new
// connections. The first configuration is checked at once.
func serverTLSConfig(current func() *config.Config, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) (*tls.Config, error) {
	type settings struct {
		cfg *config.Config
		tc  *tls.Config
	}
	var cache atomic.Pointer[settings]
	build := func(cfg *config.Config) (*tls.Config, error) {
		if c := cache.Load(); c != nil && c.cfg == cfg {
			return c.tc, nil
		}
		// NextProtos as http.Server.ServeTLS sets them on the base config:
		// a config returned per handshake replaces it, ALPN included.
		tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, NextProtos: []string{"h2", "http/1.1"}}
		if m := cfg.Auth.MTLS; m != nil {
			pool, clientAuth, err := m.TLSServerSettings()
			if err != nil {
				return nil, err
			}
			tc.ClientCAs, tc.ClientAuth = pool, clientAuth
		}
		cache.Store(&settings{cfg: cfg, tc: tc})
		return tc, nil
	}
	first, err := build(current())
	if err != nil {
		return nil, err
	}
	tc := first.Clone()
	tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return build(current()) }
	return tc, nil
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "", "configuration file")
	listen := fs.String("listen", "", "override server.listen")
	adminListen := fs.String("admin-listen", "", "override server.admin_listen (/metrics, /healthz, /readyz)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "serve: --config is required")
		return 2
	}
	// SIGHUP is taken from the start: its default action terminates the
	// process, and a reload signal sent while the dispenser is still
	// connecting to its stores must not kill it (it reloads once serving).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfigWithListen(*path, *listen, *adminListen)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer func() { _ = log.Sync() }()
	a, err := newApp(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer a.close()

	srv := &http.Server{
		Handler:           a.server.Handler(),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.Server.ReadTimeout.D(),
		WriteTimeout:      cfg.Server.WriteTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	certs := a.certs
	if certs != nil {
		if srv.TLSConfig, err = serverTLSConfig(a.current.Load, certs.get); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	} else if host, _, _ := net.SplitHostPort(cfg.Server.Listen); !config.IsLoopback(host) {
		log.Warn("serving plain HTTP on a non-loopback address: behind_tls_proxy is set, so a TLS-terminating proxy must front this listener")
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		fmt.Fprintln(stderr, "listen:", err)
		return 1
	}
	adminLn, err := net.Listen("tcp", cfg.Server.AdminListen)
	if err != nil {
		_ = ln.Close()
		fmt.Fprintln(stderr, "admin listen:", err)
		return 1
	}
	capped, cappedAdmin, err := a.capListeners(ln, adminLn)
	if err != nil {
		_ = ln.Close()
		_ = adminLn.Close()
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	ln, adminLn = capped, cappedAdmin
	srv.ConnState = capped.ConnState
	if behindUntrustedProxy(cfg) {
		log.Warn("behind_tls_proxy without server.trusted_proxies: every caller has the proxy's address, so the failed-authentication budget is off unless set explicitly and connections are not capped per client; list the proxy in server.trusted_proxies")
	}
	if host, _, _ := net.SplitHostPort(cfg.Server.AdminListen); !config.IsLoopback(host) {
		log.Warn("the admin listener (/metrics, /healthz, /readyz) has no authentication and listens beyond loopback: restrict it with a network policy",
			zap.String("addr", adminLn.Addr().String()))
	}
	adminSrv := a.adminServer()
	adminSrv.ConnState = cappedAdmin.ConnState
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	defer adminSrv.Close()
	scheme := "http"
	if certs != nil {
		scheme = "https"
	}
	// The pid is the process SIGHUP must reach: under `go run`, $! is
	// the go tool, not the dispenser.
	log.Info("dispenser listening", zap.String("addr", ln.Addr().String()), zap.String("admin_addr", adminLn.Addr().String()),
		zap.String("version", version), zap.Bool("tls", certs != nil), zap.Int("pid", os.Getpid()))
	if cfg.Auth.JWT != nil && cfg.Auth.JWT.SigningKeyFile != "" {
		fmt.Fprintf(stdout, "dispenser listening on %s://%s\nget a development token:\n  TOKEN=$(go run ./cmd/dispenser token --config %s --subject worker-1 --org ORG)\n  curl -s -H \"Authorization: Bearer $TOKEN\" '%s://%s/credentials?operation=get&location=s3://BUCKET/PREFIX/'\n",
			scheme, ln.Addr(), *path, scheme, ln.Addr())
	}

	if s := cfg.Auth.SigV4; s != nil {
		fmt.Fprintf(stdout, "SigV4 (region %s, service %s): create a key with\n  go run ./cmd/dispenser keys create --config %s --name worker-1 --org ORG\n", s.Region, s.Service, *path)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a.run(ctx)
	if cfg.Server.WatchConfig {
		if err := a.watchConfig(ctx, *path); err != nil {
			log.Error("configuration watch not started; SIGHUP still reloads", zap.Error(err))
		}
	}
	errc := make(chan error, 1)
	go func() {
		if certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	// Become ready as soon as every backend is: keep trying (base
	// credentials may arrive late, e.g. IRSA) with backoff until shutdown;
	// /readyz answers 503 meanwhile.
	go func() {
		backoff := time.Second
		for {
			attempt, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := a.start(attempt)
			cancel()
			if err == nil {
				log.Info("dispenser ready")
				return
			}
			log.Warn("not ready yet; retrying", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	for {
		select {
		case <-hup:
			a.logReload(a.reload())
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("server stopped", zap.Error(err))
				return 1
			}
			return 0
		case <-ctx.Done():
			log.Info("shutting down: finishing in-flight requests")
			a.stopServing()
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Error("shutdown", zap.Error(err))
				return 1
			}
			log.Info("shutdown complete")
			return 0
		}
	}
}

// loadConfigWithListen applies --listen before validation, so the
// loopback-without-TLS rule judges the address actually used.
func loadConfigWithListen(path, listen string, adminListen ...string) (*config.Config, error) {
	return loadConfig(path, listenOverride(listen, adminListen...))
}

// listenOverride applies --listen and --admin-listen before validation (so
// the checks judge the addresses actually used) and again on every reload.
func listenOverride(listen string, adminListen ...string) func(*config.Config) {
	return func(c *config.Config) {
		if listen != "" {
			c.Server.Listen = listen
		}
		if len(adminListen) > 0 && adminListen[0] != "" {
			c.Server.AdminListen = adminListen[0]
		}
	}
}
