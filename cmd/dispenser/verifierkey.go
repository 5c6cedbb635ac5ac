package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/config"
)

// cmdAuditVerifierKey prints the verifier key of the configured checkpoint
// signing key (audit.checkpoint.signing_key_file, or the key a SQLite
// dispenser generated beside its database on first start): the public half
// auditors pass to `audit verify --key` and `audit verify-receipt --key`.
// It only reads: a key that does not exist yet is an error, never made.
func cmdAuditVerifierKey(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verifier-key", stderr)
	path := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "audit verifier-key: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "audit verifier-key: --config is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	file := cfg.Audit.Checkpoint.SigningKeyFile
	_, vkey, err := audit.LoadSigner(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && cfg.Audit.GeneratedKey() {
			fmt.Fprintf(stderr, "audit verifier-key: no checkpoint signing key at %s yet: the dispenser generates it there on its first start (for production, make one with dispenser audit keygen --out FILE and set audit.checkpoint.signing_key_file)\n", file)
			return 1
		}
		fmt.Fprintln(stderr, "audit verifier-key:", err)
		return 1
	}
	fmt.Fprintln(stdout, vkey)
	return 0
}
