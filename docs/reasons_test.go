package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The reason codes a caller or operator sees (audit records, logs, the
// reason label of dispenser_issuances_total and dispenser_auth_failures_total)
// are the reason arguments of fault.New and fault.Wrap in production code.
// TestTroubleshootingCoversEveryReason fails when one of them is missing
// from troubleshooting.md, or when the page documents a reason no
// production code can produce.
//
// The reasons are collected from the syntax alone (no type checking): a
// string literal, a string constant, a concatenation, a parameter of the
// enclosing function (followed to that function's call sites in the same
// package), a local variable (followed to its assignments) or the result of
// a function of the same package (followed to its return statements).
// What cannot be followed becomes a wildcard ("rate_limited_" + a value
// read from a data structure is "rate_limited_*"), which the page must
// match with at least one documented reason.

// reasonArg is the index of the reason argument of fault's constructors.
var reasonArg = map[string]int{"New": 1, "Wrap": 2}

// wildcard stands for the part of a reason the collector cannot follow.
const wildcard = "\x00"

// maxFollow bounds how far the collector follows parameters, variables and
// calls (it also breaks cycles).
const maxFollow = 6

// goPackage is one directory's production Go files.
type goPackage struct {
	name   string
	files  []*ast.File
	consts map[string]ast.Expr        // package-level constants
	funcs  map[string][]*ast.FuncDecl // functions and methods by name
}

// site is a node together with the functions (outermost first) it is in.
type site struct {
	pkg   *goPackage
	funcs []ast.Node // *ast.FuncDecl or *ast.FuncLit
}

// collectReasons returns every reason (wildcards as "*") that production
// code under roots passes to fault.New or fault.Wrap, each with one source
// position; a reason argument it cannot follow at all fails the test.
func collectReasons(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	pkgs := map[string]*goPackage{}
	byName := map[string][]*goPackage{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			dir := filepath.Dir(path)
			p := pkgs[dir]
			if p == nil {
				p = &goPackage{name: f.Name.Name, consts: map[string]ast.Expr{}, funcs: map[string][]*ast.FuncDecl{}}
				pkgs[dir] = p
				byName[p.name] = append(byName[p.name], p)
			}
			p.files = append(p.files, f)
			for _, decl := range f.Decls {
				switch d := decl.(type) {
				case *ast.FuncDecl:
					p.funcs[d.Name.Name] = append(p.funcs[d.Name.Name], d)
				case *ast.GenDecl:
					if d.Tok != token.CONST {
						continue
					}
					for _, spec := range d.Specs {
						vs := spec.(*ast.ValueSpec)
						for i, n := range vs.Names {
							if i < len(vs.Values) {
								p.consts[n.Name] = vs.Values[i]
							}
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	c := &collector{fset: fset, byName: byName}
	out := map[string]string{}
	for _, p := range pkgs {
		if p.name == "fault" {
			// fault.From's reason for an error that is not a *fault.Error.
			for _, f := range p.files {
				ast.Inspect(f, func(n ast.Node) bool {
					if kv, ok := n.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Reason" {
							if lit, ok := kv.Value.(*ast.BasicLit); ok && lit.Kind == token.STRING {
								v, _ := strconv.Unquote(lit.Value)
								out[v] = fset.Position(kv.Pos()).String()
							}
						}
					}
					return true
				})
			}
			continue
		}
		for _, f := range p.files {
			faultName := importName(f, "/internal/fault")
			if faultName == "" {
				continue
			}
			walkWithFuncs(f, nil, func(n ast.Node, funcs []ast.Node) {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return
				}
				x, ok := sel.X.(*ast.Ident)
				i, isCtor := reasonArg[sel.Sel.Name]
				if !ok || x.Name != faultName || !isCtor || len(call.Args) <= i {
					return
				}
				pos := fset.Position(call.Pos()).String()
				vals := c.resolve(call.Args[i], site{p, funcs}, 0)
				if len(vals) == 0 {
					t.Errorf("%s: cannot tell which reason fault.%s is given here; pass a constant (or extend this collector)", pos, sel.Sel.Name)
				}
				for _, v := range vals {
					key := strings.ReplaceAll(v, wildcard, "*")
					if _, seen := out[key]; !seen {
						out[key] = pos
					}
				}
			})
		}
	}
	return out
}

// importName is the name file f uses for the import whose path ends in
// suffix, or "".
func importName(f *ast.File, suffix string) string {
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if !strings.HasSuffix(path, suffix) {
			continue
		}
		if imp.Name != nil {
			return imp.Name.Name
		}
		return path[strings.LastIndex(path, "/")+1:]
	}
	return ""
}

// walkWithFuncs calls visit for every node under n with the functions
// enclosing it.
func walkWithFuncs(n ast.Node, funcs []ast.Node, visit func(ast.Node, []ast.Node)) {
	ast.Inspect(n, func(m ast.Node) bool {
		if m == nil || m == n {
			return true
		}
		switch m.(type) {
		case *ast.FuncDecl, *ast.FuncLit:
			inner := append(append([]ast.Node(nil), funcs...), m)
			visit(m, funcs)
			walkWithFuncs(m, inner, visit)
			return false
		}
		visit(m, funcs)
		return true
	})
}

type collector struct {
	fset   *token.FileSet
	byName map[string][]*goPackage
}

// resolve returns the strings e may evaluate to (wildcard for parts it
// cannot follow), or nil when it cannot say anything about e.
func (c *collector) resolve(e ast.Expr, s site, depth int) []string {
	if depth > maxFollow {
		return []string{wildcard}
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			if v, err := strconv.Unquote(e.Value); err == nil {
				return []string{v}
			}
		}
	case *ast.ParenExpr:
		return c.resolve(e.X, s, depth)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return nil
		}
		// An empty value of a variable part is a branch that never reaches
		// fault (limiter.take's "no limit hit"), not a reason of its own.
		l, r := nonEmpty(c.resolve(e.X, s, depth+1)), nonEmpty(c.resolve(e.Y, s, depth+1))
		var out []string
		for _, a := range l {
			for _, b := range r {
				out = append(out, a+b)
			}
		}
		return out
	case *ast.SelectorExpr:
		// A constant of another package: pkg.Name.
		if x, ok := e.X.(*ast.Ident); ok {
			for _, p := range c.byName[x.Name] {
				if v, ok := p.consts[e.Sel.Name]; ok {
					return c.resolve(v, site{pkg: p}, depth+1)
				}
			}
		}
	case *ast.CallExpr:
		// A conversion such as string(kind).
		if id, ok := e.Fun.(*ast.Ident); ok && id.Name == "string" && len(e.Args) == 1 {
			return c.resolve(e.Args[0], s, depth+1)
		}
		return c.results(e, 0, s, depth)
	case *ast.Ident:
		return c.ident(e.Name, s, depth)
	}
	return nil
}

// nonEmpty drops empty values; nothing left is a wildcard.
func nonEmpty(vals []string) []string {
	var out []string
	for _, v := range vals {
		if v != "" {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return []string{wildcard}
	}
	return out
}

// ident resolves a name: a local variable or parameter of the enclosing
// functions (innermost first), else a constant of the package.
func (c *collector) ident(name string, s site, depth int) []string {
	for i := len(s.funcs) - 1; i >= 0; i-- {
		fn := s.funcs[i]
		inner := site{s.pkg, s.funcs[:i+1]}
		if idx, ok := paramIndex(fn, name); ok {
			decl, isDecl := fn.(*ast.FuncDecl)
			if !isDecl {
				return []string{wildcard}
			}
			return c.callSites(decl.Name.Name, idx, s.pkg, depth)
		}
		if vals, found := c.assignments(name, fn, inner, depth); found {
			return vals
		}
	}
	if v, ok := s.pkg.consts[name]; ok {
		return c.resolve(v, site{pkg: s.pkg}, depth+1)
	}
	return nil
}

// paramIndex is the position of parameter name in fn's signature.
func paramIndex(fn ast.Node, name string) (int, bool) {
	var ft *ast.FuncType
	switch fn := fn.(type) {
	case *ast.FuncDecl:
		ft = fn.Type
	case *ast.FuncLit:
		ft = fn.Type
	}
	i := 0
	for _, field := range ft.Params.List {
		if len(field.Names) == 0 {
			i++
			continue
		}
		for _, n := range field.Names {
			if n.Name == name {
				return i, true
			}
			i++
		}
	}
	return 0, false
}

// callSites resolves argument idx of every call to the function or method
// named fn in pkg.
func (c *collector) callSites(fn string, idx int, pkg *goPackage, depth int) []string {
	var out []string
	for _, f := range pkg.files {
		walkWithFuncs(f, nil, func(n ast.Node, funcs []ast.Node) {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) <= idx {
				return
			}
			switch fun := call.Fun.(type) {
			case *ast.Ident:
				if fun.Name != fn {
					return
				}
			case *ast.SelectorExpr:
				if fun.Sel.Name != fn {
					return
				}
			default:
				return
			}
			vals := c.resolve(call.Args[idx], site{pkg, funcs}, depth+1)
			if len(vals) == 0 {
				vals = []string{wildcard}
			}
			out = append(out, vals...)
		})
	}
	return out
}

// assignments resolves every value assigned to name directly in fn's body
// (not in nested function literals), reporting whether name is declared
// or assigned there at all.
func (c *collector) assignments(name string, fn ast.Node, s site, depth int) ([]string, bool) {
	var body *ast.BlockStmt
	switch fn := fn.(type) {
	case *ast.FuncDecl:
		body = fn.Body
	case *ast.FuncLit:
		body = fn.Body
	}
	if body == nil {
		return nil, false
	}
	var out []string
	found := false
	add := func(vals []string) {
		if len(vals) == 0 {
			vals = []string{wildcard}
		}
		out = append(out, vals...)
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				id, ok := lhs.(*ast.Ident)
				if !ok || id.Name != name {
					continue
				}
				found = true
				switch {
				case len(n.Rhs) == len(n.Lhs):
					add(c.resolve(n.Rhs[i], s, depth+1))
				case len(n.Rhs) == 1:
					if call, ok := n.Rhs[0].(*ast.CallExpr); ok {
						add(c.results(call, i, s, depth))
					} else {
						add(nil)
					}
				}
			}
		case *ast.ValueSpec:
			for i, id := range n.Names {
				if id.Name != name {
					continue
				}
				found = true
				if i < len(n.Values) {
					add(c.resolve(n.Values[i], s, depth+1))
				} else if len(n.Values) == 1 {
					if call, ok := n.Values[0].(*ast.CallExpr); ok {
						add(c.results(call, i, s, depth))
					}
				}
			}
		}
		return true
	})
	return out, found
}

// results resolves result idx of a call to a function or method of the
// same package, from its return statements.
func (c *collector) results(call *ast.CallExpr, idx int, s site, depth int) []string {
	var name string
	switch fun := call.Fun.(type) {
	case *ast.Ident:
		name = fun.Name
	case *ast.SelectorExpr:
		name = fun.Sel.Name
	default:
		return nil
	}
	decls := s.pkg.funcs[name]
	if len(decls) == 0 {
		return nil
	}
	var out []string
	for _, d := range decls {
		if d.Body == nil {
			continue
		}
		ast.Inspect(d.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncLit:
				return false
			case *ast.ReturnStmt:
				if idx < len(n.Results) {
					vals := c.resolve(n.Results[idx], site{s.pkg, []ast.Node{d}}, depth+1)
					if len(vals) == 0 {
						vals = []string{wildcard}
					}
					out = append(out, vals...)
				}
			}
			return true
		})
	}
	return out
}

// docTables returns the first cells of the rows of every table in the
// markdown file whose header's first cell is header, each split into the
// backticked values it holds, with the row's line number.
func docTables(t *testing.T, path, header string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	in := false
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		if !strings.HasPrefix(line, "|") {
			in = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := strings.TrimSpace(cells[0])
		if !in {
			// A header row is followed by the |---| delimiter row.
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|") && strings.Contains(lines[i+1], "---") {
				in = strings.EqualFold(first, header)
			}
			continue
		}
		if strings.HasPrefix(first, "---") || strings.HasPrefix(first, ":--") {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(first, -1) {
			if _, dup := out[m[1]]; !dup {
				out[m[1]] = i + 1
			}
		}
	}
	return out
}

var backticked = regexp.MustCompile("`([^`]+)`")

// matches reports whether reason matches pattern, whose '*' stand for any
// non-empty run of characters.
func matches(pattern, reason string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".+") + "$"
	return regexp.MustCompile(re).MatchString(reason)
}

func TestTroubleshootingCoversEveryReason(t *testing.T) {
	reasons := collectReasons(t, "../internal", "../cmd")
	if len(reasons) < 50 {
		t.Fatalf("collected only %d reasons: the collector is broken", len(reasons))
	}
	documented := docTables(t, "troubleshooting.md", "reason")
	var missing []string
	for r, pos := range reasons {
		if !strings.Contains(r, "*") {
			if _, ok := documented[r]; !ok {
				missing = append(missing, r+" ("+pos+")")
			}
			continue
		}
		found := false
		for d := range documented {
			if matches(r, d) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, r+" (no documented reason matches; "+pos+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("reason %s is missing from docs/troubleshooting.md (a row of a table whose first column is \"reason\")", m)
	}
	for d, line := range documented {
		ok := false
		for r := range reasons {
			if r == d || (strings.Contains(r, "*") && matches(r, d)) {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("docs/troubleshooting.md:%d documents reason %q, which no production code produces", line, d)
		}
	}
}

// TestTroubleshootingCoversEveryCode checks every fault code (the "code"
// of an error answer) has its row.
func TestTroubleshootingCoversEveryCode(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../internal/fault/fault.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok {
					s, _ := strconv.Unquote(lit.Value)
					codes = append(codes, s)
				}
			}
		}
	}
	if len(codes) < 5 {
		t.Fatalf("found only %d codes in internal/fault", len(codes))
	}
	documented := docTables(t, "troubleshooting.md", "code")
	for _, c := range codes {
		if _, ok := documented[c]; !ok {
			t.Errorf("error code %s is missing from docs/troubleshooting.md (a table whose first column is \"code\")", c)
		}
	}
}
