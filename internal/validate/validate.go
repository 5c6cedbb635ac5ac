// Package validate collects configuration problems with their field paths, so
// `dispenser check-config` can print every problem at once and `serve` can
// fail fast on the same list. Each configuration section validates itself
// into a shared *Problems.
package validate

import (
	"fmt"
	"strings"
)

// Problem is one invalid configuration value.
type Problem struct {
	Path    string // e.g. tenants[0].grants[1].bucket
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Problems accumulates Problem values.
type Problems struct{ list []Problem }

// Addf records a problem at path.
func (ps *Problems) Addf(path, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// List returns the problems in the order they were found.
func (ps *Problems) List() []Problem { return ps.list }

// Err returns nil when there are no problems, else an error listing them all.
func (ps *Problems) Err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &Error{Problems: append([]Problem(nil), ps.list...)}
}

// Error is returned by Err.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("invalid configuration (%d problem(s)):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// Join builds a child path: Join("tenants", 2, "role_arn") = "tenants[2].role_arn".
func Join(parts ...any) string {
	var b strings.Builder
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		case string:
			if b.Len() > 0 && !strings.HasPrefix(v, "[") {
				b.WriteByte('.')
			}
			b.WriteString(v)
		default:
			fmt.Fprintf(&b, ".%v", v)
		}
	}
	return b.String()
}
