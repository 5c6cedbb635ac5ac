package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseExit is the exit code for an error of fs.Parse: 0 when -h or --help
// asked for the flags (the flag package has printed them; asking is not
// bad usage), else the command's code for bad flags.
func parseExit(err error, badFlags int) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return badFlags
}

// errNoConfig is loadConfig's error when no --config was given.
var errNoConfig = errors.New("--config is required")

// configExit is the exit code for an error of loadConfig: bad usage (2)
// when --config is missing, as for any other required flag, else failed.
func configExit(err error, failed int) int {
	if errors.Is(err, errNoConfig) {
		return 2
	}
	return failed
}

// isHelp reports whether a subcommand word asks for the usage text.
func isHelp(word string) bool {
	return word == "help" || word == "-h" || word == "-help" || word == "--help"
}

// cliLogger is the logger of a command a person runs: warnings and errors
// only, as plain lines on the command's stderr (no time, no caller, no
// JSON). The server's info lines would bury the one line that matters.
func cliLogger(stderr io.Writer) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{
		LevelKey: "level", MessageKey: "msg",
		EncodeLevel: zapcore.CapitalLevelEncoder, ConsoleSeparator: " ",
	})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), zapcore.WarnLevel))
}

// subcommand picks the subcommand of a command that has several (keys,
// revoke). done says the command has nothing more to do, with exit code:
// help printed (0), or a missing or unknown subcommand (2, bad usage).
func subcommand(cmd, usage string, subs []string, args []string, stdout, stderr io.Writer) (sub string, rest []string, code int, done bool) {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, usage)
		return "", nil, 2, true
	case isHelp(args[0]):
		fmt.Fprint(stdout, usage)
		return "", nil, 0, true
	case !slices.Contains(subs, args[0]):
		fmt.Fprintf(stderr, "unknown %s command %q\n\n%s", cmd, args[0], usage)
		return "", nil, 2, true
	}
	return args[0], args[1:], 0, false
}

// loadConfig loads and fully checks a configuration for a command that
// needs only the configuration: it builds the backends and authenticators
// as serve would, so check-config and serve fail on the same problems,
// and closes what they opened at once.
func loadConfig(path string, edits ...func(*config.Config)) (*config.Config, error) {
	cfg, problems, err := readConfig(path, edits...)
	if err != nil {
		return nil, err
	}
	c, err := build(cfg, problems, buildDeps{})
	if err != nil {
		return nil, err
	}
	c.release()
	return cfg, nil
}

// readConfig reads the configuration at path: the configuration with the
// problems validating it found (build adds its own and reports them
// together), or the error that stopped reading it (no file, bad YAML).
func readConfig(path string, edits ...func(*config.Config)) (*config.Config, validate.Problems, error) {
	if path == "" {
		return nil, validate.Problems{}, errNoConfig
	}
	c, err := config.Load(path, edits...)
	var ve *validate.Error
	if err != nil && (!errors.As(err, &ve) || c == nil) {
		return nil, validate.Problems{}, err
	}
	var p validate.Problems
	if ve != nil {
		for _, pr := range ve.Problems {
			p.Add(pr)
		}
	}
	return c, p, nil
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", stderr)
	path := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	fmt.Fprintf(stdout, "%s: configuration is valid\n", *path)
	for _, w := range cfg.Audit.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	return 0
}

// maxTokenTTL bounds `dispenser token --ttl`: its tokens are development
// bearer tokens, which should not outlive a working day.
const maxTokenTTL = 24 * time.Hour

func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("token", stderr)
	path := fs.String("config", "", "configuration file")
	subject := fs.String("subject", "", "principal (sub claim)")
	org := fs.String("org", "", "organization claim")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	job := fs.String("job-id", "", "bind the token to one job id")
	task := fs.String("task-id", "", "bind the token to one task id")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	// A non-positive lifetime mints a token that is already expired (and
	// fails only later, as a puzzling 401); a development token is short.
	if *ttl < time.Second || *ttl > maxTokenTTL {
		fmt.Fprintf(stderr, "token: --ttl must be between 1s and %s, got %s\n", maxTokenTTL, *ttl)
		return 2
	}
	c, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	if *subject == "" || *org == "" {
		fmt.Fprintln(stderr, "token: --subject and --org are required")
		return 2
	}
	j := c.Auth.JWT
	if j == nil || j.SigningKeyFile == "" {
		fmt.Fprintln(stderr, "token: the configuration has no auth.jwt.signing_key_file; this command only mints development tokens")
		return 1
	}
	key, method, err := auth.LoadSigningKey(j.SigningKeyFile)
	if err != nil {
		fmt.Fprintln(stderr, "token:", err)
		return 1
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": j.Issuer, "aud": j.Audience, "sub": *subject, j.OrgClaim: *org,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(*ttl).Unix(),
	}
	if *job != "" {
		claims[j.JobIDClaim] = *job
	}
	if *task != "" {
		claims[j.TaskIDClaim] = *task
	}
	if j.PrincipalClaim != "sub" {
		claims[j.PrincipalClaim] = *subject
	}
	tok := jwt.NewWithClaims(method, claims)
	if j.SigningKeyID != "" {
		tok.Header["kid"] = j.SigningKeyID
	}
	s, err := tok.SignedString(key)
	if err != nil {
		fmt.Fprintln(stderr, "token:", err)
		return 1
	}
	fmt.Fprintln(stdout, s)
	return 0
}

func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("policy", stderr)
	path := fs.String("config", "", "configuration file")
	org := fs.String("org", "", "organization")
	principal := fs.String("principal", "cli", "principal to evaluate {principal} templates with")
	location := fs.String("location", "", "s3://bucket/prefix/")
	op := fs.String("operation", "", "get, put, check or tag")
	job := fs.String("job-id", "", "job id")
	task := fs.String("task-id", "", "task id")
	var files multiFlag
	fs.Var(&files, "file", "file under the location (repeatable)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err, 2)
	}
	c, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	names := map[string]bool{}
	for n := range c.Backends {
		names[n] = true
	}
	rules, err := scope.Compile(c.Tenants, names)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	g, err := rules.Decide(scope.Subject{Principal: *principal, Org: *org}, scope.Request{
		Operation: *op, Location: *location, Files: files, JobID: *job, TaskID: *task,
	})
	if err != nil {
		fe := fault.From(err)
		fmt.Fprintf(stderr, "denied: %s: %s\n", fe.Code, fe.Message)
		return 1
	}
	if g.Compacted {
		fmt.Fprintf(stderr, "note: the %d files were compacted to s3://%s/%s to fit the %d-character session policy limit\n",
			len(g.Keys), g.Bucket, g.CompactedPrefix, scope.MaxPolicyChars)
	}
	fmt.Fprintln(stdout, g.Policy)
	return 0
}

// location shows a bucket and prefix as s3://bucket/prefix, or "-" for a
// record that has no bucket (a refused authentication, a malformed
// request) rather than "s3:///".
func location(bucket, prefix string) string {
	if bucket == "" {
		return "-"
	}
	return "s3://" + bucket + "/" + prefix
}
