// Package api is the dispenser's HTTP surface: routing, middleware, request
// decoding, and the one mapping from fault codes to HTTP statuses.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// Recorder makes a decision record durable. Record returns only after the
// record is durable; an error means it is not, and the caller must not hand
// out the credentials the record describes.
type Recorder interface {
	Record(ctx context.Context, rec audit.Record) error
}

// Announcer is a Recorder that batches records (the audit writer's group
// commit). The credential handler announces each request's record as soon
// as the caller is authenticated, so the recorder commits at once when
// every announced record is already queued and waits for more only while
// some are still on their way. Optional: a Recorder without it is simply
// called.
type Announcer interface {
	// Expect announces one record. The returned Expectation must be ended
	// exactly once (Record or Cancel; Cancel after Record does nothing).
	Expect() Expectation
}

// Expectation is one announced record.
type Expectation interface {
	// Record is Recorder.Record for the announced record; it ends the
	// announcement.
	Record(ctx context.Context, rec audit.Record) error
	// Cancel ends the announcement without a record.
	Cancel()
}

// Options are the server's dependencies and settings, wired in cmd/dispenser.
type Options struct {
	Logger        *zap.Logger
	Authenticator auth.Authenticator
	// AdminAuthenticator guards the /v1 admin routes (audit query,
	// revocations). A worker credential never passes it. Nil disables them.
	AdminAuthenticator auth.Authenticator
	Metrics            *metrics.Metrics
	Rules              *scope.Rules
	Vendor             vend.Vendor
	Recorder           Recorder
	// Audit serves the admin audit query and receipts (nil: no routes).
	Audit AuditLog
	// Correlate configures POST /v1/audit/correlate (served with Audit).
	Correlate CorrelateSettings
	// MinRemaining is the floor of lifetime left on any credential served.
	MinRemaining time.Duration
	// AllowedHosts, when non-empty, refuses requests for any other Host.
	AllowedHosts []string
	MaxBodyBytes int64
	ReplicaID    string
	// OpenAPI is the spec served at /openapi.yaml.
	OpenAPI []byte
	Now     func() time.Time
	// Limiter, when set, throttles issuance (after scope decides, before
	// vending; grants the vendor serves from its cache included).
	Limiter Limiter
	// AuthFailures, when set, refuses a client that keeps failing
	// authentication before authenticating it (and before writing another
	// audit record for it). The client is the caller a trusted gateway
	// asserts (auth.ClientKeyer), else the client address.
	AuthFailures AuthFailureGuard
	// AuthInFlight, when set, bounds the requests in authentication at
	// once, per client (the same key as AuthFailures) and in all: a flood
	// of slow or stalled requests is refused at once instead of holding
	// memory and outbound calls.
	AuthInFlight AuthInFlight
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client address (budgets, records, logs); empty: the TCP peer.
	TrustedProxies clientip.Trusted
	// Revocations, when set, refuses revoked callers, jobs, tasks and keys.
	Revocations RevocationChecker
	// RevocationAdmin, when set with AdminAuthenticator, serves the
	// /v1/revocations admin API.
	RevocationAdmin RevocationAdmin
	// Gate, when set, can hold the replica out of service: while it returns
	// a fault, /credentials and /v1/whoami answer with it and /readyz
	// answers 503 with the fault's reason as status (the audit trail's log
	// has no anchored checkpoint to extend, say).
	Gate func() *fault.Error
}

// Server serves the credential API.
type Server struct {
	opt   Options
	rules atomic.Pointer[scope.Rules]
	authn atomic.Pointer[authenticators]
	ready atomic.Bool
	// stopping: shutdown began; /readyz answers 503 while requests are
	// still served, so load balancers drain the replica first.
	stopping atomic.Bool
	hosts    map[string]bool
}

// authenticators are swapped together on configuration reload.
type authenticators struct {
	worker     auth.Authenticator
	admin      auth.Authenticator
	challenges []string
	// adminChallenges are sent with a 401 from an admin route.
	adminChallenges []string
}

func newAuthenticators(worker, admin auth.Authenticator) *authenticators {
	return &authenticators{worker: worker, admin: admin, challenges: auth.ChallengesOf(worker), adminChallenges: auth.ChallengesOf(admin)}
}

// New returns a server that is not ready until SetReady(true).
func New(opt Options) *Server {
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxBodyBytes == 0 {
		opt.MaxBodyBytes = 64 << 10
	}
	if opt.Recorder == nil {
		opt.Recorder = nopRecorder{}
	}
	s := &Server{opt: opt}
	s.rules.Store(opt.Rules)
	s.authn.Store(newAuthenticators(opt.Authenticator, opt.AdminAuthenticator))
	if len(opt.AllowedHosts) > 0 {
		s.hosts = map[string]bool{}
		for _, h := range opt.AllowedHosts {
			s.hosts[strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))] = true
		}
	}
	return s
}

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, audit.Record) error { return nil }

// expect announces a record to a batching recorder (nil for others).
func (s *Server) expect() Expectation {
	if a, ok := s.opt.Recorder.(Announcer); ok {
		return a.Expect()
	}
	return nil
}

// SetReady marks the server ready (or not) to vend.
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

// SetStopping marks the shutdown begun: from then on /readyz reports
// "stopping" (503), while requests that still arrive are served.
func (s *Server) SetStopping() { s.stopping.Store(true) }

// SetRules swaps the tenant rules atomically (configuration reload).
func (s *Server) SetRules(r *scope.Rules) { s.rules.Store(r) }

// SetAuthenticator swaps the worker and admin authenticators atomically
// (configuration reload: keys, JWKS, CA bundles). The admin routes exist
// only when an admin authenticator was configured at start; a nil admin
// here makes them answer 404.
func (s *Server) SetAuthenticator(worker, admin auth.Authenticator) {
	s.authn.Store(newAuthenticators(worker, admin))
}

// ReadyState is the status /readyz reports: "stopping" once shutdown
// began (SetStopping), "starting" until SetReady(true), the Gate's reason
// while it holds the replica (e.g. "audit_anchor_missing"),
// "revocations_stale" while the revocation list cannot be refreshed
// (every /credentials would be a 503, so the orchestrator should send the
// traffic to other replicas), "ready" otherwise.
func (s *Server) ReadyState() string {
	if s.stopping.Load() {
		return "stopping"
	}
	if !s.ready.Load() {
		return "starting"
	}
	if fe := s.held(); fe != nil {
		return fe.Reason
	}
	if s.opt.Revocations != nil && s.opt.Revocations.Fresh() != nil {
		return "revocations_stale"
	}
	return "ready"
}

// held is the Gate's fault, or nil while the replica may serve.
func (s *Server) held() *fault.Error {
	if s.opt.Gate == nil {
		return nil
	}
	return s.opt.Gate()
}

// Rules returns the current rules.
func (s *Server) Rules() *scope.Rules { return s.rules.Load() }

// Handler returns the routed handler. Middleware order: request id →
// recover → logging → host check → (per route) authentication → handler.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.requestID, s.recoverer, s.logRequests, s.checkHost)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, fault.New(fault.NotFound, "not_found", "no such endpoint"))
	})
	mux := r
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// RFC 9110: a 405 names the methods the resource supports.
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			if mux.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			// chi answers 405 for any method it has no tree for (BREW /x):
			// a path no method serves is a 404.
			s.writeError(w, r, fault.New(fault.NotFound, "not_found", "no such endpoint"))
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, fault.New(fault.MethodNotAllowed, "method_not_allowed", "method %s is not allowed here (allowed: %s)", methodLabel(r.Method), strings.Join(allow, ", ")))
	})
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/openapi.yaml", s.openapi)
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/credentials", s.credentials)
		r.Post("/credentials", s.credentials)
		r.Get("/v1/whoami", s.whoami)
	})
	// The admin group is always mounted: an admin section added by a
	// reload takes effect, and without one every admin route is a 404.
	r.Group(func(r chi.Router) {
		r.Use(s.authenticateAdmin)
		// Admin routes (audit query, revocations) are added here.
		if s.opt.RevocationAdmin != nil {
			r.Post("/v1/revocations", s.addRevocation)
			r.Get("/v1/revocations", s.listRevocations)
			r.Delete("/v1/revocations/{id}", s.deleteRevocation)
		}
		if s.opt.Audit != nil {
			r.Get("/v1/audit", s.auditQuery)
			r.Get("/v1/audit/{id}/proof", s.auditProof)
			r.Post("/v1/audit/correlate", s.auditCorrelate)
		}
	})

	return r
}

// Routes lists the method and pattern of every route (the OpenAPI test
// compares them with the spec).
func (s *Server) Routes() [][2]string {
	var out [][2]string
	_ = chi.Walk(s.Handler().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, [2]string{method, route})
		return nil
	})
	return out
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyIdentity
	// keyAdminRoute marks a request to an admin route (its 401 challenges
	// name the admin scheme).
	keyAdminRoute
)

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDRe.MatchString(id) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequestID, id)))
	})
}

// RequestID returns the request id of ctx.
func RequestID(ctx context.Context) string {
	v, _ := ctx.Value(keyRequestID).(string)
	return v
}

func (s *Server) log(r *http.Request) *zap.Logger {
	return s.opt.Logger.With(zap.String("request_id", RequestID(r.Context())))
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log(r).Error("panic serving request", zap.Any("panic", v), zap.Stack("stack"))
				s.opt.Metrics.Request(routeOf(r), methodLabel(r.Method), http.StatusInternalServerError)
				if sw.status != 0 {
					// Part of an answer is already out: appending an error
					// would corrupt it, so abort the connection instead.
					panic(http.ErrAbortHandler)
				}
				s.writeError(w, r, fault.New(fault.InternalError, "panic", "internal error"))
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// routeOf is the matched route pattern, a bounded label.
func routeOf(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return rc.RoutePattern()
	}
	return "unmatched"
}

// methodLabel bounds the method label: any client can send any method
// string, and each would otherwise become a new metric series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut, http.MethodHead, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "other"
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush passes through, so streamed answers (NDJSON export) reach the
// client as they are written.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request. It logs the path, never the query
// string: a location may carry userinfo secrets.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.opt.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.opt.Metrics.Request(routeOf(r), methodLabel(r.Method), sw.status)
		// Checked first: at the usual info level this line costs nothing.
		if ce := s.opt.Logger.Check(zap.DebugLevel, "http request"); ce != nil {
			ce.Write(zap.String("request_id", RequestID(r.Context())),
				zap.String("method", methodLabel(r.Method)), zap.String("route", routeOf(r)),
				zap.Int("status", sw.status), zap.Duration("latency", s.opt.Now().Sub(start)))
		}
	})
}

func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.hosts != nil {
			host := strings.ToLower(r.Host)
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]") // "[::1]" without a port
			if !s.hosts[host] && !s.hosts[strings.ToLower(r.Host)] {
				s.writeError(w, r, fault.New(fault.AccessDenied, "host_not_allowed", "host is not in allowed_hosts"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			s.writeError(w, r, fault.New(fault.BackendUnavailable, "not_ready", "the dispenser is starting; retry shortly").WithRetryAfter(time.Second))
			return
		}
		if fe := s.held(); fe != nil {
			s.writeError(w, r, fe)
			return
		}
		start := s.opt.Now()
		client := s.clientAddr(r)
		key := s.failureKey(r, client)
		release, fe := s.beforeAuthentication(key)
		if fe != nil {
			// Refused before authentication: no record of its own (a
			// flood would grow the trail), but counted into the trail's
			// summary of refusals, the metrics and the log (sampled).
			s.log(r).Info("client refused before authentication", zap.String("reason", fe.Reason), zap.String("client", client))
			if f, ok := s.opt.Recorder.(Folder); ok {
				rec := s.baseRecord(r, start)
				rec.Outcome, rec.Reason = audit.Denied, fe.Reason
				f.Fold(rec)
			}
			s.writeError(w, r, fe)
			return
		}
		id, err := func() (auth.Identity, error) {
			defer release() // a panicking authenticator gives its place back too
			return s.authenticateWorker(r)
		}()
		if err != nil {
			// Every failure spends the budget, a dependency being down
			// (JWKS, STS, the key store) included: forged requests that
			// reach an outage must not escape it.
			if g := s.opt.AuthFailures; g != nil {
				g.Failed(key)
			}
			fe := fault.From(err)
			s.log(r).Info("authentication failed", zap.String("reason", fe.Reason), zap.String("client", client))
			s.opt.Metrics.AuthFailure(authMethodOf(fe), fe.Reason)
			s.opt.Metrics.Decision("", "", "", "denied", fe.Reason, s.opt.Now().Sub(start))
			rec := s.baseRecord(r, start)
			rec.Outcome, rec.Reason = audit.Denied, fe.Reason
			if aerr := s.opt.Recorder.Record(r.Context(), rec); aerr != nil {
				err = auditUnavailable(aerr)
			}
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyIdentity, id)))
	})
}

// beforeAuthentication refuses a client over its failed-authentication
// budget or over an in-flight cap; otherwise it takes the request's
// in-flight place and returns the function that gives it back.
func (s *Server) beforeAuthentication(key string) (release func(), _ *fault.Error) {
	if g := s.opt.AuthFailures; g != nil {
		if wait, blocked := g.Blocked(key); blocked {
			s.opt.Metrics.Limited("auth_failures")
			return nil, fault.New(fault.Throttled, "rate_limited_auth_failures",
				"too many failed authentications from this client; retry later").WithRetryAfter(max(wait, time.Second))
		}
	}
	if f := s.opt.AuthInFlight; f != nil {
		release, over := f.Over(key)
		if over != "" {
			s.opt.Metrics.Limited("auth_in_flight")
			return nil, inFlightRefusal(over)
		}
		return release, nil
	}
	return func() {}, nil
}

// inFlightRefusal is the answer past an in-flight authentication cap: the
// client's own (429, it is sending too much at once) or everyone's (503,
// the replica is saturated; another may not be). Both are retried by SDKs.
func inFlightRefusal(over string) *fault.Error {
	if over == "total" {
		return fault.New(fault.BackendUnavailable, "auth_overloaded",
			"too many requests are being authenticated at once; retry shortly").WithRetryAfter(time.Second)
	}
	return fault.New(fault.Throttled, "rate_limited_auth_in_flight",
		"too many requests from this client are being authenticated at once; retry shortly").WithRetryAfter(time.Second)
}

// authenticateWorker runs the worker authenticators on a request that
// carries at most one Authorization header.
func (s *Server) authenticateWorker(r *http.Request) (auth.Identity, error) {
	if err := singleAuthorization(r); err != nil {
		return auth.Identity{}, err
	}
	return s.authn.Load().worker.Authenticate(r)
}

// singleAuthorization refuses a request with more than one Authorization
// header: which one counts would be each reader's choice (Go's Get takes
// the first, a proxy may take the last), so a valid token could carry an
// unchecked one past a component that reads the other.
func singleAuthorization(r *http.Request) error {
	if len(r.Header.Values("Authorization")) > 1 {
		return fault.New(fault.InvalidRequest, "repeated_authorization", "send exactly one Authorization header")
	}
	return nil
}

// authenticateAdmin admits only admin identities; the failure is logged but
// not written to the credential audit trail (no credential was asked for).
func (s *Server) authenticateAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin := s.authn.Load().admin
		if admin == nil {
			s.writeError(w, r, fault.New(fault.NotFound, "not_found", "no such endpoint"))
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), keyAdminRoute, true))
		if err := singleAuthorization(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		id, err := admin.Authenticate(r)
		if err != nil {
			fe := fault.From(err)
			s.log(r).Info("admin authentication failed", zap.String("reason", fe.Reason), zap.String("client", s.clientAddr(r)))
			s.opt.Metrics.AuthFailure("admin", fe.Reason)
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyIdentity, id)))
	})
}

// authMethodOf derives the method label from a fault's reason prefix.
func authMethodOf(fe *fault.Error) string {
	if i := strings.IndexByte(fe.Reason, '_'); i > 0 {
		return fe.Reason[:i]
	}
	return "none"
}

// IdentityFrom returns the authenticated identity of a request.
func IdentityFrom(ctx context.Context) (auth.Identity, bool) {
	id, ok := ctx.Value(keyIdentity).(auth.Identity)
	return id, ok
}

func auditUnavailable(err error) *fault.Error {
	return fault.Wrap(err, fault.AuditUnavailable, "audit_unavailable", "the audit trail cannot record this request; no credentials were issued").WithRetryAfter(2 * time.Second)
}

// clientAddr is the client's address: the TCP peer, or the address a
// trusted proxy forwards.
func (s *Server) clientAddr(r *http.Request) string { return s.opt.TrustedProxies.Of(r) }

// failureKey is whom a failed authentication is charged to: the caller a
// trusted gateway asserts, else the client address (an IPv6 client's /64,
// so rotating through its own /64 gets a host no fresh budget).
func (s *Server) failureKey(r *http.Request, client string) string {
	if k, ok := s.authn.Load().worker.(auth.ClientKeyer); ok {
		if key, ok := k.ClientKey(r); ok {
			return clientip.BudgetKey(key)
		}
	}
	return clientip.BudgetKey(client)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if st := s.ReadyState(); st != "ready" {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": st})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(s.opt.OpenAPI)
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	id, _ := IdentityFrom(r.Context())
	resp := WhoAmI{Identity: id}
	if t, ok := s.rules.Load().Tenant(id.Org); ok {
		resp.Tenant = &TenantView{Org: t.Org, RoleARN: t.RoleARN, Backend: t.Backend, MaxDurationSeconds: int(t.MaxDuration.D().Seconds())}
	}
	writeJSON(w, http.StatusOK, resp)
}

// WhoAmI is the /v1/whoami answer.
type WhoAmI struct {
	Identity auth.Identity `json:"identity"`
	Tenant   *TenantView   `json:"tenant"`
}

// TenantView is the non-secret part of a tenant.
type TenantView struct {
	Org                string `json:"org"`
	RoleARN            string `json:"role_arn,omitempty"`
	Backend            string `json:"backend"`
	MaxDurationSeconds int    `json:"max_duration_seconds"`
}

func errorFields(fe *fault.Error) []zap.Field {
	return []zap.Field{zap.String("code", string(fe.Code)), zap.String("reason", fe.Reason), zap.Error(fe.Err)}
}
