package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
)

// certReloader serves the current certificate and reloads it on demand.
type certReloader struct {
	m    *metrics.Metrics
	cert atomic.Pointer[tls.Certificate]
}

// read loads a key pair without installing it.
func (c *certReloader) read(t config.TLSConfig) (*tls.Certificate, error) {
	crt, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	return &crt, nil
}

// install makes crt the served certificate and publishes its expiry.
func (c *certReloader) install(crt *tls.Certificate) {
	c.cert.Store(crt)
	if crt.Leaf != nil && c.m != nil {
		c.m.TLSCertExpiry.Set(float64(crt.Leaf.NotAfter.Unix()))
	}
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }

// reload re-reads the configuration and swaps, all at once, what can change
// without a restart: tenant rules, worker and admin authenticators (keys,
// JWKS, CA bundles), rate limits, backends' own files (static credentials)
// and the TLS certificate. Everything is built and checked before anything
// is swapped; a bad file is rejected, its errors returned, and the running
// configuration keeps serving.
func (a *app) reload() (err error) {
	// SIGHUP and the file watch may both trigger a reload.
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		// Shutdown ended; what a reload built would never be closed.
		return errors.New("shutting down: reload ignored")
	}
	defer func() {
		result := "ok"
		if err != nil {
			result = "rejected"
		}
		a.metrics.ConfigReloads.WithLabelValues(result).Inc()
	}()
	old := a.current.Load()
	// The listener is not rebuilt on reload: judge the file with the
	// address actually in use (which may come from --listen).
	cfg, problems, err := readConfig(old.Path, listenOverride(old.Server.Listen, old.Server.AdminListen))
	if err != nil {
		return err
	}
	// The backends are built to check the file (their options, the tenants
	// naming them) but not swapped in: they change only on restart.
	c, err := build(cfg, problems, a.buildDeps())
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.release() // a rejected reload keeps nothing it opened
			return
		}
		// The previous chain may still serve in-flight requests, so what
		// it opened (a SQL key store) is closed a grace period later.
		a.auth.replace(c.opened)
	}()
	// Tenants may only name the backends running.
	names := map[string]bool{}
	for n := range a.vendor {
		names[n] = true
	}
	rules, err := scope.Compile(cfg.Tenants, names)
	if err != nil {
		return err
	}
	var crt *tls.Certificate
	if a.certs != nil {
		if !cfg.Server.TLS.Enabled() {
			return fmt.Errorf("server.tls: TLS cannot be turned off by a reload; restart instead")
		}
		if crt, err = a.certs.read(cfg.Server.TLS); err != nil {
			return err
		}
	}
	// Backends reload their own files (static credentials) last among the
	// checks: each swaps atomically on success and keeps its old state on
	// error.
	if err := a.vendor.Reload(); err != nil {
		return err
	}
	a.server.SetRules(rules)
	a.server.SetAuthenticator(c.worker, c.admin)
	a.limiter.SetConfig(cfg.RateLimits)
	if crt != nil {
		a.certs.install(crt)
	}
	a.current.Store(cfg)
	for _, f := range restartOnly(old, cfg) {
		a.log.Warn("configuration reloaded, but this setting only changes on restart", zap.String("field", f))
	}
	return nil
}

// restartOnly lists changed settings a reload does not apply.
func restartOnly(old, cur *config.Config) []string {
	var out []string
	check := func(field string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, field)
		}
	}
	// The server section (listeners, timeouts, floor, hosts, body limit,
	// mTLS client auth mode, connection caps, trusted proxies) and logging
	// are read once at start.
	check("server", serverSansTLS(old.Server), serverSansTLS(cur.Server))
	check("log", old.Log, cur.Log)
	check("admin.pprof", old.Admin.PProf, cur.Admin.PProf)
	check("audit", old.Audit, cur.Audit)
	check("rate_limits.redis", old.RateLimits.Redis, cur.RateLimits.Redis)
	// The budget in effect, not just the setting: unset, it depends on
	// whether a gateway or proxy fronts the dispenser.
	check("rate_limits.auth_failures_per_client", authFailureLimit(old), authFailureLimit(cur))
	oldPer, oldTotal := authInFlightCaps(old)
	curPer, curTotal := authInFlightCaps(cur)
	check("rate_limits.auth_in_flight", [2]int{oldPer, oldTotal}, [2]int{curPer, curTotal})
	// The denial-record budget and its summaries are built once.
	check("rate_limits.denial_records", old.RateLimits.DenialRecords, cur.RateLimits.DenialRecords)
	check("rate_limits.denial_summary_interval", old.RateLimits.DenialSummaryInterval, cur.RateLimits.DenialSummaryInterval)
	check("revocation", old.Revocation, cur.Revocation)
	check("correlate", old.Correlate, cur.Correlate)
	types := func(c *config.Config) map[string]string {
		m := map[string]string{}
		for n, s := range c.Backends {
			m[n] = s.Type
		}
		return m
	}
	check("backends", types(old), types(cur))
	// Backend options (region, endpoint, cache, budget) are built once;
	// static backends re-read their credentials file, not their options.
	for n, spec := range cur.Backends {
		if o, ok := old.Backends[n]; ok && o.Type == spec.Type && !reflect.DeepEqual(yamlOf(o.Options), yamlOf(spec.Options)) {
			out = append(out, "backends."+n)
		}
	}
	return out
}

// serverSansTLS is the server section without the certificate paths, which
// a reload does apply.
func serverSansTLS(s config.ServerConfig) config.ServerConfig {
	s.TLS = config.TLSConfig{}
	return s
}

func yamlOf(n yaml.Node) string {
	b, _ := yaml.Marshal(&n)
	return string(b)
}

// watchConfig reloads when the configuration file changes. It watches the
// directory, not the file: editors and Kubernetes ConfigMap updates
// replace the file (rename, symlink swap) rather than writing it in place.
func (a *app) watchConfig(ctx context.Context, path string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	cw := &configWatch{a: a, w: w, path: path}
	if err := cw.follow(); err != nil {
		_ = w.Close()
		return err
	}
	go cw.run(ctx)
	return nil
}

// configWatch watches the configuration file and the files it names that
// a reload re-reads (TLS certificate and key, the mTLS CA bundle): a
// renewed certificate mounted beside the configuration or elsewhere is
// picked up too. Watching directories catches editor renames and
// Kubernetes' "..data" symlink swaps. The set follows the configuration in
// force: a reload (by the watch or by SIGHUP) that moves the certificate
// or CA elsewhere moves the watch with it.
type configWatch struct {
	a           *app
	w           *fsnotify.Watcher
	path        string
	files, dirs map[string]bool
	watching    *config.Config
}

// follow watches the directories of the configuration in force.
func (cw *configWatch) follow() error {
	cfg := cw.a.current.Load()
	if cfg == cw.watching {
		return nil
	}
	nf := watchedFiles(cw.path, cfg)
	nd := map[string]bool{}
	for f := range nf {
		nd[filepath.Dir(f)] = true
	}
	for d := range nd {
		if !cw.dirs[d] {
			if err := cw.w.Add(d); err != nil {
				return err
			}
		}
	}
	for d := range cw.dirs {
		if !nd[d] {
			_ = cw.w.Remove(d)
		}
	}
	cw.files, cw.dirs, cw.watching = nf, nd, cfg
	return nil
}

// refollow is follow after a reload, which only logs a failure.
func (cw *configWatch) refollow() {
	if err := cw.follow(); err != nil {
		cw.a.log.Warn("configuration watch: cannot watch the files of the new configuration", zap.Error(err))
	}
}

// run reloads 300ms after the last change to a watched file, until ctx
// ends.
func (cw *configWatch) run(ctx context.Context) {
	defer cw.w.Close()
	var debounce <-chan time.Time
	// A SIGHUP reload happens elsewhere; look for it now and then.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-cw.w.Events:
			if !ok {
				return
			}
			name := filepath.Clean(ev.Name)
			if cw.files[name] || (filepath.Base(name) == "..data" && cw.dirs[filepath.Dir(name)]) {
				debounce = time.After(300 * time.Millisecond)
			}
		case err, ok := <-cw.w.Errors:
			if !ok {
				return
			}
			cw.a.log.Warn("configuration watch", zap.Error(err))
		case <-debounce:
			debounce = nil
			cw.a.logReload(cw.a.reload())
			cw.refollow()
		case <-tick.C:
			cw.refollow()
		}
	}
}

// watchedFiles lists, cleaned, the files whose change triggers a reload.
// The configuration's own path is made absolute like the paths it names
// (resolved against its directory), so a directory named both ways is one
// watch and its events carry one name.
func watchedFiles(path string, cfg *config.Config) map[string]bool {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	out := map[string]bool{filepath.Clean(path): true}
	add := func(f string) {
		if f != "" {
			out[filepath.Clean(f)] = true
		}
	}
	add(cfg.Server.TLS.CertFile)
	add(cfg.Server.TLS.KeyFile)
	if m := cfg.Auth.MTLS; m != nil {
		add(m.CAFile)
	}
	return out
}

func (a *app) logReload(err error) {
	if err != nil {
		a.log.Error("configuration reload rejected; keeping the running configuration", zap.Error(err))
		return
	}
	a.log.Info("configuration reloaded")
}
