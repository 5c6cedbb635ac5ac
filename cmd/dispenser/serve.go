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
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/connlimit"
	"github.com/vtk/dispenser/internal/metrics"
)

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
		return parseExit(err, 2)
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
	cfg, problems, err := readConfig(*path, listenOverride(*listen, *adminListen))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The logger is built from a valid log section only; with problems,
	// build reports them all and nothing is logged.
	log := zap.NewNop()
	if problems.Err() == nil {
		if log, err = newLogger(cfg.Log); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer func() { _ = log.Sync() }()
	}
	m := metrics.New(version)
	c, err := build(cfg, problems, buildDeps{Logger: log, Metrics: m})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	a, err := newAppFrom(c, log, m, appDeps{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	code := a.serve(*path, hup, stdout, stderr)
	// Closing writes the last records and anchors the last checkpoint: a
	// failure there is a failed stop, whatever the drain did.
	if err := a.close(); err != nil {
		fmt.Fprintln(stderr, "serve: stopping:", err)
		return 1
	}
	if code == 0 {
		log.Info("shutdown complete")
	}
	return code
}

// serve listens, runs the background loops and serves until SIGINT or
// SIGTERM, reloading on SIGHUP (and file changes with watch_config), then
// drains in-flight requests. It returns the exit code; the caller closes
// the app (and exits non-zero if that fails).
func (a *app) serve(path string, hup <-chan os.Signal, stdout, stderr io.Writer) int {
	// The server section is restart-only: stop with the settings the
	// listeners start with, whatever a reload loads later.
	settings := a.current.Load().Server
	srv, err := a.apiServer()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ln, adminLn, err := a.listen()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv.ConnState = ln.ConnState
	adminSrv := a.adminServer()
	adminSrv.ConnState = adminLn.ConnState
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	defer adminSrv.Close()
	a.announce(stdout, path, ln.Addr(), adminLn.Addr())
	// The loops live until close stops them, each in its order: a signal
	// only begins the shutdown, and the last checkpoint must come after
	// the drained requests' records.
	a.run(context.Background())
	// The first SIGINT or SIGTERM begins the shutdown (ctx ends); a second
	// one cuts its waits short.
	stopSig := make(chan os.Signal, 2)
	signal.Notify(stopSig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stopSig)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-stopSig:
			stop()
		case <-ctx.Done():
		}
	}()
	if a.current.Load().Server.WatchConfig {
		if err := a.watchConfig(ctx, path); err != nil {
			a.log.Error("configuration watch not started; SIGHUP still reloads", zap.Error(err))
		}
	}
	errc := make(chan error, 1)
	go func() {
		if a.certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	go a.becomeReady(ctx)
	return a.serveUntilStopped(ctx, srv, settings, hup, stopSig, errc)
}

// apiServer is the API listener's server, with TLS when configured.
func (a *app) apiServer() (*http.Server, error) {
	cfg := a.current.Load()
	srv := &http.Server{
		Handler:           a.server.Handler(),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.Server.ReadTimeout.D(),
		WriteTimeout:      cfg.Server.WriteTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          zap.NewStdLog(a.log.Named("http")),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: cfg.Server.MaxConcurrentStreams},
	}
	if a.certs != nil {
		tc, err := serverTLSConfig(a.current.Load, a.certs.get)
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = tc
	} else if host, _, _ := net.SplitHostPort(cfg.Server.Listen); !config.IsLoopback(host) {
		a.log.Warn("serving plain HTTP on a non-loopback address: behind_tls_proxy is set, so a TLS-terminating proxy must front this listener")
	}
	return srv, nil
}

// listen opens the API and admin listeners, capped, and warns about what
// their settings leave open.
func (a *app) listen() (*connlimit.Listener, *connlimit.Listener, error) {
	cfg := a.current.Load()
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Server.AdminListen)
	if err != nil {
		_ = ln.Close()
		return nil, nil, fmt.Errorf("admin listen: %w", err)
	}
	capped, cappedAdmin, err := a.capListeners(ln, adminLn)
	if err != nil {
		_ = ln.Close()
		_ = adminLn.Close()
		return nil, nil, fmt.Errorf("serve: %w", err)
	}
	if behindUntrustedProxy(cfg) {
		a.log.Warn("behind_tls_proxy without server.trusted_proxies: every caller has the proxy's address, so the failed-authentication budget is off unless set explicitly and connections are not capped per client; list the proxy in server.trusted_proxies")
	}
	if host, _, _ := net.SplitHostPort(cfg.Server.AdminListen); !config.IsLoopback(host) {
		a.log.Warn("the admin listener (/metrics, /healthz, /readyz) has no authentication and listens beyond loopback: restrict it with a network policy",
			zap.String("addr", cappedAdmin.Addr().String()))
	}
	return capped, cappedAdmin, nil
}

// announce logs the listening addresses and prints how to get a
// development token or SigV4 key.
func (a *app) announce(stdout io.Writer, path string, addr, adminAddr net.Addr) {
	cfg := a.current.Load()
	scheme := "http"
	if a.certs != nil {
		scheme = "https"
	}
	// The pid is the process SIGHUP must reach: under `go run`, $! is
	// the go tool, not the dispenser.
	a.log.Info("dispenser listening", zap.String("addr", addr.String()), zap.String("admin_addr", adminAddr.String()),
		zap.String("version", version), zap.Bool("tls", a.certs != nil), zap.Int("pid", os.Getpid()))
	if cfg.Auth.JWT != nil && cfg.Auth.JWT.SigningKeyFile != "" {
		fmt.Fprintf(stdout, "dispenser listening on %s://%s\nget a development token:\n  TOKEN=$(go run ./cmd/dispenser token --config %s --subject worker-1 --org ORG)\n  curl -s -H \"Authorization: Bearer $TOKEN\" '%s://%s/credentials?operation=get&location=s3://BUCKET/PREFIX/'\n",
			scheme, addr, path, scheme, addr)
	}
	if s := cfg.Auth.SigV4; s != nil {
		fmt.Fprintf(stdout, "SigV4 (region %s, service %s): create a key with\n  go run ./cmd/dispenser keys create --config %s --name worker-1 --org ORG\n", s.Region, s.Service, path)
	}
}

// becomeReady makes the app ready as soon as every backend is: it keeps
// trying (base credentials may arrive late, e.g. IRSA) with backoff until
// ctx ends; /readyz answers 503 meanwhile.
func (a *app) becomeReady(ctx context.Context) {
	backoff := time.Second
	for {
		attempt, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.start(attempt)
		cancel()
		if err == nil {
			a.log.Info("dispenser ready")
			return
		}
		a.log.Warn("not ready yet; retrying", zap.Error(err), zap.Duration("retry_in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// serveUntilStopped reloads on SIGHUP until the server stops or ctx ends
// (SIGINT, SIGTERM); then it stops (shutdown), again taking a second
// signal.
func (a *app) serveUntilStopped(ctx context.Context, srv *http.Server, settings config.ServerConfig, hup, again <-chan os.Signal, errc <-chan error) int {
	for {
		select {
		case <-hup:
			a.logReload(a.reload())
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("server stopped", zap.Error(err))
				return 1
			}
			return 0
		case <-ctx.Done():
			return a.shutdown(srv, settings, again)
		}
	}
}

// shutdown takes the replica out of service (/readyz answers 503) and
// keeps serving for server.shutdown_delay, so load balancers stop sending
// it connections before its listener closes; then it closes the listener
// and drains in-flight requests within server.shutdown_timeout. A signal
// on again cuts the delay short, or the drain (closing the connections of
// requests still in flight). Past the timeout too the remaining
// connections are closed, so that no answer leaves after the stores close.
// It returns the exit code: 1 when requests were cut off.
func (a *app) shutdown(srv *http.Server, s config.ServerConfig, again <-chan os.Signal) int {
	a.stopServing()
	if d := s.ShutdownDelay.D(); d > 0 {
		a.log.Info("shutting down: /readyz answers 503; serving on while load balancers drain this replica", zap.Duration("shutdown_delay", d))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-again:
			t.Stop()
			a.log.Warn("second signal: not waiting for load balancers to drain this replica")
		}
	}
	a.log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout.D())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	var err error
	select {
	case err = <-done:
	case <-again:
		err = errors.New("second signal: closing the connections of requests still in flight")
	}
	if err != nil {
		a.log.Error("shutdown", zap.Error(err))
		_ = srv.Close()
		return 1
	}
	a.log.Info("in-flight requests finished; writing the last audit records and checkpoint")
	return 0
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
