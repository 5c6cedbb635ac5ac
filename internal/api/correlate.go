package api

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/fault"
)

// CorrelateSettings configure POST /v1/audit/correlate.
type CorrelateSettings struct {
	// MaxBodyBytes bounds the CloudTrail document, compressed and after
	// decompression (0: correlate.DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// ClockSkew is tolerated around a key's lifetime.
	ClockSkew time.Duration
}

var correlateParams = map[string]bool{"since": true, "until": true, "by": true, "all": true}

// correlateQuery reads the query parameters of POST /v1/audit/correlate.
func correlateQuery(q map[string][]string) (opt correlate.RunOptions, since, until time.Time, err error) {
	for k, v := range q {
		if !correlateParams[k] {
			return opt, since, until, fault.New(fault.InvalidRequest, "unknown_parameter", "unknown query parameter %q", truncate(k, 40))
		}
		if len(v) > 1 {
			return opt, since, until, fault.New(fault.InvalidRequest, "repeated_parameter", "query parameter %q is given more than once", k)
		}
	}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if opt.By, err = correlate.ParseBy(get("by")); err != nil {
		return opt, since, until, fault.New(fault.InvalidRequest, "bad_by", "by must be event or task")
	}
	if v := get("all"); v != "" {
		if opt.All, err = strconv.ParseBool(v); err != nil {
			return opt, since, until, fault.New(fault.InvalidRequest, "bad_all", "all must be true or false")
		}
	}
	for _, t := range []struct {
		name string
		out  *time.Time
	}{{"since", &since}, {"until", &until}} {
		if v := get(t.name); v != "" {
			if *t.out, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return opt, since, until, fault.New(fault.InvalidRequest, "bad_time", "%s must be an RFC 3339 time such as 2026-03-01T12:00:00Z", t.name)
			}
		}
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return opt, since, until, fault.New(fault.InvalidRequest, "bad_filter", "until must be after since")
	}
	return opt, since, until, nil
}

// tooLarge is the refusal of a CloudTrail document over the limit.
func tooLarge(limit int64) error {
	return fault.New(fault.RequestTooLarge, "body_too_large",
		"the CloudTrail document is larger than %d bytes (correlate.max_body_bytes, counted after decompression)", limit)
}

// correlateBody reads the CloudTrail document, gunzipping it when it is
// gzip (by Content-Encoding or its magic bytes). Both the body and the
// decompressed document are bounded by limit. A corrupt or truncated gzip
// stream is not an HTTP error: what decompressed is correlated and the
// damage is reported as a problem, as the CLI does for a file.
func correlateBody(w http.ResponseWriter, r *http.Request, limit int64) (doc []byte, gzipErr error, err error) {
	tooBig := tooLarge(limit)
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, tooBig
		}
		return nil, nil, fault.Wrap(err, fault.InvalidRequest, "bad_body", "the request body could not be read")
	}
	gz := r.Header.Get("Content-Encoding") == "gzip" || (len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b)
	if !gz {
		return raw, nil, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err), nil
	}
	doc, err = io.ReadAll(io.LimitReader(zr, limit+1))
	if int64(len(doc)) > limit {
		return nil, nil, tooBig
	}
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = errors.New("truncated gzip stream")
		}
		return doc, fmt.Errorf("gzip: %w", err), nil
	}
	return doc, nil, nil
}

// auditCorrelate answers POST /v1/audit/correlate: the JSON of
// `dispenser audit correlate --format json` for a CloudTrail document in
// the body. The answer is built in memory (bounded by the body limit)
// so a trail failure is a clean 503 rather than a cut-off 200.
func (s *Server) auditCorrelate(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	opt, since, until, err := correlateQuery(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := s.opt.Correlate.MaxBodyBytes
	if limit <= 0 {
		limit = correlate.DefaultMaxBodyBytes
	}
	doc, gzipErr, err := correlateBody(w, r, limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var roles []correlate.Role
	for _, tr := range s.rules.Load().TenantRoles() {
		roles = append(roles, correlate.Role{ARN: tr.RoleARN, Org: tr.Org})
	}
	c, err := correlate.New(correlate.Options{Trail: s.opt.Audit, Roles: roles, ClockSkew: s.opt.Correlate.ClockSkew, Since: since, Until: until})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	const source = "request body"
	if gzipErr != nil {
		c.Problem(cloudtrail.Problem{Position: cloudtrail.Position{Source: source, Index: -1}, Message: gzipErr.Error()})
	}
	var out bytes.Buffer
	// The document in the body may be gzipped again (a .json.gz sent with
	// Content-Encoding: gzip): the limit holds for what that inflates to.
	rd := &cloudtrail.Reader{MaxBytes: limit}
	_, err = correlate.Correlate(r.Context(), c, rd, func(v cloudtrail.Visitor) error {
		if len(bytes.TrimSpace(doc)) == 0 && gzipErr == nil {
			c.Problem(cloudtrail.Problem{Position: cloudtrail.Position{Source: source, Index: -1}, Message: "empty body: send a CloudTrail log file"})
			return nil
		}
		return rd.ScanStream(r.Context(), source, bytes.NewReader(doc), v)
	}, opt, correlate.NewJSONWriter(&out, opt.By))
	if errors.Is(err, cloudtrail.ErrTooLarge) {
		s.writeError(w, r, tooLarge(limit))
		return
	}
	if err != nil {
		s.writeError(w, r, auditReadError(err))
		return
	}
	writeHeader(w, http.StatusOK, "application/json")
	_, _ = w.Write(out.Bytes())
}
