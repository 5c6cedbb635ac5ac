// Package migratetest checks that a store's versioned migrations adopt a
// database an older release made with an inline CREATE TABLE IF NOT
// EXISTS.
package migratetest

import (
	"database/sql"
	"slices"
	"testing"

	// The database/sql drivers of the stores.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// Adoption is a store whose tables an older release created inline.
type Adoption struct {
	// Driver ("sqlite" or "pgx") and DSN reach the store's database.
	Driver, DSN string
	// Legacy are the statements the older release ran: its schema, then
	// rows that must survive.
	Legacy []string
	// Table is the store's version table; it must record Versions.
	Table    string
	Versions []int64
	// Open opens the store (which migrates it), checks the legacy rows
	// through it, and returns its Close.
	Open func(t *testing.T) (closeStore func() error)
}

// Run makes the legacy database, then opens the store twice: each time
// the rows are there and the version table records exactly Versions.
func (a Adoption) Run(t *testing.T) {
	t.Helper()
	db, err := sql.Open(a.Driver, a.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range a.Legacy {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("the older release's %q: %v", q, err)
		}
	}
	for i := range 2 {
		closeStore := a.Open(t)
		if got := Ints(t, db, `SELECT version FROM `+a.Table+` ORDER BY version`); !slices.Equal(got, a.Versions) {
			t.Fatalf("open %d: %s records versions %v, want %v", i+1, a.Table, got, a.Versions)
		}
		if err := closeStore(); err != nil {
			t.Fatal(err)
		}
	}
}

// Ints runs q, which selects one integer column, and returns its values.
func Ints(t *testing.T, db *sql.DB, q string) []int64 {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
