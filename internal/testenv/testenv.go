// Package testenv gives tests the machine's real services. Outside CI a
// missing service skips the test; with CI=true it fails it, so a green CI
// run never hides an untested store.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InCI reports whether CI=true.
func InCI() bool { return os.Getenv("CI") == "true" }

// PostgresDSN is the machine's PostgreSQL (trust auth, database test);
// DISPENSER_TEST_POSTGRES overrides it.
func PostgresDSN() string {
	if v := os.Getenv("DISPENSER_TEST_POSTGRES"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// RedisAddr is the machine's Redis; DISPENSER_TEST_REDIS overrides it.
func RedisAddr() string {
	if v := os.Getenv("DISPENSER_TEST_REDIS"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// Require skips (or, in CI, fails) the test when addr does not accept TCP.
func Require(t testing.TB, service, addr string) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if InCI() {
			t.Fatalf("%s at %s is required in CI: %v", service, addr, err)
		}
		t.Skipf("%s at %s is not reachable (%v); set CI=true to make this a failure", service, addr, err)
	}
	_ = c.Close()
}

// Postgres returns the DSN after checking the server is reachable.
func Postgres(t testing.TB) string {
	t.Helper()
	dsn := PostgresDSN()
	Require(t, "PostgreSQL", postgresAddr(dsn))
	return dsn
}

// postgresAddr is the host:port a DSN (URL or key=value form) connects to,
// so Require checks the server DISPENSER_TEST_POSTGRES names.
func postgresAddr(dsn string) string {
	host, port := "", ""
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		host, port = u.Hostname(), u.Port()
	} else {
		for _, kv := range strings.Fields(dsn) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				switch k {
				case "host":
					host = v
				case "port":
					port = v
				}
			}
		}
	}
	if host == "" || strings.HasPrefix(host, "/") { // default or a Unix socket directory
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}

// Redis returns the address after checking the server is reachable.
func Redis(t testing.TB) string {
	t.Helper()
	Require(t, "Redis", RedisAddr())
	return RedisAddr()
}

// UniqueName returns prefix plus random hex, for per-test schemas and keys.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Binary returns the path of an executable the test needs (a server it
// starts itself), skipping the test outside CI when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			t.Fatalf("%s is required in CI (.ci/run installs it): %v", name, err)
		}
		t.Skipf("%s is not installed (%v); set CI=true to make this a failure", name, err)
	}
	return p
}

// PostgresSchema creates a fresh schema (named prefix plus random hex) on
// the machine's PostgreSQL, drops it when the test ends, and returns a DSN
// whose search_path selects it, so tests never see each other's tables.
func PostgresSchema(t testing.TB, prefix string) string {
	t.Helper()
	dsn := Postgres(t)
	name := UniqueName(prefix)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+name+" CASCADE")
			_ = c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}
