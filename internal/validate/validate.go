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
	// Line is the line of the configuration file the problem is at; 0
	// when unknown, NotInFile when the value came from elsewhere (a flag).
	Line int
}

// NotInFile is the Line of a value that did not come from the file (a
// command line flag replaced it): Locate leaves it without a line.
const NotInFile = -1

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Path, p.Message)
	}
	return p.Path + ": " + p.Message
}

// Problems accumulates Problem values.
type Problems struct{ list []Problem }

// Addf records a problem at path.
func (ps *Problems) Addf(path, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// Add records a problem as it is (with its line, when known).
func (ps *Problems) Add(p Problem) { ps.list = append(ps.list, p) }

// Locate sets the line of every problem that has none, from line(path); a
// path line does not know (0) is looked up by its parents (a missing key
// is reported at the section that lacks it); NotInFile stops the search.
func (ps *Problems) Locate(line func(path string) int) {
	for i := range ps.list {
		p := &ps.list[i]
		for path := p.Path; p.Line == 0 && path != ""; path = Parent(path) {
			p.Line = line(path)
		}
	}
}

// Parent is the path one level up: Parent("tenants[2].role_arn") =
// "tenants[2]", Parent("tenants[2]") = "tenants", Parent("auth") = "".
func Parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
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
