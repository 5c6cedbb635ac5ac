package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
)

// Limiter throttles issuance. Allow returns nil, or a *fault.Error with
// code Throttled, a RetryAfter and reason rate_limited_<scope>.
type Limiter interface {
	Allow(ctx context.Context, principal, org string) error
}

// AuthFailureGuard budgets failed authentications per client (an address
// or the caller a trusted gateway asserts). Blocked is asked before
// authenticating; Failed is told after a failure.
type AuthFailureGuard interface {
	Blocked(client string) (retryAfter time.Duration, blocked bool)
	Failed(client string)
}

// AuthInFlight bounds the requests in authentication at once
// (ratelimit.InFlight). Over takes a place for key and returns the function
// that gives it back, or names the cap ("per_client" or "total") a request
// from key would exceed.
type AuthInFlight interface {
	Over(key string) (release func(), over string)
}

// Folder is implemented by recorders that count a refusal into a summary
// record instead of recording it on its own (internal/denials): a client
// over its failed-authentication budget is refused that way.
type Folder interface {
	Fold(rec audit.Record)
}

// RevocationChecker answers from a replica's in-memory revocation list.
// Fresh is part of the contract, not an option: a checker that cannot say
// whether its list is current would let a replica cut off from the store
// vend to callers revoked since.
type RevocationChecker interface {
	// Fresh returns an error (revoke.ErrStale) when the list is too old to
	// be trusted: requests are then refused (503) and /readyz reports
	// revocations_stale.
	Fresh() error
	// Check returns the active revocation matching the caller, if any.
	Check(s revoke.Subject) (revoke.Revocation, bool)
	// CheckAccessKey returns the active revocation of an access key id.
	CheckAccessKey(id string) (revoke.Revocation, bool)
}

// RevocationAdmin changes the revocation list. Errors are *fault.Error:
// InvalidRequest for a bad revocation, NotFound for an unknown id,
// BackendUnavailable when the store (or the AWS kill switch) fails,
// AuditUnavailable when a deletion cannot be recorded. Add returns a
// stored revocation together with a *revoke.Incomplete when it is in
// force but unrecorded or without its AWS deny.
type RevocationAdmin interface {
	Add(ctx context.Context, r revoke.Revocation, actor string) (revoke.Revocation, error)
	List(ctx context.Context) ([]revoke.Revocation, error)
	Delete(ctx context.Context, id, actor string) error
}

// RevocationRequest is the body of POST /v1/revocations.
type RevocationRequest struct {
	Kind      revoke.Kind `json:"kind"`
	Value     string      `json:"value"`
	Reason    string      `json:"reason"`
	ExpiresAt *time.Time  `json:"expires_at,omitempty"`
}

// RevocationView is a revocation as the admin API shows it.
type RevocationView struct {
	revoke.Revocation
	Active bool `json:"active"`
	// Warnings name what did not happen for a revocation that is in force
	// regardless: audit_unrecorded, aws_kill_switch_failed.
	Warnings []string `json:"warnings,omitempty"`
}

// RevocationList is the answer of GET /v1/revocations.
type RevocationList struct {
	Revocations []RevocationView `json:"revocations"`
}

func (s *Server) addRevocation(w http.ResponseWriter, r *http.Request) {
	var req RevocationRequest
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, fault.New(fault.RequestTooLarge, "body_too_large", "request body is too large"))
			return
		}
		s.writeError(w, r, fault.Wrap(err, fault.InvalidRequest, "bad_body", "request body could not be read"))
		return
	}
	// encoding/json would replace invalid UTF-8 by U+FFFD: the operator
	// would revoke a value other than the one sent.
	if !utf8.Valid(raw) {
		s.writeError(w, r, fault.New(fault.InvalidRequest, "bad_json", "request body must be UTF-8"))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, fault.Wrap(err, fault.InvalidRequest, "bad_json", "request body is not a valid revocation: %s", jsonProblem(err)))
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		s.writeError(w, r, fault.New(fault.InvalidRequest, "bad_json", "request body must hold exactly one JSON object"))
		return
	}
	admin, _ := IdentityFrom(r.Context())
	rev, err := s.opt.RevocationAdmin.Add(r.Context(), revoke.Revocation{Kind: req.Kind, Value: req.Value, Reason: req.Reason, ExpiresAt: req.ExpiresAt}, admin.Principal)
	if err != nil && rev.ID == "" {
		s.writeError(w, r, err)
		return
	}
	// A stored revocation is in force for new requests even when a
	// follow-up step failed (the audit record, the AWS kill switch): answer
	// 201 with the revocation, and name each failure in a warning header,
	// the body and the log, so the operator is never told it all went well.
	var view RevocationView
	if err != nil {
		var inc *revoke.Incomplete
		if errors.As(err, &inc) {
			view.Warnings = inc.Warnings
		} else {
			view.Warnings = []string{"incomplete"}
		}
		for _, w8 := range view.Warnings {
			w.Header().Add("X-Dispenser-Warning", w8)
		}
		s.log(r).Error("revocation added, but incomplete", zap.Strings("warnings", view.Warnings), zap.String("revocation_id", rev.ID), zap.Error(err))
	}
	w.Header().Set("Location", "/v1/revocations/"+rev.ID)
	view.Revocation, view.Active = rev, rev.Active(s.opt.Now())
	writeJSON(w, http.StatusCreated, view)
}

func (s *Server) listRevocations(w http.ResponseWriter, r *http.Request) {
	list, err := s.opt.RevocationAdmin.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.opt.Now()
	out := RevocationList{Revocations: make([]RevocationView, 0, len(list))}
	for _, rv := range list {
		out.Revocations = append(out.Revocations, RevocationView{Revocation: rv, Active: rv.Active(now)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteRevocation(w http.ResponseWriter, r *http.Request) {
	admin, _ := IdentityFrom(r.Context())
	id := chi.URLParam(r, "id")
	if err := checkPathText("id", id); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.opt.RevocationAdmin.Delete(r.Context(), id, admin.Principal); err != nil {
		var inc *revoke.Incomplete
		if !errors.As(err, &inc) {
			s.writeError(w, r, err)
			return
		}
		// Deleted, but a follow-up step failed (the AWS deny stays): 204
		// with the warning, so a retry does not meet a 404.
		for _, w8 := range inc.Warnings {
			w.Header().Add("X-Dispenser-Warning", w8)
		}
		s.log(r).Error("revocation deleted, but incomplete", zap.Strings("warnings", inc.Warnings), zap.Error(err))
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// checkPathText refuses a path parameter no store keeps as text (NUL,
// invalid UTF-8): PostgreSQL would fail the query (a 503), SQLite would
// look it up; either way it names nothing that can exist.
func checkPathText(name, v string) error {
	if !revoke.Text(v) {
		return fault.New(fault.InvalidRequest, "bad_"+name, "%s must be UTF-8 without NUL", name)
	}
	return nil
}

// checkRevoked refuses a revoked caller, org, job or task.
func (s *Server) checkRevoked(sub revoke.Subject) error {
	if s.opt.Revocations == nil {
		return nil
	}
	// A list that has not been refreshed for too long may miss a new
	// revocation: fail closed (503, retried by SDKs) rather than vend.
	if err := s.opt.Revocations.Fresh(); err != nil {
		return fault.Wrap(err, fault.BackendUnavailable, "revocations_stale",
			"the revocation list cannot be refreshed; retry shortly").WithRetryAfter(2 * time.Second)
	}
	if rv, ok := s.opt.Revocations.Check(sub); ok {
		return revokedFault(rv)
	}
	return nil
}

func revokedFault(rv revoke.Revocation) *fault.Error {
	return fault.New(fault.AccessDenied, "revoked", "access is revoked (%s revocation %s)", rv.Kind, rv.ID)
}
