package static

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const layered = `credentials:
  - {access_key_id: AKIAANY, secret_access_key: any-secret}
  - {bucket: media, access_key_id: AKIABUCKET, secret_access_key: bucket-secret}
  - {org: acme, access_key_id: AKIAORG, secret_access_key_env: STATIC_TEST_SECRET, session_token_env: STATIC_TEST_TOKEN, account_id: "111122223333"}
  - {org: acme, bucket: media, access_key_id: AKIAORGBUCKET, secret_access_key: orgbucket-secret}
`

func TestMostSpecificMatch(t *testing.T) {
	t.Setenv("STATIC_TEST_SECRET", "org-secret-from-env")
	t.Setenv("STATIC_TEST_TOKEN", "org-token-from-env")
	v, err := New(Options{File: write(t, t.TempDir(), "keys.yaml", layered), Expiration: duration.Duration(time.Hour)}, func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		org, bucket, key, secret string
	}{
		{"acme", "media", "AKIAORGBUCKET", "orgbucket-secret"},
		{"acme", "other", "AKIAORG", "org-secret-from-env"},
		{"globex", "media", "AKIABUCKET", "bucket-secret"},
		{"globex", "other", "AKIAANY", "any-secret"},
	}
	for _, c := range cases {
		got, err := v.Vend(context.Background(), scope.Grant{Org: c.org, Bucket: c.bucket})
		if err != nil {
			t.Fatal(err)
		}
		if got.AccessKeyID != c.key || got.SecretAccessKey.Reveal() != c.secret || got.Source != "static" || got.PackedPolicySize != -1 {
			t.Errorf("%s/%s: got %s %s", c.org, c.bucket, got.AccessKeyID, got.SecretAccessKey.Reveal())
		}
		if !got.Expiration.Equal(now.Add(time.Hour).Truncate(time.Second)) {
			t.Errorf("expiration %v", got.Expiration)
		}
		if c.key == "AKIAORG" && (got.SessionToken.Reveal() != "org-token-from-env" || got.AccountID != "111122223333") {
			t.Errorf("env token / account: %+v", got)
		}
	}
}

func TestNoMatchIsAccessDenied(t *testing.T) {
	v, err := New(Options{File: write(t, t.TempDir(), "k.yaml", "credentials:\n  - {org: acme, access_key_id: A, secret_access_key: s}\n"), Expiration: duration.Duration(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Vend(context.Background(), scope.Grant{Org: "globex", Bucket: "b"})
	if fe := fault.From(err); fe == nil || fe.Code != fault.AccessDenied || fe.Reason != "no_static_key" {
		t.Fatalf("got %v", err)
	}
}

func TestJSONFile(t *testing.T) {
	p := write(t, t.TempDir(), "keys.json", `{"credentials":[{"org":"acme","access_key_id":"AKIAJSON","secret_access_key":"json-secret","session_token":"tok"}]}`)
	v, err := New(Options{File: p, Expiration: duration.Duration(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Vend(context.Background(), scope.Grant{Org: "acme"})
	if err != nil || got.AccessKeyID != "AKIAJSON" || got.SessionToken.Reveal() != "tok" {
		t.Fatalf("%+v %v", got, err)
	}
	// JSON rejects unknown fields just like YAML.
	if err := os.WriteFile(p, []byte(`{"credentials":[{"org":"acme","access_key":"x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil {
		t.Fatal("unknown JSON field accepted")
	}
}

func TestFileProblems(t *testing.T) {
	t.Setenv("STATIC_EMPTY", "")
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"no credentials", "credentials: []\n", "lists no credentials"},
		{"missing secret", "credentials:\n  - {access_key_id: A}\n", "secret_access_key"},
		{"both secret forms", "credentials:\n  - {access_key_id: A, secret_access_key: s, secret_access_key_env: X}\n", "not both"},
		{"empty env", "credentials:\n  - {access_key_id: A, secret_access_key_env: STATIC_EMPTY}\n", "STATIC_EMPTY"},
		{"missing key id", "credentials:\n  - {secret_access_key: s}\n", "access_key_id"},
		{"unknown field", "credentials:\n  - {access_key_id: A, secret_access_key: s, extra: 1}\n", "extra"},
		{"bad YAML", "credentials: [\n", "parse"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(Options{File: write(t, dir, c.name+".yaml", c.body)}, nil, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	if _, err := New(Options{File: filepath.Join(dir, "missing.yaml")}, nil, nil); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestReloadKeepsOldKeysOnBadFile(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "keys.yaml", "credentials:\n  - {access_key_id: AKIAOLD, secret_access_key: old}\n")
	v, err := New(Options{File: p, Expiration: duration.Duration(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	vendKey := func() string {
		c, err := v.Vend(context.Background(), scope.Grant{Org: "acme", Bucket: "b"})
		if err != nil {
			t.Fatal(err)
		}
		return c.AccessKeyID
	}
	write(t, dir, "keys.yaml", "credentials: [\n")
	if err := v.Reload(); err == nil {
		t.Fatal("bad file reloaded")
	}
	if got := vendKey(); got != "AKIAOLD" {
		t.Fatalf("after bad reload: %s", got)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := v.Reload(); err == nil || vendKey() != "AKIAOLD" {
		t.Fatalf("missing file: %v", err)
	}
	write(t, dir, "keys.yaml", "credentials:\n  - {access_key_id: AKIANEW, secret_access_key: new}\n")
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := vendKey(); got != "AKIANEW" {
		t.Fatalf("after good reload: %s", got)
	}
}

func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "keys.yaml", "credentials:\n  - {access_key_id: AKIA1, secret_access_key: s}\n")
	v, err := New(Options{File: p, Expiration: duration.Duration(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			if _, err := v.Vend(context.Background(), scope.Grant{Org: "o"}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		_ = v.Reload()
	}
	<-done
}

func buildSpec(t *testing.T, y string) (vend.Vendor, *validate.Problems) {
	t.Helper()
	return buildSpecFloor(t, y, 0)
}

func buildSpecFloor(t *testing.T, y string, floor time.Duration) (vend.Vendor, *validate.Problems) {
	t.Helper()
	var spec vend.Spec
	if err := yaml.Unmarshal([]byte(y), &spec); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	var p validate.Problems
	vs := vend.Build(map[string]vend.Spec{"st": spec}, vend.Deps{Logger: zap.New(core), MinRemaining: floor}, &p)
	if v := vs["st"]; v != nil && logs.FilterMessageSnippet("cannot be scoped").Len() != 1 {
		t.Fatalf("no startup warning that static keys cannot be scoped: %v", logs.All())
	}
	return vs["st"], &p
}

func TestRegistryConstructor(t *testing.T) {
	p := write(t, t.TempDir(), "k.yaml", "credentials:\n  - {access_key_id: A, secret_access_key: s}\n")
	v, probs := buildSpec(t, "type: static\nfile: "+p+"\nexpiration: 30m\n")
	if v == nil || probs.Err() != nil {
		t.Fatalf("%v %v", v, probs.Err())
	}
	got, _ := v.Vend(context.Background(), scope.Grant{})
	if left := time.Until(got.Expiration); left > 30*time.Minute || left < 29*time.Minute {
		t.Fatalf("expiration %v", got.Expiration)
	}
	for y, path := range map[string]string{
		"type: static\n": "backends.st.file",
		"type: static\nfile: " + p + "\nexpiration: 5m\n":    "backends.st.expiration",
		"type: static\nfile: /nonexistent.yaml\n":            "backends.st.file",
		"type: static\nfile: " + p + "\nunknown_option: 1\n": "backends.st.unknown_option",
	} {
		_, probs := buildSpec(t, y)
		found := false
		for _, pr := range probs.List() {
			found = found || pr.Path == path
		}
		if !found {
			t.Errorf("%q: no problem at %s (got %v)", y, path, probs.List())
		}
	}
}

// An expiration no longer than server.min_remaining is always under the
// floor when served (the API answers 503 below_floor to every request):
// the backend refuses it at check-config time.
func TestExpirationMustExceedTheServerFloor(t *testing.T) {
	p := write(t, t.TempDir(), "k.yaml", "credentials:\n  - {access_key_id: A, secret_access_key: s}\n")
	for _, tc := range []struct {
		expiration, floor time.Duration
		ok                bool
	}{
		{20 * time.Minute, 20 * time.Minute, false},
		{30 * time.Minute, 30 * time.Minute, false},
		{time.Hour, 2 * time.Hour, false},
		{21 * time.Minute, 20 * time.Minute, true},
		{time.Hour, 20 * time.Minute, true},
		{20 * time.Minute, 0, true}, // floor unknown
	} {
		_, probs := buildSpecFloor(t, fmt.Sprintf("type: static\nfile: %s\nexpiration: %s\n", p, tc.expiration), tc.floor)
		if got := probs.Err() == nil; got != tc.ok {
			t.Errorf("expiration %s, floor %s: valid = %v, want %v (%v)", tc.expiration, tc.floor, got, tc.ok, probs.Err())
		}
	}
}
