package strictyaml

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/validate"
)

type inner struct {
	Name  string            `yaml:"name"`
	Wait  duration.Duration `yaml:"wait"`
	Limit *int              `yaml:"limit"`
}

type outer struct {
	Listen   string            `yaml:"listen"`
	On       bool              `yaml:"on"`
	Rate     float64           `yaml:"rate"`
	Count    int               `yaml:"count"`
	Key      string            `yaml:"key_file" config:"path"`
	Mirror   string            `yaml:"mirror" config:"sink"`
	Inner    inner             `yaml:"inner"`
	Ptr      *inner            `yaml:"ptr"`
	List     []inner           `yaml:"list"`
	Names    []string          `yaml:"names"`
	Map      map[string]inner  `yaml:"map"`
	Tags     map[string]string `yaml:"tags"`
	Ignored  string            `yaml:"-"`
	Untagged string
	hidden   string // unexported: not a key
}

func decode(t *testing.T, y string, o Options) (outer, []validate.Problem) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(y), &doc); err != nil {
		t.Fatal(err)
	}
	var v outer
	var p validate.Problems
	n := Decode(&doc, &v, &p, "", o)
	if n != len(p.List()) {
		t.Fatalf("Decode returned %d, recorded %d", n, len(p.List()))
	}
	return v, p.List()
}

func TestDecodeValid(t *testing.T) {
	v, ps := decode(t, `
defaults: &d {name: shared, wait: 2m}
listen: 127.0.0.1:1
on: true
rate: 1.5
count: 3
key_file: keys/k.pem
mirror: stdout
inner: {name: a, wait: 90, limit: 7}
ptr:
  <<: *d
  name: own
list: [{name: x}, *d]
names: [a, b]
map: {one: {name: m}}
tags: {k: v}
untagged: u
`, Options{Dir: "/etc/dispenser", Ignore: []string{"defaults"}})
	if len(ps) != 0 {
		t.Fatalf("problems: %v", ps)
	}
	if v.Listen != "127.0.0.1:1" || !v.On || v.Rate != 1.5 || v.Count != 3 || v.Untagged != "u" {
		t.Errorf("scalars %+v", v)
	}
	if v.Key != filepath.Join("/etc/dispenser", "keys/k.pem") || v.Mirror != "stdout" {
		t.Errorf("paths %q %q", v.Key, v.Mirror)
	}
	if v.Inner.Wait.D().Seconds() != 90 || v.Inner.Limit == nil || *v.Inner.Limit != 7 {
		t.Errorf("inner %+v", v.Inner)
	}
	// An own key wins over a merged one; the rest is merged in.
	if v.Ptr == nil || v.Ptr.Name != "own" || v.Ptr.Wait.D().Minutes() != 2 {
		t.Errorf("merge %+v", v.Ptr)
	}
	if len(v.List) != 2 || v.List[1].Name != "shared" || strings.Join(v.Names, ",") != "a,b" || v.Map["one"].Name != "m" || v.Tags["k"] != "v" {
		t.Errorf("collections %+v", v)
	}
}

// TestDecodeMergeOrder: with several merge sources the earlier one wins,
// and the mapping's own key wins over all (YAML's merge key rules).
func TestDecodeMergeOrder(t *testing.T) {
	v, ps := decode(t, `
a: &a {name: from-a, wait: 1m}
b: &b {name: from-b, wait: 2m, limit: 3}
inner:
  <<: [*a, *b]
ptr:
  <<: [*a, *b]
  wait: 5m
`, Options{Ignore: []string{"a", "b"}})
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	if v.Inner.Name != "from-a" || v.Inner.Wait.D().Minutes() != 1 || v.Inner.Limit == nil || *v.Inner.Limit != 3 {
		t.Errorf("inner %+v", v.Inner)
	}
	if v.Ptr.Name != "from-a" || v.Ptr.Wait.D().Minutes() != 5 {
		t.Errorf("ptr %+v", v.Ptr)
	}
}

// TestDecodeTextUnmarshalers: a type that reads itself from text (a time,
// an address) is one value, not a mapping to walk.
func TestDecodeTextUnmarshalers(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("at: 2026-01-02T03:04:05Z\naddr: 10.0.0.0/8\nbad: nope\n"), &doc); err != nil {
		t.Fatal(err)
	}
	var v struct {
		At   time.Time    `yaml:"at"`
		Addr netip.Prefix `yaml:"addr"`
		Bad  netip.Prefix `yaml:"bad"`
	}
	var p validate.Problems
	Decode(&doc, &v, &p, "", Options{})
	if v.At.Year() != 2026 || v.Addr.Bits() != 8 {
		t.Errorf("decoded %+v", v)
	}
	if l := p.List(); len(l) != 1 || l[0].Path != "bad" || l[0].Line != 3 {
		t.Errorf("problems %v", l)
	}
}

func TestDecodePaths(t *testing.T) {
	for _, tc := range []struct {
		dir, key, mirror, wantKey, wantMirror string
	}{
		{"/cfg", "k.pem", "audit.jsonl", "/cfg/k.pem", "/cfg/audit.jsonl"},
		{"/cfg", "/abs/k.pem", "stderr", "/abs/k.pem", "stderr"},
		{"/cfg", "../keys/k.pem", "file:///var/log/a.jsonl", "/keys/k.pem", "file:///var/log/a.jsonl"},
		// Parse without a file: paths stay as written.
		{"", "k.pem", "a.jsonl", "k.pem", "a.jsonl"},
	} {
		v, ps := decode(t, "key_file: "+tc.key+"\nmirror: "+tc.mirror+"\n", Options{Dir: tc.dir})
		if len(ps) != 0 || v.Key != tc.wantKey || v.Mirror != tc.wantMirror {
			t.Errorf("%+v: got %q %q %v", tc, v.Key, v.Mirror, ps)
		}
	}
	// An empty path stays empty (unset).
	if v, _ := decode(t, "key_file: ''\n", Options{Dir: "/cfg"}); v.Key != "" {
		t.Errorf("empty path became %q", v.Key)
	}
}

func TestDecodeProblems(t *testing.T) {
	v, ps := decode(t, `listen: [a]
on: maybe
rate: fast
count: 1.5
inner:
  nmae: x
  wait: soon
list:
  - {name: ok}
  - name: {a: b}
names: notalist
map: [x]
ptr: 3
Listen: again
listen: twice
hidden: x
`, Options{})
	want := map[string]struct {
		line int
		msg  string
	}{
		"listen":       {1, "must be a single value"},
		"on":           {2, "must be true or false, got \"maybe\""},
		"rate":         {3, "must be a number"},
		"count":        {4, "must be a whole number, got \"1.5\""},
		"inner.nmae":   {6, `unknown key; did you mean "name"?`},
		"inner.wait":   {7, `invalid duration "soon"`},
		"list[1].name": {10, "got a mapping"},
		"names":        {11, "must be a list"},
		"map":          {12, "must be a mapping"},
		"ptr":          {13, "must be a mapping of keys to values"},
		"Listen":       {14, `did you mean "listen"?`},
		"hidden":       {16, "unknown key (known keys here:"},
	}
	got := map[string]validate.Problem{}
	for _, p := range ps {
		if _, dup := got[p.Path]; dup && p.Path == "listen" {
			got["listen#2"] = p
			continue
		}
		got[p.Path] = p
	}
	for path, w := range want {
		p, ok := got[path]
		if !ok {
			t.Errorf("no problem at %s; got %v", path, ps)
			continue
		}
		if p.Line != w.line || !strings.Contains(p.Message, w.msg) {
			t.Errorf("%s: got line %d %q, want line %d %q", path, p.Line, p.Message, w.line, w.msg)
		}
		if strings.Contains(p.Message, "!!") || strings.Contains(p.Message, "strictyaml.") || strings.Contains(p.Message, "int64") {
			t.Errorf("%s: message speaks Go or YAML tags: %q", path, p.Message)
		}
	}
	if v.hidden != "" {
		t.Errorf("an unexported field was set")
	}
	if p, ok := got["listen#2"]; !ok || p.Line != 15 || !strings.Contains(p.Message, "set twice (first on line 1)") {
		t.Errorf("duplicate key: %+v", p)
	}
	if len(ps) != len(want)+1 {
		t.Errorf("%d problems, want %d: %v", len(ps), len(want)+1, ps)
	}
}

func TestDecodeEmptyAndNull(t *testing.T) {
	for _, y := range []string{"", "# only a comment\n", "~\n"} {
		if _, ps := decode(t, y, Options{}); len(ps) != 0 {
			t.Errorf("%q: %v", y, ps)
		}
	}
	v, ps := decode(t, "ptr:\nlist:\ninner:\n", Options{})
	if len(ps) != 0 || v.Ptr != nil || v.List != nil {
		t.Errorf("null values: %+v %v", v, ps)
	}
	if _, ps := decode(t, "- a\n- b\n", Options{}); len(ps) != 1 || ps[0].Line != 1 {
		t.Errorf("a list at the top: %v", ps)
	}
}

// TestDecodeAliasBomb: aliases that expand exponentially are cut off with
// a problem instead of stalling the loader.
func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [[], [], [], [], [], [], [], [], [], []]\n")
	for i := 1; i < 9; i++ {
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	b.WriteString("names: *a8\n")
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Skipf("yaml.v3 refuses the document itself: %v", err)
	}
	var v struct {
		Names tree `yaml:"names"`
	}
	var p validate.Problems
	Decode(&doc, &v, &p, "", Options{Ignore: []string{"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}})
	if len(p.List()) == 0 || !strings.Contains(p.List()[0].Message, "aliases") {
		t.Fatalf("got %v", p.List())
	}
}

// tree is a type the decoder walks itself at every level.
type tree []tree

func TestLines(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("server:\n  listen: x\ntenants:\n  - org: a\n    grants:\n      - bucket: b\n"), &doc); err != nil {
		t.Fatal(err)
	}
	l := Lines(&doc, "")
	for path, want := range map[string]int{"server": 1, "server.listen": 2, "tenants": 3, "tenants[0]": 4, "tenants[0].org": 4, "tenants[0].grants[0].bucket": 6} {
		if l[path] != want {
			t.Errorf("%s: line %d, want %d", path, l[path], want)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"listen", "admin_listen", "tls", "max_body_bytes", "type", "db", "prefixes"}
	for name, want := range map[string]string{
		"listn": "listen", "lsiten": "listen", "LISTEN": "listen", "admin-listen": "admin_listen", "adminlisten": "admin_listen",
		"tsl": "tls", "max_body_byte": "max_body_bytes", "typ": "type", "prefix": "prefixes",
		"dsn": "", "x": "", "completely_different": "", "d": "",
	} {
		got, ok := closest(name, keys)
		if ok != (want != "") || got != want {
			t.Errorf("closest(%q) = %q %v, want %q", name, got, ok, want)
		}
	}
}
