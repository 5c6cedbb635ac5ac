package fault

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestFromAndIs(t *testing.T) {
	cause := errors.New("dial tcp: secret-host")
	fe := Wrap(cause, BackendUnavailable, "sts_error", "STS failed for %s", "acme").WithRetryAfter(3 * time.Second)
	wrapped := fmt.Errorf("vend: %w", fe)
	got := From(wrapped)
	if got != fe || got.RetryAfter != 3*time.Second || got.Message != "STS failed for acme" || !errors.Is(wrapped, cause) {
		t.Fatalf("From: %+v", got)
	}
	if !Is(wrapped, BackendUnavailable) || Is(wrapped, AccessDenied) || Is(cause, BackendUnavailable) {
		t.Fatal("Is")
	}
	if !strings.Contains(fe.Error(), "secret-host") {
		t.Fatal("Error() drops the internal cause (needed in logs)")
	}
	plain := From(cause)
	if plain.Code != InternalError || plain.Message != "internal error" || plain.Reason != "internal" || strings.Contains(plain.Message, "secret") {
		t.Fatalf("untyped error: %+v", plain)
	}
	if From(nil) != nil {
		t.Fatal("From(nil)")
	}
	if e := New(AccessDenied, "r", "m %d", 1); e.Err != nil || e.Error() != "AccessDenied: m 1" {
		t.Fatalf("New: %v", e)
	}
}
