// Package keystore holds the dispenser-issued SigV4 access keys: an access
// key id, its secret, and the organization the key is bound to. Secrets are
// encrypted at rest with AES-GCM when a key-encryption key is configured.
// Two stores exist: a JSON file (mode 0600, re-read when it changes, so
// `dispenser keys disable` takes effect without a restart) and a SQL table.
package keystore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vtk/dispenser/internal/secret"
)

// ErrNotFound is returned for an unknown access key id.
var ErrNotFound = errors.New("access key not found")

// Key is one access key.
type Key struct {
	ID      string        `json:"id"`
	Name    string        `json:"name"`
	Org     string        `json:"org"`
	Secret  secret.Secret `json:"-"`
	Created time.Time     `json:"created"`
	// Disabled keys stay in the store (so their id is never reused and the
	// audit trail can still name them) but authenticate nothing.
	Disabled bool `json:"disabled"`
}

// Store keeps access keys.
//
// Lookup returns ErrNotFound for an unknown id. Create returns the new key
// with its secret (the only time the secret leaves the store). List never
// returns secrets. Disable returns ErrNotFound for an unknown id.
type Store interface {
	Lookup(ctx context.Context, id string) (Key, error)
	Create(ctx context.Context, name, org string) (Key, error)
	List(ctx context.Context) ([]Key, error)
	Disable(ctx context.Context, id string) error
}

// Config selects a key store.
type Config struct {
	// Type is file (default), sqlite or postgres.
	Type string `yaml:"type"`
	// Path is the JSON file (type file) or the SQLite database (type sqlite).
	Path string `yaml:"path" config:"path"`
	// DSN is the PostgreSQL connection string (type postgres).
	DSN string `yaml:"dsn"`
	// KEKEnv names an environment variable holding the base64 of a 32-byte
	// key-encryption key; KEKFile is a file holding the same. With either
	// set, secrets are stored encrypted with AES-256-GCM.
	KEKEnv  string `yaml:"kek_env"`
	KEKFile string `yaml:"kek_file" config:"path"`
}

// ApplyDefaults fills unset fields.
func (c *Config) ApplyDefaults() {
	if c.Type == "" {
		c.Type = "file"
	}
}

// Problems is the subset of *validate.Problems used here (keeps this
// package free of the config packages).
type Problems interface {
	Addf(path, format string, args ...any)
}

// Validate records problems; join builds a child path.
func (c *Config) Validate(p Problems, path string, join func(...any) string) {
	switch c.Type {
	case "file", "sqlite":
		if c.Path == "" {
			p.Addf(join(path, "path"), "is required for type %s", c.Type)
		} else if st, err := os.Stat(c.Path); err == nil && c.Type == "file" && st.Mode().Perm()&0o077 != 0 {
			// A missing file is fine (created by the first `keys create`).
			p.Addf(join(path, "path"), "%s has mode %04o: the key file must not be group- or world-accessible (chmod 600)", c.Path, st.Mode().Perm())
		}
	case "postgres":
		if c.DSN == "" {
			p.Addf(join(path, "dsn"), "is required for type postgres")
		}
	default:
		p.Addf(join(path, "type"), "must be file, sqlite or postgres, got %q", c.Type)
	}
	if c.KEKEnv != "" && c.KEKFile != "" {
		p.Addf(path, "set kek_env or kek_file, not both")
	}
	if c.KEKEnv != "" || c.KEKFile != "" {
		if _, err := c.kek(); err != nil {
			p.Addf(path, "%v", err)
		}
	}
}

// Open returns the configured store. A file store whose file does not exist
// yet is empty (the server starts before the first `keys create`).
func (c *Config) Open() (Store, error) {
	kek, err := c.kek()
	if err != nil {
		return nil, err
	}
	var seal *sealer
	if kek != nil {
		if seal, err = newSealer(kek); err != nil {
			return nil, err
		}
	}
	switch c.Type {
	case "", "file":
		return &FileStore{path: c.Path, seal: seal}, nil
	case "sqlite":
		return openSQL("sqlite", c.Path, seal)
	case "postgres":
		return openSQL("pgx", c.DSN, seal)
	}
	return nil, fmt.Errorf("unknown key store type %q", c.Type)
}

func (c *Config) kek() ([]byte, error) {
	var raw string
	switch {
	case c.KEKEnv != "":
		raw = os.Getenv(c.KEKEnv)
		if raw == "" {
			return nil, fmt.Errorf("kek_env: environment variable %s is empty", c.KEKEnv)
		}
	case c.KEKFile != "":
		b, err := os.ReadFile(c.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("kek_file: %w", err)
		}
		raw = string(b)
	default:
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(raw))
	if err != nil || len(k) != 32 {
		return nil, errors.New("the key-encryption key must be the base64 of exactly 32 bytes (openssl rand -base64 32)")
	}
	return k, nil
}

// sealer encrypts secrets with AES-256-GCM. The access key id is the
// additional data, so a ciphertext moved to another key's row fails to open.
type sealer struct{ aead cipher.AEAD }

const sealedPrefix = "aesgcm:v1:"

func newSealer(kek []byte) (*sealer, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: a}, nil
}

// seal returns the stored form of a secret: sealed when s is non-nil,
// plaintext otherwise.
func (s *sealer) seal(id string, plain secret.Secret) (string, error) {
	if s == nil {
		return plain.Reveal(), nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ct := s.aead.Seal(nonce, nonce, []byte(plain.Reveal()), []byte(id))
	return sealedPrefix + base64.StdEncoding.EncodeToString(ct), nil
}

func (s *sealer) open(id, stored string) (secret.Secret, error) {
	if !strings.HasPrefix(stored, sealedPrefix) {
		// Stored before a key-encryption key was configured.
		return secret.Secret(stored), nil
	}
	if s == nil {
		return "", errors.New("the key store holds encrypted secrets but no key-encryption key is configured")
	}
	ct, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(stored, sealedPrefix))
	if err != nil || len(ct) < s.aead.NonceSize() {
		return "", errors.New("malformed encrypted secret")
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, ct[:n], ct[n:], []byte(id))
	if err != nil {
		return "", errors.New("cannot decrypt secret: wrong key-encryption key or tampered store")
	}
	return secret.Secret(pt), nil
}

// newKey generates an access key id shaped like AWS's (20 upper-case
// characters) with the prefix DSPK, and a 40-character secret.
func newKey(name, org string, now time.Time) (Key, error) {
	if name == "" || org == "" {
		return Key{}, errors.New("name and org are required")
	}
	var idb [10]byte
	var sb [30]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return Key{}, err
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return Key{}, err
	}
	id := "DSPK" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(idb[:])[:16]
	return Key{
		ID: id, Name: name, Org: org, Created: now.UTC().Truncate(time.Second),
		Secret: secret.Secret(base64.StdEncoding.EncodeToString(sb[:])),
	}, nil
}
