package api

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/fault"
)

// AuditLog is what the admin audit routes read.
type AuditLog interface {
	// Query returns one page of records, newest first. Errors:
	// audit.ErrBadCursor, or an invalid filter.
	Query(ctx context.Context, f audit.Filter) (audit.Page, error)
	// Receipt returns the inclusion proof of a record. Errors:
	// audit.ErrNotFound, audit.ErrNotCheckpointed.
	Receipt(ctx context.Context, id string) (*audit.Receipt, error)
}

var auditParams = map[string]bool{
	"org": true, "principal": true, "job_id": true, "task_id": true, "access_key_id": true,
	"outcome": true, "bucket": true, "since": true, "until": true, "limit": true, "cursor": true,
}

// ParseAuditFilter reads an audit.Filter from query parameters.
func ParseAuditFilter(q map[string][]string) (audit.Filter, error) {
	var f audit.Filter
	for k, v := range q {
		if !auditParams[k] {
			return f, fault.New(fault.InvalidRequest, "unknown_parameter", "unknown query parameter %q", truncate(k, 40))
		}
		if len(v) > 1 {
			return f, fault.New(fault.InvalidRequest, "repeated_parameter", "query parameter %q is given more than once", k)
		}
	}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f.Org, f.Principal, f.JobID, f.TaskID = get("org"), get("principal"), get("job_id"), get("task_id")
	f.AccessKeyID, f.Bucket, f.Outcome, f.Cursor = get("access_key_id"), get("bucket"), audit.Outcome(get("outcome")), get("cursor")
	for _, t := range []struct {
		name string
		out  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := get(t.name); v != "" {
			tm, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fault.New(fault.InvalidRequest, "bad_time", "%s must be an RFC 3339 time such as 2026-03-01T12:00:00Z", t.name)
			}
			*t.out = tm
		}
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxLimit {
			return f, fault.New(fault.InvalidRequest, "bad_limit", "limit must be an integer from 1 to %d", audit.MaxLimit)
		}
		f.Limit = n
	}
	if err := f.Normalize(); err != nil {
		if errors.Is(err, audit.ErrBadCursor) {
			return f, fault.New(fault.InvalidRequest, "bad_cursor", "cursor is not one this API returned")
		}
		return f, fault.New(fault.InvalidRequest, "bad_filter", "%s", err.Error())
	}
	return f, nil
}

// wantsNDJSON reports whether the client asked for a newline-delimited
// JSON export.
func wantsNDJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/x-ndjson" {
			return true
		}
	}
	return false
}

func (s *Server) auditQuery(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := ParseAuditFilter(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !wantsNDJSON(r) {
		p, err := s.opt.Audit.Query(r.Context(), f)
		if err != nil {
			s.writeError(w, r, auditReadError(err))
			return
		}
		writeJSON(w, http.StatusOK, p)
		return
	}
	// Export: every matching record, page after page (limit is the page
	// size, the largest by default), one JSON object per line, flushed per
	// page.
	if q.Get("limit") == "" {
		f.Limit = audit.MaxLimit
	}
	first, err := s.opt.Audit.Query(r.Context(), f)
	if err != nil {
		s.writeError(w, r, auditReadError(err))
		return
	}
	writeHeader(w, http.StatusOK, "application/x-ndjson")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	rc := http.NewResponseController(w)
	for p := first; ; {
		// An export may outlast server.write_timeout: each page gets its
		// own write deadline instead.
		_ = rc.SetWriteDeadline(time.Now().Add(exportPageTimeout))
		for _, rec := range p.Records {
			if err := enc.Encode(rec); err != nil {
				return // client went away
			}
		}
		_ = rc.Flush()
		if p.Next == "" {
			return
		}
		f.Cursor = p.Next
		if p, err = s.opt.Audit.Query(r.Context(), f); err != nil {
			// The 200 is already sent, and every line so far is a complete
			// record: ending the stream cleanly would look like a complete
			// export. Abort the connection so the client sees a failure.
			s.log(r).Error("audit export interrupted; aborting the stream", zap.Error(err))
			panic(http.ErrAbortHandler)
		}
	}
}

// exportPageTimeout bounds writing one page of an NDJSON export.
const exportPageTimeout = 30 * time.Second

func (s *Server) auditProof(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if err := checkPathText("id", id); err != nil {
		s.writeError(w, r, err)
		return
	}
	rc, err := s.opt.Audit.Receipt(r.Context(), id)
	if err != nil {
		s.writeError(w, r, auditReadError(err))
		return
	}
	writeJSON(w, http.StatusOK, rc)
}

func auditReadError(err error) error {
	switch {
	case errors.Is(err, audit.ErrNotFound):
		return fault.New(fault.NotFound, "audit_record_not_found", "no audit record has this id")
	case errors.Is(err, audit.ErrNotCheckpointed):
		return fault.Wrap(err, fault.BackendUnavailable, "audit_not_checkpointed", "the record is not covered by a signed checkpoint yet; retry shortly").WithRetryAfter(time.Second)
	case errors.Is(err, audit.ErrAnchorMissing):
		return fault.Wrap(err, fault.AuditUnavailable, "audit_anchor_missing", "no anchor holds a checkpoint of this log, so none is signed for the record until an operator runs dispenser audit adopt").WithRetryAfter(30 * time.Second)
	case errors.Is(err, audit.ErrBadCursor):
		return fault.New(fault.InvalidRequest, "bad_cursor", "cursor is not one this API returned")
	}
	return fault.Wrap(err, fault.AuditUnavailable, "audit_read_failed", "the audit trail cannot be read right now").WithRetryAfter(2 * time.Second)
}
