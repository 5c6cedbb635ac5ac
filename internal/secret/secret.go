// Package secret holds the Secret string type: a value that formats, logs and
// marshals as a redaction marker, so a credential cannot leak by accident
// through zap fields, fmt verbs or JSON encoding. Code that must send the
// value (the credential response) calls Reveal explicitly.
package secret

import "log/slog"

// Redacted is what every formatting path prints instead of the value.
const Redacted = "[REDACTED]"

// Secret is a sensitive string.
type Secret string

// Reveal returns the raw value. Call it only where the value is meant to
// leave the process (the credential response, an upstream request).
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer with the redaction marker.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer with the redaction marker.
func (s Secret) GoString() string { return Redacted }

// MarshalJSON implements json.Marshaler with the redaction marker.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler with the redaction marker
// (zap's reflection and YAML encoders use it).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Empty reports whether no value is set.
func (s Secret) Empty() bool { return s == "" }
