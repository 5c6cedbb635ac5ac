package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
)

// Limiter throttles issuance. Allow returns nil, or a *fault.Error with
// code Throttled, a RetryAfter and reason rate_limited_<scope>.
type Limiter interface {
	Allow(ctx context.Context, principal, org string) error
}

// RevocationChecker answers from a replica's in-memory revocation list.
type RevocationChecker interface {
	// Check returns the active revocation matching the caller, if any.
	Check(s revoke.Subject) (revoke.Revocation, bool)
	// CheckAccessKey returns the active revocation of an access key id.
	CheckAccessKey(id string) (revoke.Revocation, bool)
}

// RevocationAdmin changes the revocation list. Errors are *fault.Error:
// InvalidRequest for a bad revocation, NotFound for an unknown id,
// BackendUnavailable when the store (or the AWS kill switch) fails.
type RevocationAdmin interface {
	Add(ctx context.Context, r revoke.Revocation, actor string) (revoke.Revocation, error)
	List(ctx context.Context) ([]revoke.Revocation, error)
	Delete(ctx context.Context, id, actor string) error
}

// Forgetter is implemented by caching vendors that can drop the cached
// credentials of a grant, so a revoked access key is not served again.
type Forgetter interface {
	Forget(g scope.Grant)
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
}

// RevocationList is the answer of GET /v1/revocations.
type RevocationList struct {
	Revocations []RevocationView `json:"revocations"`
}

func (s *Server) addRevocation(w http.ResponseWriter, r *http.Request) {
	var req RevocationRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, fault.New(fault.RequestTooLarge, "body_too_large", "request body is too large"))
			return
		}
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
	// A failed kill switch still leaves the revocation in force for new
	// requests: answer 201 with the revocation, but say so in a header and
	// the log so the operator knows issued credentials remain valid.
	if err != nil {
		w.Header().Set("X-Dispenser-Warning", "aws_kill_switch_failed")
		fe := fault.From(err)
		s.log(r).Error("revocation added without its AWS deny", errorFields(fe)...)
	}
	w.Header().Set("Location", "/v1/revocations/"+rev.ID)
	writeJSON(w, http.StatusCreated, RevocationView{Revocation: rev, Active: rev.Active(s.opt.Now())})
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
	if err := s.opt.RevocationAdmin.Delete(r.Context(), chi.URLParam(r, "id"), admin.Principal); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// checkRevoked refuses a revoked caller, org, job or task.
func (s *Server) checkRevoked(sub revoke.Subject) error {
	if s.opt.Revocations == nil {
		return nil
	}
	if rv, ok := s.opt.Revocations.Check(sub); ok {
		return revokedFault(rv)
	}
	return nil
}

func revokedFault(rv revoke.Revocation) *fault.Error {
	return fault.New(fault.AccessDenied, "revoked", "access is revoked (%s revocation %s)", rv.Kind, rv.ID)
}
