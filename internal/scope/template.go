package scope

import (
	"errors"
	"strings"
)

// templateVar is a variable of session tag and source identity templates.
type templateVar uint8

const (
	varLiteral templateVar = iota
	varOrg
	varPrincipal
	varJobID
	varTaskID
	varOperation
	varBucket
	numTemplateVars
)

// templateVarNames are the spellings of the variables, indexed by templateVar.
var templateVarNames = [numTemplateVars]string{"", "{org}", "{principal}", "{job_id}", "{task_id}", "{operation}", "{bucket}"}

// template is a compiled template: literal text and variables in order.
type template []templatePart

type templatePart struct {
	v   templateVar
	lit string // when v == varLiteral
}

// templateValues holds one request's variable values, indexed by templateVar.
type templateValues [numTemplateVars]string

var errTemplate = errors.New("unknown template variable or stray brace (allowed: " + strings.Join(templateVarNames[1:], ", ") + ")")

// compileTemplate parses s once, at configuration time, so rendering a
// request's values is a plain concatenation.
func compileTemplate(s string) (template, error) {
	var t template
	for s != "" {
		i := strings.IndexAny(s, "{}")
		if i < 0 {
			t = append(t, templatePart{lit: s})
			break
		}
		if i > 0 {
			t = append(t, templatePart{lit: s[:i]})
			s = s[i:]
		}
		v := varLiteral
		for j := varOrg; j < numTemplateVars; j++ {
			if strings.HasPrefix(s, templateVarNames[j]) {
				v = j
				break
			}
		}
		if v == varLiteral {
			return nil, errTemplate
		}
		t = append(t, templatePart{v: v})
		s = s[len(templateVarNames[v]):]
	}
	return t, nil
}

// render substitutes vals. Values are inserted verbatim; callers sanitise
// the result for its destination.
func (t template) render(vals *templateValues) string {
	if len(t) == 1 {
		if t[0].v == varLiteral {
			return t[0].lit
		}
		return vals[t[0].v]
	}
	var b strings.Builder
	for _, p := range t {
		if p.v == varLiteral {
			b.WriteString(p.lit)
		} else {
			b.WriteString(vals[p.v])
		}
	}
	return b.String()
}
