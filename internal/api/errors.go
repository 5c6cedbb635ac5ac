package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/vtk/dispenser/internal/fault"
)

// ErrorBody is the {"code","message"} shape AWS SDKs parse.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// statusOf is the one place a fault code becomes an HTTP status.
func statusOf(e *fault.Error) int {
	switch e.Code {
	case fault.InvalidRequest:
		return http.StatusBadRequest
	case fault.Unauthorized:
		return http.StatusUnauthorized
	case fault.AccessDenied:
		return http.StatusForbidden
	case fault.NotFound:
		return http.StatusNotFound
	case fault.MethodNotAllowed:
		return http.StatusMethodNotAllowed
	case fault.RequestTooLarge:
		return http.StatusRequestEntityTooLarge
	case fault.Throttled:
		return http.StatusTooManyRequests
	case fault.BackendUnavailable:
		// A transient failure (with a retry hint) is 503 so SDKs retry; a
		// definite upstream refusal is 502.
		if e.RetryAfter > 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusBadGateway
	case fault.AuditUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError renders err in the contract's error shape. Only the fault's
// client-safe code and message leave the process.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	fe := fault.From(err)
	status := statusOf(fe)
	h := w.Header()
	if fe.Code == fault.Unauthorized {
		a := s.authn.Load()
		challenges := a.challenges
		if admin, _ := r.Context().Value(keyAdminRoute).(bool); admin {
			challenges = a.adminChallenges
		}
		for _, c := range challenges {
			h.Add("WWW-Authenticate", c)
		}
	}
	if fe.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((fe.RetryAfter+time.Second-1)/time.Second)))
	} else if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		h.Set("Retry-After", "1")
	}
	if status >= 500 && fe.Err != nil {
		s.log(r).Warn("request failed", errorFields(fe)...)
	}
	writeJSON(w, status, ErrorBody{Code: string(fe.Code), Message: fe.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Exactly application/json: the AWS SDK for Go v2 parses error bodies
	// only for that value.
	writeHeader(w, status, "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeHeader starts every body the API writes: what it holds (credentials,
// audit records) must never be cached or sniffed into something else.
func writeHeader(w http.ResponseWriter, status int, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}
