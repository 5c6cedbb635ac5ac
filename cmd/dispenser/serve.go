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

	dispenser "github.com/vtk/dispenser"
	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"

	// Backends register themselves.
	_ "github.com/vtk/dispenser/internal/vend/mock"
	_ "github.com/vtk/dispenser/internal/vend/static"
)

// app is the wired dispenser: everything built once from a configuration.
type app struct {
	cfg    *config.Config
	log    *zap.Logger
	server *api.Server
	vendor vend.Router
	closer []func() error

	metrics      *metrics.Metrics // nil until the metrics endpoint is wired
	trail        audit.Trail
	checkpointer *audit.Checkpointer
}

// newApp wires the dispenser from cfg. It does not listen.
func newApp(cfg *config.Config, log *zap.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log}
	var p validate.Problems
	backends := vend.Build(cfg.Backends, vend.Deps{Logger: log}, &p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	a.vendor = vend.Router(backends)
	names := map[string]bool{}
	for n := range backends {
		names[n] = true
	}
	rules, err := scope.Compile(cfg.Tenants, names)
	if err != nil {
		return nil, err
	}
	chain, err := cfg.Auth.Build()
	if err != nil {
		return nil, err
	}
	admin, err := cfg.Admin.Build()
	if err != nil {
		return nil, err
	}
	recorder, err := a.wireAudit(context.Background())
	if err != nil {
		return nil, err
	}
	a.server = api.New(api.Options{
		Logger:             log,
		Authenticator:      chain,
		AdminAuthenticator: admin,
		Rules:              rules,
		Vendor:             a.vendor,
		Recorder:           recorder,
		Audit:              &audit.Service{Trail: a.trail, Checkpointer: a.checkpointer, OriginBase: cfg.Audit.Checkpoint.Origin},
		MinRemaining:       cfg.Server.MinRemaining.D(),
		AllowedHosts:       cfg.Server.AllowedHosts,
		MaxBodyBytes:       cfg.Server.MaxBodyBytes,
		ReplicaID:          cfg.Server.ReplicaID,
		OpenAPI:            dispenser.OpenAPI,
	})
	return a, nil
}

// start makes the app ready once every backend is initialised.
func (a *app) start(ctx context.Context) error {
	if err := a.vendor.Ready(ctx); err != nil {
		return err
	}
	a.server.SetReady(true)
	return nil
}

func (a *app) close() {
	for i := len(a.closer) - 1; i >= 0; i-- {
		if err := a.closer[i](); err != nil {
			a.log.Warn("close", zap.Error(err))
		}
	}
}

// reload re-reads the configuration and swaps what can change without a
// restart; a bad file is rejected and the old configuration keeps serving.
func (a *app) reload() error {
	cfg, err := loadConfig(a.cfg.Path)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for n := range a.vendor {
		names[n] = true
	}
	rules, err := scope.Compile(cfg.Tenants, names)
	if err != nil {
		return err
	}
	for name, v := range a.vendor {
		if r, ok := v.(interface{ Reload() error }); ok {
			if err := r.Reload(); err != nil {
				return fmt.Errorf("backend %s: %w", name, err)
			}
		}
	}
	a.server.SetRules(rules)
	return nil
}

func newLogger(c config.LogConfig) (*zap.Logger, error) {
	var zc zap.Config
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
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
	return zc.Build()
}

// certReloader serves the current certificate and reloads it on demand.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func (c *certReloader) load() error {
	crt, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cert.Store(&crt)
	return nil
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "", "configuration file")
	listen := fs.String("listen", "", "override server.listen")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "serve: --config is required")
		return 2
	}
	cfg, err := loadConfigWithListen(*path, *listen)
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
	var certs *certReloader
	if cfg.Server.TLS.Enabled() {
		certs = &certReloader{certFile: cfg.Server.TLS.CertFile, keyFile: cfg.Server.TLS.KeyFile}
		if err := certs.load(); err != nil {
			fmt.Fprintln(stderr, "server.tls:", err)
			return 1
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	} else if host, _, _ := net.SplitHostPort(cfg.Server.Listen); !config.IsLoopback(host) {
		log.Warn("serving plain HTTP on a non-loopback address: behind_tls_proxy is set, so a TLS-terminating proxy must front this listener")
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		fmt.Fprintln(stderr, "listen:", err)
		return 1
	}
	scheme := "http"
	if certs != nil {
		scheme = "https"
	}
	log.Info("dispenser listening", zap.String("addr", ln.Addr().String()), zap.String("version", version), zap.Bool("tls", certs != nil))
	if cfg.Auth.JWT != nil && cfg.Auth.JWT.SigningKeyFile != "" {
		fmt.Fprintf(stdout, "dispenser listening on %s://%s\nget a development token:\n  TOKEN=$(go run ./cmd/dispenser token --config %s --subject worker-1 --org ORG)\n  curl -s -H \"Authorization: Bearer $TOKEN\" '%s://%s/credentials?operation=get&location=s3://BUCKET/PREFIX/'\n",
			scheme, ln.Addr(), *path, scheme, ln.Addr())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		if certs != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	go func() {
		startCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for {
			if err := a.start(startCtx); err == nil {
				log.Info("dispenser ready")
				return
			} else if startCtx.Err() != nil {
				log.Error("dispenser did not become ready", zap.Error(err))
				return
			} else {
				log.Warn("backend not ready yet", zap.Error(err))
			}
			time.Sleep(time.Second)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			if err := a.reload(); err != nil {
				log.Error("configuration reload rejected; keeping the running configuration", zap.Error(err))
			} else {
				log.Info("configuration reloaded")
			}
			if certs != nil {
				if err := certs.load(); err != nil {
					log.Error("TLS certificate reload failed; keeping the old certificate", zap.Error(err))
				}
			}
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("server stopped", zap.Error(err))
				return 1
			}
			return 0
		case <-ctx.Done():
			log.Info("shutting down: finishing in-flight requests")
			a.server.SetReady(false)
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
func loadConfigWithListen(path, listen string) (*config.Config, error) {
	if listen == "" {
		return loadConfig(path)
	}
	c, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	c.Server.Listen = listen
	var p validate.Problems
	c.Validate(&p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return c, nil
}
