package scope

import (
	"strings"
	"testing"
)

func TestParseLocationAccepts(t *testing.T) {
	tests := []struct {
		raw            string
		bucket, prefix string
	}{
		{"s3://media/acme/in/", "media", "acme/in/"},
		{"s3://media/acme/in", "media", "acme/in/"}, // always a prefix: never in* → index/
		{"s3://media/", "media", ""},
		{"s3://media", "media", ""},
		{"s3://abc/x", "abc", "x/"},
		{"s3://" + strings.Repeat("a", 63) + "/p/", strings.Repeat("a", 63), "p/"},
		{"s3://my.bucket-1/a/b/c/", "my.bucket-1", "a/b/c/"},
		{"s3://media/a*/b?c/$/${*}/", "media", "a*/b?c/$/${*}/"}, // legal key characters; the policy escapes them
		{"s3://media/ÿé à\u00a0/", "media", "ÿé à\u00a0/"},
		{"s3://media/.../a.b/.x/", "media", ".../a.b/.x/"}, // only exact '.' and '..' segments are special
		{"s3://media/user@example.com/", "media", "user@example.com/"},
		{"s3://media/a:b/", "media", "a:b/"},
		{"s3://media/" + strings.Repeat("p", MaxKeyBytes-1), "media", strings.Repeat("p", MaxKeyBytes-1) + "/"},
		// Userinfo in every form the storage tools write, stripped.
		{"s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY@media/acme/in/", "media", "acme/in/"},
		{"s3://KEY:SECRET@media/acme/in/", "media", "acme/in/"},
		{"s3://KEY:se@cr/et@media/acme/", "media", "acme/"}, // secret with '@' and '/' (only "media" is a bucket after an '@')
		{"s3://KEY:a@b/c@media/x/", "media", "x/"},          // "b" is not a bucket name
		{"s3://KEY:SECRET@media", "media", ""},              // no path at all
		{"s3://KEY:@media/p/", "media", "p/"},               // empty secret
		{"s3://{vault-secret}@media/acme/in/", "media", "acme/in/"},
		{"s3://{team/a@b:c}@media/acme/", "media", "acme/"}, // secret names may hold '/', '@' and ':'
		{"s3://{s}@media/user@example.com/", "media", "user@example.com/"},
		{"s3://token@media/acme/", "media", "acme/"},
		{"s3://a@b@media/acme/", "media", "acme/"},
	}
	for _, tt := range tests {
		loc, err := ParseLocation(tt.raw)
		if err != nil {
			t.Errorf("ParseLocation(%q): %v", tt.raw, err)
			continue
		}
		if loc.Bucket != tt.bucket || loc.Prefix != tt.prefix {
			t.Errorf("ParseLocation(%q) = %q %q, want %q %q", tt.raw, loc.Bucket, loc.Prefix, tt.bucket, tt.prefix)
		}
		if loc.String() != "s3://"+tt.bucket+"/"+tt.prefix {
			t.Errorf("String() = %q", loc.String())
		}
	}
}

func TestParseLocationRefuses(t *testing.T) {
	long := strings.Repeat("p", MaxKeyBytes)
	tests := []struct {
		raw, want string
	}{
		{"", "required"},
		{"media/acme/", "s3://"},
		{"S3://media/acme/", "s3://"},
		{"https://media.s3.amazonaws.com/acme/", "s3://"},
		{" s3://media/acme/", "s3://"},
		{"s3://", "no bucket"},
		{"s3:///acme/", "no bucket"},
		// Bucket naming rules.
		{"s3://ab/x/", "3 to 63"},
		{"s3://" + strings.Repeat("a", 64) + "/x/", "3 to 63"},
		{"s3://Media/x/", "lower-case"},
		{"s3://me_dia/x/", "lower-case"},
		{"s3://me dia/x/", "lower-case"},
		{"s3://mediä/x/", "lower-case"},
		{"s3://-media/x/", "begin and end"},
		{"s3://media-/x/", "begin and end"},
		{"s3://.media/x/", "begin and end"},
		{"s3://me..dia/x/", "adjacent periods"},
		{"s3://me.-dia/x/", "adjacent periods"},
		{"s3://me-.dia/x/", "adjacent periods"},
		{"s3://192.168.5.4/x/", "IP address"},
		{"s3://xn--media/x/", "xn--"},
		{"s3://sthree-media/x/", "sthree-"},
		{"s3://amzn-s3-demo-bucket/x/", "amzn-s3-demo-"},
		{"s3://media-s3alias/x/", "-s3alias"},
		{"s3://media--ol-s3/x/", "--ol-s3"},
		{"s3://media--x-s3/x/", "--x-s3"},
		{"s3://media--table-s3/x/", "--table-s3"},
		{"s3://media.mrap/x/", ".mrap"},
		{"s3://media:443/x/", "userinfo"},
		// Prefix rules.
		{"s3://media//acme/", "start with '/'"},
		{"s3://media/acme//in/", "'//'"},
		{"s3://media/./", "'.' or '..'"},
		{"s3://media/../", "'.' or '..'"},
		{"s3://media/acme/../other/", "'.' or '..'"},
		{"s3://media/acme/..", "'.' or '..'"},
		{"s3://media/acme/./in/", "'.' or '..'"},
		{"s3://media/a\x00b/", "control character"},
		{"s3://media/a\nb/", "control character"},
		{"s3://media/a\tb/", "control character"},
		{"s3://media/a\x7fb/", "control character"},
		{"s3://media/a\u0085b/", "control character"},
		{"s3://media/a\u0100b/", "U+0020–U+00FF"},
		{"s3://media/a\u2028b/", "U+0020–U+00FF"},
		{"s3://media/😀/", "U+0020–U+00FF"},
		{"s3://media/a\xffb/", "UTF-8"},
		{"s3://media/" + long + "/", "longer than 1024"},
		{"s3://media/" + long, "longer than 1024"}, // 1024 + the appended '/'
		{"s3://media/" + strings.Repeat("a/", 2100), "longer than 4096"},
		// Userinfo that cannot be delimited safely.
		{"s3://KEY:SECRET@media/user@example.com/", "ambiguous"},
		{"s3://KEY:se@media/cret@media/p/", "ambiguous"},
		{"s3://KEY:SECRET@/p/", "not followed by a valid bucket"},
		{"s3://KEY:a@b/c@media/x@y/", "not followed by a valid bucket"},
		{"s3://KEY:x@mediazz/k@Media/acme/", "not followed by a valid bucket"},
		{"s3://KEY:x@mediazz/k@media/acme/", "ambiguous"},
		{"s3://KEY:SECRET@Media/p/", "not followed by a valid bucket"},
		{"s3://{secret@media/p/", "not followed by a valid bucket"},
		{"s3://{secret}media/p/", "lower-case"},
	}
	for _, tt := range tests {
		loc, err := ParseLocation(tt.raw)
		if err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want error containing %q", truncate(tt.raw, 80), loc, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseLocation(%q) error %q, want it to contain %q", truncate(tt.raw, 80), err, tt.want)
		}
		if (loc != Location{}) {
			t.Errorf("ParseLocation(%q) returned %+v with its error", truncate(tt.raw, 80), loc)
		}
	}
}

// TestUserinfoNeverLeaks checks that no part of a secret in the userinfo
// appears in a parsed location or in any error, whatever follows it.
func TestUserinfoNeverLeaks(t *testing.T) {
	secrets := []string{
		"SECRETzz", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "se/cr@etzz", "zz@qq/media@ww",
		"x@mediazz/k", "a:b:c", "{nested}", "zz%2Fenc", "tail@", "@head",
	}
	rests := []string{
		"media/acme/in/", "media", "media/", "Media/acme/", "media//x/", "media/../", "me/dia@x/",
		"media/user@example.com/", "media/a\x00/", "x/", "",
	}
	for _, sec := range secrets {
		for _, rest := range rests {
			for _, raw := range []string{
				"s3://AKIAEXAMPLE:" + sec + "@" + rest,
				"s3://{" + strings.ReplaceAll(sec, "}", "") + "}@" + rest,
			} {
				loc, err := ParseLocation(raw)
				if err != nil {
					for _, frag := range secretFragments(sec) {
						if strings.Contains(err.Error(), frag) {
							t.Errorf("ParseLocation(%q): error %q contains secret fragment %q", raw, err, frag)
						}
					}
					continue
				}
				if !strings.HasSuffix("/"+strings.TrimSuffix(rest, "/"), "/"+strings.TrimSuffix(loc.Bucket+"/"+loc.Prefix, "/")) {
					t.Errorf("ParseLocation(%q) = %s: not taken from after the userinfo", raw, loc)
				}
				if strings.Contains(loc.String(), "AKIAEXAMPLE") {
					t.Errorf("ParseLocation(%q) = %s: contains the access key", raw, loc)
				}
			}
		}
	}
}

// secretFragments lists the distinctive pieces of a test secret.
func secretFragments(sec string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(sec, func(r rune) bool { return strings.ContainsRune("/@:{}%", r) }) {
		if len(f) >= 4 && f != "media" {
			out = append(out, f)
		}
	}
	return append(out, sec)
}

func TestParseFile(t *testing.T) {
	loc := Location{Bucket: "media", Prefix: "acme/in/"}
	for _, f := range []string{"a.mp4", "sub/b.mp4", "a*", "$", "${*}", "ÿ é", "..a", "a..", "user@x"} {
		k, err := ParseFile(loc, f)
		if err != nil || k != "acme/in/"+f {
			t.Errorf("ParseFile(%q) = %q, %v", f, k, err)
		}
	}
	for f, want := range map[string]string{
		"":                                 "empty",
		"dir/":                             "not end in '/'",
		"/abs":                             "start with '/'",
		"a//b":                             "'//'",
		"..":                               "'..'",
		"../x":                             "'..'",
		"a/./b":                            "'..'",
		"a\x00":                            "control",
		"a\u0100":                          "U+0020–U+00FF",
		strings.Repeat("f", 1024-7):        "longer than 1024", // with the 8-byte location prefix
		strings.Repeat("f", MaxKeyBytes+1): "longer than 1024",
	} {
		if _, err := ParseFile(loc, f); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFile(%q) error %v, want %q", truncate(f, 40), err, want)
		}
	}
}

func TestParseOperation(t *testing.T) {
	for in, want := range map[string]Operation{
		"get": OpGet, "storage:get": OpGet, "put": OpPut, "storage:put": OpPut,
		"check": OpCheck, "storage:check": OpCheck, "tag": OpTag, "tag_s3": OpTag, "storage:tag_s3": OpTag, " get ": OpGet,
	} {
		if got, err := ParseOperation(in); err != nil || got != want {
			t.Errorf("ParseOperation(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "GET", "delete", "storage:delete", "get\x00", strings.Repeat("x", 500)} {
		_, err := ParseOperation(in)
		if err == nil {
			t.Errorf("ParseOperation(%q) accepted", truncate(in, 40))
			continue
		}
		if len(err.Error()) > 200 {
			t.Errorf("ParseOperation error echoes too much: %d bytes", len(err.Error()))
		}
	}
}
