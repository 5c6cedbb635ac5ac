// Package strictyaml decodes a YAML configuration into Go structs and
// reports every problem at once, in the words of the file: each unknown key
// (with the known key it probably meant), each key set twice and each value
// of the wrong type, with its YAML path (server.listen, tenants[0].grants)
// and its line. yaml.v3's strict decoding stops at the first error of a
// custom unmarshaler and names Go types ("field listn not found in type
// config.ServerConfig"); this walks the node tree against the structs' yaml
// tags instead and decodes each leaf on its own.
//
// It also makes relative paths in a configuration file relative to the
// file's directory: a string field tagged `config:"path"` holding a relative
// path is joined with Options.Dir as it is decoded, so every consumer sees a
// path that works from any working directory. `config:"sink"` is the same
// for a log destination, where "stdout", "stderr" and URLs stay as written.
package strictyaml

import (
	"encoding"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/validate"
)

// Options tune one Decode.
type Options struct {
	// Dir is the directory relative paths are resolved against (the
	// configuration file's); empty leaves them as written.
	Dir string
	// Ignore lists keys of the top-level mapping that belong to someone
	// else (a backend's `type`, read by the registry).
	Ignore []string
}

// maxNodes bounds the nodes one Decode visits, so aliases that expand
// exponentially cannot stall the loader; maxDepth bounds nesting (an alias
// inside the node it names would nest forever).
const (
	maxNodes = 200_000
	maxDepth = 64
)

// Decode decodes n into v, a non-nil pointer, recording problems in p with
// paths under path. It decodes everything it can: a value with a problem is
// left at its zero value and the rest is still decoded. It returns the
// number of problems it recorded.
func Decode(n *yaml.Node, v any, p *validate.Problems, path string, o Options) int {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("strictyaml: Decode needs a non-nil pointer")
	}
	d := &decoder{p: p, opt: o}
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return 0
		}
		n = n.Content[0]
	}
	if n == nil || n.Kind == 0 {
		return 0
	}
	d.value(n, rv.Elem(), path, fieldInfo{}, o.Ignore, 0)
	return d.count
}

// Lines maps the path of every key and list item under n to its line, for
// placing problems found after decoding (validation) in the file. Aliases
// are not followed: what they name is placed at its anchor.
func Lines(n *yaml.Node, path string) map[string]int {
	out := map[string]int{}
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return out
		}
		n = n.Content[0]
	}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if depth > maxDepth {
			return
		}
		switch n.Kind {
		case yaml.MappingNode:
			for _, kv := range pairs(n) {
				if kv.key.Kind != yaml.ScalarNode {
					continue
				}
				child := validate.Join(path, kv.key.Value)
				if _, seen := out[child]; !seen {
					out[child] = kv.key.Line
				}
				walk(kv.value, child, depth+1)
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				child := validate.Join(path, i)
				out[child] = item.Line
				walk(item, child, depth+1)
			}
		}
	}
	walk(n, path, 0)
	return out
}

type decoder struct {
	p      *validate.Problems
	opt    Options
	count  int
	visits int
}

func (d *decoder) addf(n *yaml.Node, path, format string, args ...any) {
	d.count++
	d.p.Add(validate.Problem{Path: path, Line: n.Line, Message: fmt.Sprintf(format, args...)})
}

// fieldInfo is what a struct field's tags say about its value.
type fieldInfo struct {
	index []int
	kind  string // "", "path" or "sink" (from the config tag)
}

var (
	unmarshaler     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	nullTag         = "!!null"
)

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, f fieldInfo, ignore []string, depth int) {
	if d.visits++; d.visits > maxNodes {
		if d.visits == maxNodes+1 {
			d.addf(n, path, "the file expands to more than %d values (aliases?)", maxNodes)
		}
		return
	}
	if depth > maxDepth {
		d.addf(n, path, "is nested more than %d levels deep (an alias inside what it names?)", maxDepth)
		return
	}
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == nullTag {
		// "key:" with nothing after it: the zero value, as yaml.v3 does.
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if v.CanAddr() && (v.Addr().Type().Implements(unmarshaler) || v.Addr().Type().Implements(textUnmarshaler)) {
		// Types that read themselves (durations, backend specs, times)
		// are decoded by yaml.v3 as a whole.
		d.leaf(n, v, path, f)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		d.value(n, e.Elem(), path, f, ignore, depth)
		v.Set(e)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.addf(n, path, "must be a mapping of keys to values, got %s", describe(n))
			return
		}
		d.structure(n, v, path, ignore, depth)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.addf(n, path, "must be a mapping, got %s", describe(n))
			return
		}
		d.mapping(n, v, path, depth)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.addf(n, path, "must be a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), validate.Join(path, i), f, nil, depth+1)
		}
		v.Set(s)
	default:
		d.leaf(n, v, path, f)
	}
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string, ignore []string, depth int) {
	fields := fieldsOf(v.Type())
	seen := map[string]int{}
	for _, kv := range pairs(n) {
		if kv.key.Kind != yaml.ScalarNode {
			d.addf(kv.key, path, "keys must be plain names, got %s", describe(kv.key))
			continue
		}
		name := kv.key.Value
		child := validate.Join(path, name)
		if !d.first(seen, kv, child) {
			continue
		}
		if slices.Contains(ignore, name) {
			continue
		}
		fi, ok := fields.byName[name]
		if !ok {
			d.addf(kv.key, child, "unknown key%s", suggestion(name, fields.names))
			continue
		}
		d.value(kv.value, v.FieldByIndex(fi.index), child, fi, nil, depth+1)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, depth int) {
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]int{}
	for _, kv := range pairs(n) {
		key := reflect.New(v.Type().Key()).Elem()
		if err := kv.key.Decode(key.Addr().Interface()); err != nil || kv.key.Kind != yaml.ScalarNode {
			d.addf(kv.key, path, "keys must be plain names, got %s", describe(kv.key))
			continue
		}
		name := kv.key.Value
		child := validate.Join(path, name)
		if !d.first(seen, kv, child) {
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(key); old.IsValid() {
			elem.Set(old)
		}
		d.value(kv.value, elem, child, fieldInfo{}, nil, depth+1)
		v.SetMapIndex(key, elem)
	}
}

// first reports whether kv is the first pair with its key in a mapping
// (pairs lists the mapping's own keys before merged ones): an own key set
// twice is a problem; a merged key is skipped once the mapping or an
// earlier merge source has set it, as YAML's merge rules say.
func (d *decoder) first(seen map[string]int, kv pair, path string) bool {
	name := kv.key.Value
	if line, set := seen[name]; set {
		if !kv.merged {
			d.addf(kv.key, path, "is set twice (first on line %d); remove one", line)
		}
		return false
	}
	seen[name] = kv.key.Line
	return true
}

// linePrefix is the "line N: " yaml.v3 and custom unmarshalers put first.
var linePrefix = regexp.MustCompile(`^(yaml: )?line \d+: `)

// leaf decodes a scalar (or a value a custom unmarshaler owns) with yaml.v3
// and rewrites its error in configuration terms.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string, f fieldInfo) {
	tmp := reflect.New(v.Type())
	err := n.Decode(tmp.Interface())
	if err == nil && isInteger(v.Kind()) && n.ShortTag() == "!!float" {
		// yaml.v3 would cut 1.5 to 1 without a word.
		d.addf(n, path, "%s", kindMessage(v.Type(), n))
		return
	}
	if err == nil {
		v.Set(tmp.Elem())
		if f.kind != "" && v.Kind() == reflect.String {
			v.SetString(d.resolve(v.String(), f.kind))
		}
		return
	}
	if t := v.Addr().Type(); t.Implements(unmarshaler) || t.Implements(textUnmarshaler) {
		d.addf(n, path, "%s", unmarshalerMessage(err))
		return
	}
	d.addf(n, path, "%s", kindMessage(v.Type(), n))
}

// resolve makes a relative path relative to the configuration's directory.
func (d *decoder) resolve(s, kind string) string {
	if s == "" || d.opt.Dir == "" || filepath.IsAbs(s) {
		return s
	}
	if kind == "sink" && (s == "stdout" || s == "stderr" || strings.Contains(s, "://")) {
		return s
	}
	return filepath.Join(d.opt.Dir, s)
}

func unmarshalerMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = linePrefix.ReplaceAllString(m, "")
		}
		return strings.Join(msgs, "; ")
	}
	return linePrefix.ReplaceAllString(err.Error(), "")
}

func isInteger(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func kindMessage(t reflect.Type, n *yaml.Node) string {
	switch k := t.Kind(); {
	case k == reflect.Bool:
		return "must be true or false, got " + describe(n)
	case isInteger(k):
		return "must be a whole number, got " + describe(n)
	case k == reflect.Float32 || k == reflect.Float64:
		return "must be a number, got " + describe(n)
	case k == reflect.String:
		return "must be a single value (quote it if it holds ': ' or starts with a special character), got " + describe(n)
	}
	return "cannot be read from " + describe(n)
}

// describe names a node for a message: a scalar's value (shortened), or
// what kind of collection it is.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return fmt.Sprintf("%q", v)
	}
	return "nothing"
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

type pair struct {
	key, value *yaml.Node
	merged     bool // came from a "<<" merge key
}

// pairs lists a mapping's key/value pairs: its own, then those merged in
// with "<<" (own keys take precedence; the caller skips merged duplicates).
// Each mapping is merged at most once, so merges of merges cannot loop or
// multiply.
func pairs(n *yaml.Node) []pair {
	return pairsOnce(n, map[*yaml.Node]bool{n: true})
}

func pairsOnce(n *yaml.Node, done map[*yaml.Node]bool) []pair {
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, mergeSources(deref(v), done)...)
			continue
		}
		own = append(own, pair{key: k, value: v})
	}
	return append(own, merged...)
}

func mergeSources(v *yaml.Node, done map[*yaml.Node]bool) []pair {
	if done[v] {
		return nil
	}
	done[v] = true
	var out []pair
	switch v.Kind {
	case yaml.MappingNode:
		for _, p := range pairsOnce(v, done) {
			p.merged = true
			out = append(out, p)
		}
	case yaml.SequenceNode:
		for _, item := range v.Content {
			out = append(out, mergeSources(deref(item), done)...)
		}
	}
	return out
}

type fieldSet struct {
	byName map[string]fieldInfo
	names  []string // sorted
}

var fieldCache sync.Map // reflect.Type → *fieldSet

// fieldsOf lists a struct's YAML keys as yaml.v3 names them: the yaml tag's
// name, else the lower-cased field name; "-" and unexported fields are not
// keys; ",inline" structs contribute their own keys.
func fieldsOf(t reflect.Type) *fieldSet {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{byName: map[string]fieldInfo{}}
	var add func(t reflect.Type, index []int)
	add = func(t reflect.Type, index []int) {
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if strings.Contains(","+opts+",", ",inline,") && sf.Type.Kind() == reflect.Struct {
				add(sf.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(sf.Name)
			}
			fs.byName[name] = fieldInfo{index: idx, kind: sf.Tag.Get("config")}
			fs.names = append(fs.names, name)
		}
	}
	add(t, nil)
	sort.Strings(fs.names)
	fieldCache.Store(t, fs)
	return fs
}
