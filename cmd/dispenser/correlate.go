package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vtk/dispenser/internal/cloudtrail"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/correlate"
	"github.com/vtk/dispenser/internal/duration"
)

const correlateUsage = `  dispenser audit correlate --config FILE --cloudtrail PATH [--cloudtrail PATH ...] [PATH ...]
                         [--since RFC3339] [--until RFC3339] [--format table|json|ndjson] [--by event|task]
                         [--all] [--skew DURATION]
                         PATH: a CloudTrail log file (.json, .json.gz, NDJSON), a directory (walked), - for stdin
                         exit 0: nothing critical; 1: critical findings (outside_grant, unknown_key, a successful
                         unverifiable call); 2: bad input (reported; the rest was correlated); 3: could not run
`

// pathList collects a repeatable flag.
type pathList []string

// String implements flag.Value.
func (p *pathList) String() string { return strings.Join(*p, ",") }

// Set implements flag.Value.
func (p *pathList) Set(v string) error { *p = append(*p, v); return nil }

// Exit codes of audit correlate.
const (
	correlateOK       = 0
	correlateCritical = 1
	correlateBadInput = 2
	correlateCannot   = 3
)

// correlateArgs are audit correlate's flags and paths, checked.
type correlateArgs struct {
	path, format, skew string
	inputs             pathList
	mode               correlate.By
	all                bool
	help               bool         // -h or --help printed the flags
	window             [2]time.Time // since, until; zero: open
}

func cmdAuditCorrelate(args []string, stdout, stderr io.Writer) int {
	ca, ok := parseCorrelateArgs(args, stderr)
	if ca.help {
		return correlateOK
	}
	if !ok {
		return correlateBadInput
	}
	cfg, err := loadConfig(ca.path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, correlateCannot)
	}
	tolerance := cfg.Correlate.Skew()
	if ca.skew != "" {
		d, err := duration.Parse(ca.skew)
		if err != nil || d.D() < 0 || d.D() > time.Hour {
			fmt.Fprintln(stderr, "audit correlate: --skew must be a duration from 0s to 1h, such as 2m")
			return correlateBadInput
		}
		tolerance = d.D()
	}
	ctx := context.Background()
	trail, err := openTrail(ctx, cfg, trailCLI, func(problem string) { fmt.Fprintln(stderr, "audit correlate: warning:", problem) })
	if err != nil {
		fmt.Fprintln(stderr, err)
		return correlateCannot
	}
	defer trail.Close()
	c, err := correlate.New(correlate.Options{Trail: trail, Roles: tenantRoles(cfg), ClockSkew: tolerance, Since: ca.window[0], Until: ca.window[1]})
	if err != nil {
		fmt.Fprintln(stderr, "audit correlate:", err)
		return correlateCannot
	}
	rd := &cloudtrail.Reader{Stdin: os.Stdin}
	sum, err := correlate.Correlate(ctx, c, rd, func(v cloudtrail.Visitor) error { return rd.Scan(ctx, ca.inputs, v) },
		correlate.RunOptions{By: ca.mode, All: ca.all, OnProblem: func(p cloudtrail.Problem) {
			fmt.Fprintf(stderr, "audit correlate: %s\n", p)
		}}, correlateWriter(stdout, ca))
	if err != nil {
		// A cut-off report must not look complete.
		fmt.Fprintln(stderr, "audit correlate: stopped, the report is incomplete:", err)
		return correlateCannot
	}
	if ca.format != "table" && sum.Critical > 0 {
		fmt.Fprintf(stderr, "audit correlate: %d critical finding(s)\n", sum.Critical)
	}
	switch {
	case sum.Critical > 0:
		return correlateCritical
	case sum.ProblemCount > 0:
		return correlateBadInput
	}
	return correlateOK
}

// parseCorrelateArgs parses and checks audit correlate's arguments; what
// is wrong is said on stderr (ok false: exit correlateBadInput).
func parseCorrelateArgs(args []string, stderr io.Writer) (ca correlateArgs, ok bool) {
	fs := newFlags("audit correlate", stderr)
	path := fs.String("config", "", "configuration file")
	fs.Var(&ca.inputs, "cloudtrail", "CloudTrail log file, directory or - (repeatable; further paths may follow the flags)")
	since := fs.String("since", "", "only events at or after this time (RFC 3339)")
	until := fs.String("until", "", "only events before this time (RFC 3339)")
	format := fs.String("format", "table", "table, json or ndjson")
	by := fs.String("by", "event", "event (one line per event) or task (one summary per task)")
	all := fs.Bool("all", false, "also list events that have nothing to do with the dispenser (not_dispenser)")
	skew := fs.String("skew", "", "clock skew tolerated around a key's lifetime (default: correlate.clock_skew)")
	// Paths may come before, between and after the flags.
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			ca.help = errors.Is(err, flag.ErrHelp)
			return ca, false
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		ca.inputs, rest = append(ca.inputs, rest[0]), rest[1:]
	}
	ca.path, ca.format, ca.all, ca.skew = *path, *format, *all, *skew
	fail := func(format string, a ...any) (correlateArgs, bool) {
		fmt.Fprintf(stderr, "audit correlate: "+format+"\n", a...)
		return ca, false
	}
	if len(ca.inputs) == 0 {
		return fail("give --cloudtrail PATH (a file, a directory, or - for stdin)")
	}
	switch ca.format {
	case "table", "json", "ndjson":
	default:
		return fail("--format must be table, json or ndjson")
	}
	var err error
	if ca.mode, err = correlate.ParseBy(*by); err != nil {
		return fail("--%v", err)
	}
	for i, v := range []struct{ name, val string }{{"since", *since}, {"until", *until}} {
		if v.val == "" {
			continue
		}
		if ca.window[i], err = time.Parse(time.RFC3339Nano, v.val); err != nil {
			return fail("--%s must be an RFC 3339 time such as 2026-03-01T12:00:00Z", v.name)
		}
	}
	if !ca.window[0].IsZero() && !ca.window[1].IsZero() && !ca.window[1].After(ca.window[0]) {
		return fail("--until must be after --since")
	}
	return ca, true
}

// correlateWriter is the report writer of the chosen format.
func correlateWriter(stdout io.Writer, ca correlateArgs) correlate.Writer {
	switch ca.format {
	case "json":
		return correlate.NewJSONWriter(stdout, ca.mode)
	case "ndjson":
		return correlate.NewNDJSONWriter(stdout)
	}
	return newCorrelateTable(stdout, ca.all)
}

// tenantRoles lists the configured tenants' roles.
func tenantRoles(cfg *config.Config) []correlate.Role {
	var out []correlate.Role
	for _, t := range cfg.Tenants {
		if t.RoleARN != "" {
			out = append(out, correlate.Role{ARN: t.RoleARN, Org: t.Org})
		}
	}
	return out
}

// correlateTable renders a run as aligned columns. It flushes every
// tableBlock rows so memory stays bounded (columns align per block).
type correlateTable struct {
	out  *errWriter
	tw   *tabwriter.Writer
	rows int
	all  bool
}

const tableBlock = 256

func newCorrelateTable(out io.Writer, all bool) *correlateTable {
	return &correlateTable{out: &errWriter{w: out}, all: all}
}

// errWriter keeps the first write error, so a cut-off report fails the
// command instead of looking complete.
type errWriter struct {
	w   io.Writer
	err error
}

// Write implements io.Writer.
func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (t *correlateTable) row(header string, cells ...string) error {
	if t.tw == nil {
		t.tw = tabwriter.NewWriter(t.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(t.tw, header)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
	if t.rows++; t.rows%tableBlock == 0 {
		_ = t.tw.Flush()
		t.tw = nil
	}
	return t.out.err
}

const eventHeader = "TIME\tVERDICT\tEVENT\tOBJECT\tOUTCOME\tACCESS KEY\tPRINCIPAL\tORG\tJOB\tTASK\tOPERATION\tGRANT\tRECORD\tREASON"

// Event implements correlate.Writer. Critical verdicts are upper-case.
func (t *correlateTable) Event(e *correlate.Event) error {
	v := string(e.Verdict)
	if e.Critical {
		v = strings.ToUpper(v)
	}
	r := e.Record
	if r == nil {
		r = &correlate.Issuance{}
	}
	reason := e.Reason
	if len(e.Notes) > 0 {
		reason = strings.TrimSpace(reason + " [" + strings.Join(e.Notes, "; ") + "]")
	}
	return t.row(eventHeader, e.Time.Format(time.RFC3339), v, e.EventName, dash(e.Object), e.Outcome, dash(e.AccessKeyID),
		dash(r.Principal), dash(r.Org), dash(r.JobID), dash(r.TaskID), dash(r.Operation), dash(r.Location), dash(r.RecordID), reason)
}

const taskHeader = "ORG\tPRINCIPAL\tJOB\tTASK\tEVENTS\tREAD\tWRITTEN\tBYTES IN\tBYTES OUT\tFIRST EVENT\tLAST EVENT\tCRITICAL\tRECORDS"

// Finish implements correlate.Writer.
func (t *correlateTable) Finish(tasks []*correlate.Task, s correlate.Summary) error {
	for _, k := range tasks {
		more := ""
		if k.ObjectsTruncated {
			more = "+"
		}
		if err := t.row(taskHeader, k.Org, k.Principal, dash(k.JobID), dash(k.TaskID), fmt.Sprint(k.Events),
			fmt.Sprint(len(k.ObjectsRead), more), fmt.Sprint(len(k.ObjectsWritten), more), fmt.Sprint(k.BytesIn), fmt.Sprint(k.BytesOut),
			k.FirstEvent.Format(time.RFC3339), k.LastEvent.Format(time.RFC3339), fmt.Sprint(k.Critical), strings.Join(k.Records, ",")); err != nil {
			return err
		}
	}
	if t.tw != nil {
		_ = t.tw.Flush()
	}
	if t.rows > 0 {
		fmt.Fprintln(t.out)
	}
	fmt.Fprintf(t.out, "%d file(s), %d record(s): %d S3 event(s) judged, %d other event(s) skipped, %d outside the time window, %d trail lookup(s)\n",
		s.Files, s.Records, s.S3Events, s.OtherEvents, s.OutsideWindow, s.TrailQueries)
	var parts []string
	for _, v := range correlate.Verdicts {
		parts = append(parts, fmt.Sprintf("%s %d", v, s.Verdicts[v]))
	}
	line := strings.Join(parts, ", ")
	if !t.all && s.Verdicts[correlate.NotDispenser] > 0 {
		line += " (not_dispenser events not listed; --all lists them)"
	}
	fmt.Fprintln(t.out, line)
	if s.Critical > 0 {
		fmt.Fprintf(t.out, "CRITICAL: %d event(s) (outside_grant %d, unknown_key %d, successful unverifiable %d)\n", s.Critical,
			s.Verdicts[correlate.OutsideGrant], s.Verdicts[correlate.UnknownKey], s.Critical-s.Verdicts[correlate.OutsideGrant]-s.Verdicts[correlate.UnknownKey])
	}
	if s.ProblemCount > 0 {
		fmt.Fprintf(t.out, "%d input problem(s), reported on standard error; those records were skipped\n", s.ProblemCount)
	}
	return t.out.err
}
