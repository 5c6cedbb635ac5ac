package keystore

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vtk/dispenser/internal/testenv"
)

var testKEK = []byte("0123456789abcdef0123456789abcdef")

func exercise(t *testing.T, s Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Lookup(ctx, "DSPKNOPE"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup unknown: %v", err)
	}
	k, err := s.Create(ctx, "worker-1", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.ID, "DSPK") || len(k.ID) != 20 || len(k.Secret.Reveal()) != 40 {
		t.Fatalf("key shape: %s %d", k.ID, len(k.Secret.Reveal()))
	}
	got, err := s.Lookup(ctx, k.ID)
	if err != nil || got.Secret != k.Secret || got.Org != "acme" || got.Name != "worker-1" || got.Disabled {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	k2, err := s.Create(ctx, "worker-2", "acme")
	if err != nil || k2.ID == k.ID || k2.Secret == k.Secret {
		t.Fatalf("second key: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	for _, l := range list {
		if !l.Secret.Empty() {
			t.Fatal("List returned a secret")
		}
	}
	if err := s.Disable(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Disable(ctx, "DSPKNOPE"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
	got, err = s.Lookup(ctx, k.ID)
	if err != nil || !got.Disabled {
		t.Fatalf("disabled lookup: %+v %v", got, err)
	}
}

func TestFileStore(t *testing.T) {
	for name, kek := range map[string][]byte{"plain": nil, "sealed": testKEK} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keys.json")
			s, err := NewFileStore(p, kek)
			if err != nil {
				t.Fatal(err)
			}
			exercise(t, s)
			st, _ := os.Stat(p)
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %o", st.Mode().Perm())
			}
			raw, _ := os.ReadFile(p)
			if (kek != nil) != strings.Contains(string(raw), sealedPrefix) {
				t.Fatalf("sealing state wrong: %s", raw)
			}
		})
	}
}

func TestFileStoreRefusesLooseModes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys.json")
	s, _ := NewFileStore(p, nil)
	k, err := s.Create(context.Background(), "w", "o")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		fresh, _ := NewFileStore(p, nil)
		if _, err := fresh.Lookup(context.Background(), k.ID); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Fatalf("mode %o: %v", mode, err)
		}
	}
}

func TestFileStoreMissingFileIsEmpty(t *testing.T) {
	s, _ := NewFileStore(filepath.Join(t.TempDir(), "absent.json"), nil)
	if _, err := s.Lookup(context.Background(), "DSPKX"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestSealing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys.json")
	s, _ := NewFileStore(p, testKEK)
	k, err := s.Create(context.Background(), "w", "o")
	if err != nil {
		t.Fatal(err)
	}
	// Without the KEK, or with another, the secret cannot be read.
	for _, kek := range [][]byte{nil, []byte("ffffffffffffffffffffffffffffffff")} {
		other, _ := NewFileStore(p, kek)
		if _, err := other.Lookup(context.Background(), k.ID); err == nil {
			t.Fatalf("kek %q opened the secret", kek)
		}
	}
	// A ciphertext moved to another key id fails (the id is bound as AAD).
	seal, _ := newSealer(testKEK)
	ct, _ := seal.seal("DSPKA", "secret")
	if _, err := seal.open("DSPKB", ct); err == nil {
		t.Fatal("ciphertext opened under another key id")
	}
	if got, err := seal.open("DSPKA", ct); err != nil || got.Reveal() != "secret" {
		t.Fatal(got, err)
	}
}

func TestConfigKEK(t *testing.T) {
	t.Setenv("KS_TEST_KEK", base64.StdEncoding.EncodeToString(testKEK))
	t.Setenv("KS_SHORT_KEK", base64.StdEncoding.EncodeToString([]byte("short")))
	type prob struct{ path, msg string }
	var got []prob
	p := probs(func(path, format string, args ...any) { got = append(got, prob{path, format}) })
	join := func(parts ...any) string {
		var s []string
		for _, x := range parts {
			s = append(s, x.(string))
		}
		return strings.Join(s, ".")
	}
	ok := Config{Type: "file", Path: "k.json", KEKEnv: "KS_TEST_KEK"}
	ok.Validate(p, "auth.sigv4.keys", join)
	if len(got) != 0 {
		t.Fatalf("valid config: %v", got)
	}
	bad := Config{Type: "file", Path: "k.json", KEKEnv: "KS_SHORT_KEK"}
	bad.Validate(p, "auth.sigv4.keys", join)
	(&Config{Type: "nosql"}).Validate(p, "auth.sigv4.keys", join)
	loose := filepath.Join(t.TempDir(), "loose.json")
	if err := os.WriteFile(loose, []byte(`{"version":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	(&Config{Type: "file", Path: loose}).Validate(p, "auth.sigv4.keys", join)
	if len(got) != 3 || got[0].path != "auth.sigv4.keys" || got[1].path != "auth.sigv4.keys.type" || got[2].path != "auth.sigv4.keys.path" {
		t.Fatalf("problems: %v", got)
	}
}

type probs func(path, format string, args ...any)

func (f probs) Addf(path, format string, args ...any) { f(path, format, args...) }

func TestSQLiteStore(t *testing.T) {
	s, err := NewSQLStore("sqlite", filepath.Join(t.TempDir(), "keys.db"), testKEK)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exercise(t, s)
}

func TestPostgresStore(t *testing.T) {
	dsn := testenv.Postgres(t)
	s, err := NewSQLStore("pgx", dsn, testKEK)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.db.Exec(`DELETE FROM dispenser_access_keys WHERE name IN ('worker-1','worker-2')`); err != nil {
		t.Fatal(err)
	}
	exercise(t, s)
	_, _ = s.db.Exec(`DELETE FROM dispenser_access_keys WHERE name IN ('worker-1','worker-2')`)
	// The id comes from an unauthenticated request: one PostgreSQL cannot
	// take as text (invalid UTF-8, NUL) names no key. An error here would be
	// answered 503 "key store unavailable", uncharged to the failed-auth
	// budget.
	for _, id := range []string{"DSPK\xff\xfe", "DSPK\x00A"} {
		if _, err := s.Lookup(context.Background(), id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, want ErrNotFound", id, err)
		}
	}
}
