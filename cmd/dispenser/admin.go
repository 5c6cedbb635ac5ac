package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/metrics"
)

// adminHandler serves the admin listener: /metrics from the dispenser's own
// registry, /healthz (the process is alive) and /readyz (it can vend:
// state returns "ready", or why not, as api.Server.ReadyState does).
func adminHandler(m *metrics.Metrics, state func() string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if st := state(); st != "ready" {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "{\"status\":%q}\n", st)
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	return mux
}

// withPprof adds net/http/pprof's handlers under /debug/pprof/ to h, the
// admin listener's handler (admin.pprof), so operators can profile a
// dispenser under load.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}

// pprofMaxSeconds bounds a CPU profile or trace on the admin listener: its
// write timeout, raised from adminWriteTimeout when admin.pprof is on
// (pprof refuses a profile as long as the write timeout).
const pprofMaxSeconds = 120

// adminWriteTimeout bounds an answer of the admin listener.
const adminWriteTimeout = 30 * time.Second

// adminServer is the admin listener's server: /metrics, /healthz and
// /readyz, and with admin.pprof the profiling handlers.
func (a *app) adminServer() *http.Server {
	h := adminHandler(a.metrics, a.server.ReadyState)
	write := adminWriteTimeout
	if a.current.Load().Admin.PProf {
		h = withPprof(h)
		write = (pprofMaxSeconds + 5) * time.Second
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: write, ErrorLog: zap.NewStdLog(a.log.Named("admin-http"))}
}
