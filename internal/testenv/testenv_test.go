package testenv

import "testing"

// TestPostgresAddr: the reachability check dials the server the DSN
// names, not always the default one.
func TestPostgresAddr(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "127.0.0.1:5432"},
		{"postgres://u:p@db.internal:6543/x", "db.internal:6543"},
		{"postgresql://u@[::1]/x", "[::1]:5432"},
		{"host=10.0.0.7 port=5433 dbname=test", "10.0.0.7:5433"},
		{"dbname=test", "127.0.0.1:5432"},
		{"host=/var/run/postgresql dbname=test", "127.0.0.1:5432"},
	} {
		if got := postgresAddr(c.dsn); got != c.want {
			t.Errorf("postgresAddr(%q) = %q, want %q", c.dsn, got, c.want)
		}
	}
}
