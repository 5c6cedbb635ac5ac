package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/validate"
)

// FuzzParse feeds arbitrary files to the loader: nothing may panic, a
// syntax error returns no configuration, and every problem names a path.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", minimal, "server: {listn: x}\n", "tenants: [{grants: media}]\n", "a: &a [*a]\n", "a: &a {<<: *a}\n", "server: &s {tls: *s}\n", "tenants: &t [{grants: *t}]\n", "server: &s {<<: [*s, *s]}\n",
		"backends: {x: {type: mock, account_id: [1]}}\n", "<<: {server: 1}\n", "rate_limits: {tenants: {1: {per_org: 2}}}\n",
		"audit: {batch_wait: ~, retention: 1.5}\n", "server:\n  listen: a\n  listen: b\n", "- 1\n- 2\n", "server: !!binary aGk=\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, y string) {
		c, err := Parse([]byte(y))
		if err == nil {
			return
		}
		var ve *validate.Error
		if !errors.As(err, &ve) {
			if c != nil || !strings.HasPrefix(err.Error(), "parse YAML") {
				t.Fatalf("%q: config %v with a non-validation error %v", y, c != nil, err)
			}
			return
		}
		if c == nil {
			t.Fatalf("%q: validation problems without the config", y)
		}
		for _, p := range ve.Problems {
			if p.Message == "" {
				t.Fatalf("%q: empty problem %+v", y, p)
			}
		}
	})
}
