// Package fault is the dispenser's one error type: an internal cause that is
// logged and a client-safe code and message that are rendered. Packages return
// *fault.Error (or wrap one); only internal/api maps a Code to an HTTP status.
package fault

import (
	"errors"
	"fmt"
	"time"
)

// Code is the machine-readable error code rendered as "code" in the
// {"code","message"} body that AWS SDKs parse.
type Code string

// The codes of the HTTP contract (openapi.yaml lists them with their statuses).
const (
	InvalidRequest     Code = "InvalidRequest"
	Unauthorized       Code = "Unauthorized"
	AccessDenied       Code = "AccessDenied"
	NotFound           Code = "NotFound"
	MethodNotAllowed   Code = "MethodNotAllowed"
	RequestTooLarge    Code = "RequestTooLarge"
	Throttled          Code = "Throttled"
	BackendUnavailable Code = "BackendUnavailable"
	AuditUnavailable   Code = "AuditUnavailable"
	InternalError      Code = "InternalError"
)

// Error is a decision the dispenser can explain to its caller. Message must be
// safe to show the caller and to log: it never contains a secret. Err holds
// the internal cause, which is logged but never rendered.
type Error struct {
	Code    Code
	Message string
	// Reason is a low-cardinality reason code for metrics and the audit trail
	// (for example "no_matching_grant", "bad_location", "sts_throttled").
	Reason string
	// RetryAfter, when non-zero, tells the caller when to try again; for
	// BackendUnavailable it also means "transient" (503 rather than 502).
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with a formatted client-safe message.
func New(code Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error that keeps err as its internal cause.
func Wrap(err error, code Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...), Err: err}
}

// WithRetryAfter sets RetryAfter and returns e for chaining.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	e.RetryAfter = d
	return e
}

// From returns the *Error in err's chain, or an InternalError wrapping err
// whose message reveals nothing of the cause.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	return &Error{Code: InternalError, Reason: "internal", Message: "internal error", Err: err}
}

// Is reports whether err carries a fault with the given code.
func Is(err error, code Code) bool {
	var fe *Error
	return errors.As(err, &fe) && fe.Code == code
}
