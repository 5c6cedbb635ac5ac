package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/audit/postgres"
	"github.com/vtk/dispenser/internal/audit/sqlite"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/fault"
)

// logName is the log this dispenser appends to.
func logName(cfg *config.Config) string {
	if cfg.Audit.Log != "" {
		return cfg.Audit.Log
	}
	return cfg.Server.ReplicaID
}

// trailMode is how a command opens the audit store.
type trailMode int

const (
	// trailServe creates and migrates the store and claims this replica's
	// log (PostgreSQL): the dispenser, and CLI commands with a log of
	// their own (revoke).
	trailServe trailMode = iota
	// trailCLI reads without claiming the log; SQLite stays writable so a
	// query can bring the index up to date, and on PostgreSQL every
	// session is read-only (audit query).
	trailCLI
	// trailBorrow writes to this replica's log without claiming it, each
	// append fenced by the head compare-and-swap (audit adopt while the
	// replica runs).
	trailBorrow
	// trailVerify creates and changes nothing: SQLite mode=ro (a missing
	// file is an error), PostgreSQL read-only sessions, no migrations.
	trailVerify
)

// openTrail opens the configured audit store in mode. problems, when set,
// is told of derived rows no entry accounts for (ghost index rows).
func openTrail(ctx context.Context, cfg *config.Config, mode trailMode, problems func(string)) (audit.Trail, error) {
	c := cfg.Audit
	switch c.Type {
	case "sqlite":
		return sqlite.Open(ctx, sqlite.Options{Path: c.Path, Log: logName(cfg), ReadOnly: mode == trailVerify, Problems: problems})
	case "postgres":
		return postgres.Open(ctx, postgres.Options{DSN: c.DSN, Log: logName(cfg), ReadOnly: mode == trailCLI || mode == trailVerify,
			Borrow: mode == trailBorrow, Problems: problems})
	}
	return nil, fmt.Errorf("audit: unsupported store type %q", c.Type)
}

// checkpointSigner loads the checkpoint signing key, generating the SQLite
// default key on first start.
func checkpointSigner(cfg *config.Config, log *zap.Logger) (note.Signer, string, error) {
	c := cfg.Audit.Checkpoint
	if cfg.Audit.GeneratedKey() {
		if _, err := os.Stat(c.SigningKeyFile); errors.Is(err, os.ErrNotExist) {
			vkey, err := audit.GenerateKey(c.SigningKeyFile, "dispenser-audit")
			if err != nil {
				return nil, "", fmt.Errorf("generate audit checkpoint key: %w", err)
			}
			log.Warn("generated an audit checkpoint signing key next to the database; for production configure audit.checkpoint.signing_key_file on another volume",
				zap.String("file", c.SigningKeyFile), zap.String("verifier_key", vkey))
		}
	}
	return audit.LoadSigner(c.SigningKeyFile)
}

// verifierFor returns the verifier from --key (a verifier key or a file
// holding one), or the one derived from the configured signing key.
func verifierFor(cfg *config.Config, key string) (note.Verifier, error) {
	vkey := key
	if key == "" {
		if cfg == nil {
			return nil, errors.New("--key is required")
		}
		_, v, err := audit.LoadSigner(cfg.Audit.Checkpoint.SigningKeyFile)
		if err != nil {
			return nil, err
		}
		vkey = v
	} else if b, err := os.ReadFile(key); err == nil {
		vkey = string(b)
	}
	// A key file ends in a newline (or CRLF, or a space an editor left).
	return note.NewVerifier(strings.TrimRight(vkey, "\n\r "))
}

// anchors returns the configured checkpoint anchors; the checkpointer
// writes to each and verify checks each.
func anchors(cfg *config.Config) []audit.Anchor {
	var out []audit.Anchor
	if cfg.Audit.AnchorDir != "" {
		out = append(out, &audit.DirAnchor{Dir: cfg.Audit.AnchorDir})
	}
	if cfg.Audit.AnchorURL != "" {
		h := &audit.HTTPAnchor{URL: cfg.Audit.AnchorURL}
		if env := cfg.Audit.AnchorTokenEnv; env != "" {
			h.Header = http.Header{"Authorization": {"Bearer " + os.Getenv(env)}}
		}
		out = append(out, h)
	}
	return out
}

// auditGate holds the replica out of service (api.Options.Gate) while its
// log holds entries no anchor has a checkpoint of, unless the operator set
// audit.on_missing_anchor: serve.
func (a *app) auditGate() *fault.Error {
	if !a.refuseUnanchored || a.checkpointer == nil || !a.checkpointer.AnchorMissing() {
		return nil
	}
	return fault.New(fault.AuditUnavailable, "audit_anchor_missing",
		"the audit log holds records but no anchor holds a checkpoint of it (anchors deleted or moved?); no credentials are issued until an operator investigates and runs dispenser audit adopt").
		WithRetryAfter(30 * time.Second)
}

const auditUsage = `Usage:
  dispenser audit query  --config FILE [--access-key-id K] [--job-id J] [--task-id T] [--org O] [--principal P]
                         [--outcome issued|denied|failed|revoked|unrevoked|summarized|adopted] [--bucket B] [--since RFC3339] [--until RFC3339]
                         [--limit N] [--cursor C] [--format table|json|ndjson]
  dispenser audit verify --config FILE [--incremental] [--key VERIFIER_KEY_OR_FILE] [--format text|json]
                         reads only (creates and changes nothing); exit 0: verified; 1: tampering found;
                         2: verified, but records after the newest anchored checkpoint (unanchored tail);
                         3: could not run; 4: anchor missing: a log holds records but an anchor holds no
                         checkpoint of it (anchors deleted or moved, or new; see audit adopt)
  dispenser audit adopt  --config FILE --reason TEXT [--operator NAME] [--log LOG]
                         records an operator's adoption of a log no anchor holds, then anchors it
  dispenser audit verify-receipt FILE [--key VERIFIER_KEY_OR_FILE | --config FILE]
  dispenser audit keygen --out FILE [--name NAME] [--if-missing]
  dispenser audit verifier-key --config FILE
                         prints the verifier key of the configured checkpoint signing key (for auditors)
` + correlateUsage

// verifyUsage is `audit verify --help`: what verify reads, and its exit
// codes, which scripts and monitoring act on.
const verifyUsage = `Usage: dispenser audit verify --config FILE [--incremental] [--key VERIFIER_KEY_OR_FILE] [--format text|json]

Checks every log of the audit trail: each entry's bytes, hash and chain link, every stored Merkle
node, the query index, and the checkpoints in the database and in every configured anchor. It reads
only: the database is opened read-only and nothing is created. See docs/audit.md.

Exit codes:
  0  verified
  1  tampering found (each finding is printed)
  2  verified, but records after the newest anchored checkpoint (an unanchored tail)
  3  could not run (flags, configuration, the store missing or unreadable, an anchor unreachable)
  4  anchor missing: a log holds records but an anchor holds no checkpoint of it (anchors deleted
     or moved, or a new anchor); investigate, then dispenser audit adopt

`

func cmdAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	switch args[0] {
	case "query":
		return cmdAuditQuery(args[1:], stdout, stderr)
	case "verify":
		return cmdAuditVerify(args[1:], stdout, stderr)
	case "verify-receipt":
		return cmdAuditVerifyReceipt(args[1:], stdout, stderr)
	case "adopt":
		return cmdAuditAdopt(args[1:], stdout, stderr)
	case "keygen":
		return cmdAuditKeygen(args[1:], stdout, stderr)
	case "verifier-key":
		return cmdAuditVerifierKey(args[1:], stdout, stderr)
	case "correlate":
		return cmdAuditCorrelate(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown audit command %q\n\n%s", args[0], auditUsage)
	return 2
}

func cmdAuditQuery(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit query", stderr)
	path := fs.String("config", "", "configuration file")
	format := fs.String("format", "table", "table, json or ndjson (ndjson prints every match)")
	params := map[string]*string{}
	for _, name := range []string{"org", "principal", "job-id", "task-id", "access-key-id", "outcome", "bucket", "since", "until", "limit", "cursor"} {
		params[name] = fs.String(name, "", "filter: "+name)
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	switch *format {
	case "table", "json", "ndjson":
	default:
		fmt.Fprintln(stderr, "audit query: --format must be table, json or ndjson")
		return 2
	}
	q := map[string][]string{}
	for name, v := range params {
		if *v != "" {
			q[strings.ReplaceAll(name, "-", "_")] = []string{*v}
		}
	}
	f, err := api.ParseAuditFilter(q)
	if err != nil {
		fmt.Fprintln(stderr, "audit query:", fault.From(err).Message)
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	ctx := context.Background()
	trail, err := openTrail(ctx, cfg, trailCLI, func(problem string) { fmt.Fprintln(stderr, "audit query: warning:", problem) })
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer trail.Close()
	p, err := trail.Query(ctx, f)
	if err != nil {
		fmt.Fprintln(stderr, "audit query:", err)
		return 1
	}
	return writeAuditQuery(ctx, trail, f, p, *format, stdout, stderr)
}

// writeAuditQuery prints the first page p of query f in format (ndjson
// follows the cursor to the last match) and returns the exit code. A write
// error (full disk, closed pipe) fails the command: a cut-off export must
// not look complete.
func writeAuditQuery(ctx context.Context, trail audit.Trail, f audit.Filter, p audit.Page, format string, stdout, stderr io.Writer) int {
	var werr error
	switch format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		werr = enc.Encode(p)
	case "ndjson":
		enc := json.NewEncoder(stdout)
		for {
			for _, r := range p.Records {
				if werr = enc.Encode(r); werr != nil {
					break
				}
			}
			if werr != nil || p.Next == "" {
				break
			}
			f.Cursor = p.Next
			var err error
			if p, err = trail.Query(ctx, f); err != nil {
				fmt.Fprintln(stderr, "audit query:", err)
				return 1
			}
		}
	default:
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tID\tOUTCOME\tREASON\tORG\tPRINCIPAL\tJOB\tTASK\tOPERATION\tLOCATION\tACCESS KEY")
		for _, r := range p.Records {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.ID, r.Outcome, dash(r.Reason),
				dash(r.Org), dash(r.Principal), dash(r.JobID), dash(r.TaskID), dash(r.Operation), location(r.Bucket, r.Prefix), dash(r.AccessKeyID))
		}
		werr = tw.Flush()
		if p.Next != "" && werr == nil {
			fmt.Fprintf(stderr, "more records: --cursor %s\n", p.Next)
		}
	}
	if werr != nil {
		fmt.Fprintln(stderr, "audit query: writing the output:", werr)
		return 1
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdAuditVerify(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verify", stderr)
	path := fs.String("config", "", "configuration file")
	incremental := fs.Bool("incremental", false, "start each log at its newest anchored checkpoint")
	key := fs.String("key", "", "verifier key (or a file holding it); default: derived from audit.checkpoint.signing_key_file")
	format := fs.String("format", "text", "text or json")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), verifyUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 3)
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintln(stderr, "audit verify: --format must be text or json")
		return 3
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 3
	}
	v, err := verifierFor(cfg, *key)
	if err != nil {
		fmt.Fprintln(stderr, "audit verify:", err)
		return 3
	}
	ctx := context.Background()
	trail, err := openTrail(ctx, cfg, trailVerify, nil)
	if err != nil {
		fmt.Fprintln(stderr, "audit verify:", err)
		return 3
	}
	defer trail.Close()
	rep, err := audit.Verify(ctx, trail, audit.VerifyOptions{OriginBase: cfg.Audit.Checkpoint.Origin, Verifier: v,
		Anchors: anchors(cfg), Incremental: *incremental, Retention: cfg.Audit.Retention.D()})
	if err != nil {
		fmt.Fprintln(stderr, "audit verify:", err)
		return 3
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printVerifyReport(stdout, rep, *path)
	}
	switch {
	case rep.Tampered():
		return 1
	case rep.AnchorMissing():
		return 4
	case rep.UnanchoredTail():
		return 2
	}
	return 0
}

// printVerifyReport writes a verify report as text: one line per log, its
// adoptions and problems indented below it.
func printVerifyReport(w io.Writer, rep audit.Report, configPath string) {
	for _, l := range rep.Logs {
		status := "ok"
		switch {
		case len(l.Problems) > 0:
			status = "TAMPERED"
		case l.AnchorMissing:
			status = "ANCHOR MISSING"
		case l.Unanchored > 0:
			status = "ok, unanchored tail"
		}
		fmt.Fprintf(w, "log %s: %s — %d entries (%d re-hashed), anchored checkpoint covers %d, %d unanchored\n",
			l.Log, status, l.Size, l.Checked, l.Anchored, l.Unanchored)
		for _, ad := range l.Adoptions {
			fmt.Fprintf(w, "  adopted: entry %d, %s, by %s, vouching for entries 0..%d that no anchor held: %q\n",
				ad.Seq, ad.Time.Format(time.RFC3339), ad.Operator, ad.Size-1, ad.Reason)
		}
		if l.AnchorMissing {
			// The hint names the log (a log other than the configuration's,
			// such as revoke-cli, is adopted only with --log); a name that
			// is not a valid log name is never printed into a command line.
			logArg := "LOG"
			if audit.ValidLogName(l.Log) {
				logArg = l.Log
			}
			fmt.Fprintf(w, "  - no checkpoint of this log in: %s (anchors deleted or moved, or new); nothing proves these entries are what was signed. "+
				"Investigate; to vouch for the log as it stands: dispenser audit adopt --config %s --log %s --reason \"...\"\n",
				strings.Join(l.AnchorsWithout, ", "), configPath, logArg)
		}
		for _, p := range l.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintln(w, "trail: TAMPERED")
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	if len(rep.Logs) == 0 {
		fmt.Fprintln(w, "no logs")
	}
}

// operatorName is who runs a command: the OS user.
func operatorName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

func cmdAuditAdopt(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit adopt", stderr)
	path := fs.String("config", "", "configuration file")
	reason := fs.String("reason", "", "why the log is adopted (recorded in the log; required)")
	operator := fs.String("operator", "", "who adopts it (recorded in the log; default: the OS user)")
	logFlag := fs.String("log", "", "the log to adopt (default: this configuration's, audit.log or server.replica_id)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	if strings.TrimSpace(*reason) == "" {
		fmt.Fprintln(stderr, "audit adopt: --reason is required (it is recorded in the log)")
		return 2
	}
	if *operator == "" {
		*operator = operatorName()
	}
	if strings.TrimSpace(*operator) == "" {
		fmt.Fprintln(stderr, "audit adopt: cannot tell who you are; give --operator")
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	if *logFlag != "" {
		if !audit.ValidLogName(*logFlag) {
			fmt.Fprintln(stderr, "audit adopt: --log is not a valid log name")
			return 2
		}
		cfg.Audit.Log = *logFlag
	}
	if err := adopt(context.Background(), cfg, *reason, *operator, stdout); err != nil {
		fmt.Fprintln(stderr, "audit adopt:", err)
		return 1
	}
	return 0
}

// adopt verifies the log, then records the adoption and anchors it.
func adopt(ctx context.Context, cfg *config.Config, reason, operator string, stdout io.Writer) error {
	// The signing key must exist: a new one would sign what the old one
	// never saw.
	signer, vkey, err := audit.LoadSigner(cfg.Audit.Checkpoint.SigningKeyFile)
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	trail, err := openTrail(ctx, cfg, trailBorrow, nil)
	if err != nil {
		return err
	}
	defer trail.Close()
	log := logName(cfg)
	rep, err := audit.Verify(ctx, trail, audit.VerifyOptions{OriginBase: cfg.Audit.Checkpoint.Origin, Verifier: v,
		Anchors: anchors(cfg), Retention: cfg.Audit.Retention.D()})
	if err != nil {
		return err
	}
	for _, l := range rep.Logs {
		if l.Log == log && len(l.Problems) > 0 {
			printVerifyReport(stdout, audit.Report{Logs: []audit.LogReport{l}}, cfg.Path)
			return fmt.Errorf("log %s does not verify (above); an adoption would vouch for tampered entries, refusing", log)
		}
	}
	cp := &audit.Checkpointer{Source: trail, Log: log, Origin: audit.Origin(cfg.Audit.Checkpoint.Origin, log), Signer: signer, Anchors: anchors(cfg)}
	e, signed, err := audit.Adopt(ctx, trail, cp, audit.AdoptRequest{Reason: reason, Operator: operator, ReplicaID: cfg.Server.ReplicaID})
	if err != nil {
		return err
	}
	size, _, _ := audit.OpenCheckpoint(signed, cp.Origin, v)
	fmt.Fprintf(stdout, "log %s adopted by %s: entries 0..%d vouched for (%q); adoption record %s; checkpoint of %d entries signed and anchored.\n"+
		"Running replicas resume anchoring on their next checkpoint; audit verify lists the adoption.\n",
		log, operator, e.Seq-1, reason, e.Record.ID, size)
	return nil
}

func cmdAuditVerifyReceipt(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit verify-receipt", stderr)
	key := fs.String("key", "", "verifier key (or a file holding it)")
	path := fs.String("config", "", "derive the verifier key from this configuration's signing key instead")
	var file string
	// The receipt file may come first (as documented); "-" is stdin, not a flag.
	if len(args) > 0 && (args[0] == "-" || !strings.HasPrefix(args[0], "-")) {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	if file == "" && fs.NArg() == 1 {
		file = fs.Arg(0)
	}
	if file == "" {
		fmt.Fprintln(stderr, "audit verify-receipt: give the receipt file (- for stdin)")
		return 2
	}
	var cfg *config.Config
	if *key == "" && *path != "" {
		c, err := loadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		cfg = c
	}
	v, err := verifierFor(cfg, *key)
	if err != nil {
		fmt.Fprintln(stderr, "audit verify-receipt:", err)
		return 2
	}
	var b []byte
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		fmt.Fprintln(stderr, "audit verify-receipt:", err)
		return 1
	}
	var rc audit.Receipt
	if err := json.Unmarshal(b, &rc); err != nil {
		fmt.Fprintln(stderr, "audit verify-receipt: not a receipt:", err)
		return 1
	}
	if err := audit.VerifyReceipt(&rc, v); err != nil {
		fmt.Fprintln(stderr, "audit verify-receipt: INVALID:", err)
		return 1
	}
	fmt.Fprintf(stdout, "receipt valid: %s is entry %d of %s, included in the checkpoint of size %d signed by %s\n",
		rc.ID, rc.LeafIndex, rc.Origin, rc.TreeSize, v.Name())
	return 0
}

func cmdAuditKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit keygen", stderr)
	out := fs.String("out", "", "file to write the signing key to (created with mode 0600, never overwritten)")
	name := fs.String("name", "dispenser-audit", "key name shown in signatures")
	ifMissing := fs.Bool("if-missing", false, "succeed without writing when --out already exists (first-start provisioning)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	if *out == "" {
		fmt.Fprintln(stderr, "audit keygen: --out is required")
		return 2
	}
	if *ifMissing {
		if _, err := os.Stat(*out); err == nil {
			fmt.Fprintf(stdout, "signing key %s already exists; left unchanged\n", *out)
			return 0
		}
	}
	vkey, err := audit.GenerateKey(*out, *name)
	if err != nil {
		fmt.Fprintln(stderr, "audit keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "signing key written to %s\nverifier key (give it to auditors; audit verify --key):\n%s\n", *out, vkey)
	return 0
}
