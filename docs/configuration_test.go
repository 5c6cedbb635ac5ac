package docs

import (
	"encoding"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/assumerole"
	_ "github.com/vtk/dispenser/internal/vend/mock" // registers the mock backend
	"github.com/vtk/dispenser/internal/vend/static"
)

// backendOptions are the options types of the backends whose options nest
// (sections, lists); the test walks their yaml tags like the rest of the
// configuration. A backend with only flat options (mock) needs no entry:
// its keys are read from the loader's own list of known keys, which the
// test also checks every entry here against.
var backendOptions = map[string]reflect.Type{
	"static":      reflect.TypeOf(static.Options{}),
	"assume-role": reflect.TypeOf(assumerole.Options{}),
}

// The conventions of configuration.md that this test reads (the page
// states them at its top):
//   - every key is a row of a table whose header's first cell is "key";
//     the row's first cell holds the key's full path in backticks (more
//     than one key may share a row);
//   - list items are written [] (tenants[].org), map keys as a name in
//     angle brackets (backends.<name>.type, rate_limits.tenants.<org>);
//   - a backend type's options (backends.<name>.OPTION) are listed under a
//     heading that names the type as `type: NAME`;
//   - a row `X.*` whose meaning names another key `Y.*` says X takes
//     exactly the keys of Y (admin.jwt.* and auth.jwt.*); the test checks
//     both have the same type.

var placeholder = regexp.MustCompile(`<[^>]*>`)

// norm makes map-key placeholders comparable: <org> and <name> are both <>.
func norm(key string) string { return placeholder.ReplaceAllString(key, "<>") }

var (
	unmarshalerType     = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// keyTree records every key under a prefix: leaves (values a user writes)
// and sections (keys holding more keys), with the Go type of each.
type keyTree struct {
	leaves   map[string]reflect.Type
	sections map[string]reflect.Type
}

func newKeyTree() *keyTree {
	return &keyTree{leaves: map[string]reflect.Type{}, sections: map[string]reflect.Type{}}
}

// walk records the keys of a value of type t at path, as the configuration
// loader reads them: the yaml tag's name, else the lower-cased field name;
// "-" and unexported fields are not keys; ",inline" structs contribute
// their keys; types that decode themselves are values.
func (k *keyTree) walk(t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		k.leaves[path] = t
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if path != "" {
			k.sections[path] = t
		}
		k.fields(t, path)
	case reflect.Slice:
		if isValue(t.Elem()) {
			k.leaves[path] = t
			return
		}
		k.sections[path] = t
		k.walk(t.Elem(), path+"[]")
	case reflect.Map:
		if isValue(t.Elem()) {
			k.leaves[path] = t
			return
		}
		k.sections[path] = t
		k.walk(t.Elem(), path+".<>")
	default:
		k.leaves[path] = t
	}
}

func (k *keyTree) fields(t reflect.Type, path string) {
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") && sf.Type.Kind() == reflect.Struct {
			k.fields(sf.Type, path)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		child := name
		if path != "" {
			child = path + "." + name
		}
		// The backends map holds specs that decode themselves: each
		// backend type's options are added by backendKeys.
		if sf.Type == reflect.TypeOf(map[string]vend.Spec{}) {
			k.sections[child] = sf.Type
			k.leaves[child+".<>.type"] = reflect.TypeOf("")
			continue
		}
		k.walk(sf.Type, child)
	}
}

// isValue reports whether a list or map of t is one value (strings,
// numbers, durations) rather than a list or map of sections.
func isValue(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Slice, reflect.Map:
		return false
	}
	return true
}

// probeKeys returns the top-level option keys of backend type typ, as the
// loader lists them in its "unknown key" problem.
func probeKeys(t *testing.T, typ string) []string {
	t.Helper()
	const probe = "zzzzzzzzzzzzzzzzzzzzzzzz"
	var spec vend.Spec
	if err := yaml.Unmarshal([]byte("{type: "+typ+", "+probe+": 1}"), &spec); err != nil {
		t.Fatal(err)
	}
	var p validate.Problems
	vend.Build(map[string]vend.Spec{"probe": spec}, vend.Deps{}, &p)
	for _, pr := range p.List() {
		if pr.Path != "backends.probe."+probe {
			continue
		}
		if strings.HasPrefix(pr.Message, "unknown key") && !strings.Contains(pr.Message, "known keys here: ") {
			return nil // no options at all
		}
		_, list, ok := strings.Cut(pr.Message, "known keys here: ")
		if !ok {
			break
		}
		return strings.Split(strings.TrimSuffix(list, ")"), ", ")
	}
	t.Fatalf("backend type %s: the loader did not list its known keys for an unknown one: %v", typ, p.List())
	return nil
}

// backendKeys returns, per registered backend type, the keys of its
// options under backends.<>.
func backendKeys(t *testing.T) map[string]*keyTree {
	t.Helper()
	out := map[string]*keyTree{}
	for _, typ := range vend.Types() {
		k := newKeyTree()
		top := probeKeys(t, typ)
		if rt, ok := backendOptions[typ]; ok {
			k.walk(rt, "backends.<>")
			delete(k.sections, "backends.<>")
			var got []string
			for _, name := range top {
				if _, leaf := k.leaves["backends.<>."+name]; !leaf {
					if _, sec := k.sections["backends.<>."+name]; !sec {
						got = append(got, name)
					}
				}
			}
			if len(got) > 0 {
				t.Errorf("backend type %s decodes keys %v that %v does not have: update backendOptions in this test", typ, got, rt)
			}
		} else {
			for _, name := range top {
				k.leaves["backends.<>."+name] = nil
			}
		}
		out[typ] = k
	}
	return out
}

// registeredTypes lists the backend types registered anywhere under
// internal/vend (vend.Register's first argument), so a new backend package
// this test does not link is noticed.
func registeredTypes(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	var out []string
	err := filepath.WalkDir("../internal/vend", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		consts := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok {
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[name.Name] = strings.Trim(lit.Value, "\"`")
						}
					}
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Register" {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "vend" {
				return true
			}
			switch a := call.Args[0].(type) {
			case *ast.BasicLit:
				out = append(out, strings.Trim(a.Value, "\"`"))
			case *ast.Ident:
				if v, ok := consts[a.Name]; ok {
					out = append(out, v)
				} else {
					t.Errorf("%s: cannot read the backend type registered here", fset.Position(call.Pos()))
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// documentedKey is one key row of configuration.md.
type documentedKey struct {
	line    int
	backend string // the `type: NAME` heading it is under, if any
	meaning string
}

var typeHeading = regexp.MustCompile("`type: ([a-z0-9-]+)`")

// documentedKeys reads the key tables of the page.
func documentedKeys(t *testing.T, path string) map[string][]documentedKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]documentedKey{}
	lines := strings.Split(string(b), "\n")
	backend := ""
	in := false
	fence := false
	for i, line := range lines {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		if strings.HasPrefix(line, "#") {
			backend = ""
			if m := typeHeading.FindStringSubmatch(line); m != nil {
				backend = m[1]
			}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			in = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := strings.TrimSpace(cells[0])
		if !in {
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|") && strings.Contains(lines[i+1], "---") {
				in = strings.EqualFold(first, "key")
			}
			continue
		}
		if strings.Contains(first, "---") {
			continue
		}
		keys := backticked.FindAllStringSubmatch(first, -1)
		if len(keys) == 0 {
			t.Errorf("%s:%d: a key row without a `key` in its first cell", path, i+1)
		}
		for _, m := range keys {
			out[m[1]] = append(out[m[1]], documentedKey{line: i + 1, backend: backend, meaning: strings.Join(cells[1:], "|")})
		}
	}
	return out
}

func TestConfigurationDocCoversEveryKey(t *testing.T) {
	const page = "configuration.md"
	code := newKeyTree()
	code.walk(reflect.TypeOf(config.Config{}), "")
	if len(code.leaves) < 100 {
		t.Fatalf("found only %d configuration keys: the walker is broken", len(code.leaves))
	}
	if got, want := registeredTypes(t), vend.Types(); !reflect.DeepEqual(got, want) {
		t.Fatalf("backend types registered in internal/vend %v, linked into this test %v: import the missing backend package here", got, want)
	}
	backends := backendKeys(t)
	doc := documentedKeys(t, page)

	// Expand `X.*` rows into X's keys, from the `Y.*` their meaning names.
	for key, rows := range doc {
		if !strings.HasSuffix(key, ".*") {
			continue
		}
		delete(doc, key)
		x := norm(strings.TrimSuffix(key, ".*"))
		for _, row := range rows {
			m := regexp.MustCompile("`([^`]+)\\.\\*`").FindAllStringSubmatch(row.meaning, -1)
			if len(m) != 1 {
				t.Errorf("%s:%d: %s must name exactly one other `KEY.*` it takes the keys of", page, row.line, key)
				continue
			}
			y := norm(m[0][1])
			if code.sections[x] == nil || code.sections[x] != code.sections[y] {
				t.Errorf("%s:%d: %s is documented as the keys of %s.*, but they are not sections of the same type", page, row.line, key, y)
				continue
			}
			for leaf := range code.leaves {
				if strings.HasPrefix(leaf, y+".") || strings.HasPrefix(leaf, y+"[") {
					for _, d := range doc[leaf] {
						alias := x + strings.TrimPrefix(leaf, y)
						doc[alias] = append(doc[alias], documentedKey{line: row.line, backend: d.backend})
					}
				}
			}
		}
	}

	documented := map[string]bool{}              // normalized, outside backend sections
	documentedBy := map[string]map[string]bool{} // backend type → normalized keys
	for key, rows := range doc {
		n := norm(key)
		for _, row := range rows {
			inBackend := strings.HasPrefix(n, "backends.<>.") && n != "backends.<>.type"
			switch {
			case inBackend && row.backend == "":
				t.Errorf("%s:%d: backend option %s is not under a heading naming its `type: NAME`", page, row.line, key)
			case inBackend:
				if documentedBy[row.backend] == nil {
					documentedBy[row.backend] = map[string]bool{}
				}
				documentedBy[row.backend][n] = true
				k, ok := backends[row.backend]
				if !ok {
					t.Errorf("%s:%d: %s is documented for backend type %s, which does not exist", page, row.line, key, row.backend)
				} else if _, leaf := k.leaves[n]; !leaf && k.sections[n] == nil {
					t.Errorf("%s:%d: backend type %s has no option %s", page, row.line, row.backend, key)
				}
			default:
				documented[n] = true
				if _, leaf := code.leaves[n]; !leaf && code.sections[n] == nil {
					t.Errorf("%s:%d: documents %s, which is not a configuration key", page, row.line, key)
				}
			}
		}
	}

	var missing []string
	for leaf := range code.leaves {
		if !documented[leaf] {
			missing = append(missing, leaf)
		}
	}
	for typ, k := range backends {
		for leaf := range k.leaves {
			if !documentedBy[typ][leaf] {
				missing = append(missing, leaf+" (backend type "+typ+")")
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("configuration key %s is missing from docs/%s", strings.ReplaceAll(m, "<>", "<name>"), page)
	}
}
