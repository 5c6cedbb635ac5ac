// Command dispenser is a credential-vending HTTPS service: it authenticates
// a storage task, scopes it to a minimal IAM session policy, vends
// short-lived AWS credentials and records the decision.
package main

import (
	"fmt"
	"io"
	"os"
)

var version = "dev" // stamped with -ldflags "-X main.version=..."

const usage = `dispenser: scoped, audited, short-lived AWS credentials for storage tasks

Usage:
  dispenser serve        --config FILE [--listen ADDR] [--admin-listen ADDR]
  dispenser token        --config FILE --subject NAME --org ORG [--ttl 1h (1s–24h)] [--job-id J] [--task-id T]
  dispenser policy       --config FILE --org ORG --location s3://B/P/ --operation OP [--file F ...] [--principal P] [--job-id J] [--task-id T]
  dispenser keys         create|list|disable --config FILE [--name N --org O | --id AKID]
  dispenser check-config --config FILE
  dispenser credentials  --url URL (--token-file FILE | --sigv4 [--region R] [--service S]) [--ca-file FILE] [--timeout 20s]
  dispenser revoke add    --config FILE --kind org|principal|job|task|access_key_id --value V --reason R [--expires-in 24h | --expires-at RFC3339]
  dispenser revoke list   --config FILE [--all]
  dispenser revoke delete --config FILE --id ID
  dispenser audit        query|verify|adopt|verify-receipt|keygen|verifier-key|correlate ... (dispenser audit help)
  dispenser version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "policy":
		return cmdPolicy(rest, stdout, stderr)
	case "keys":
		return cmdKeys(rest, stdout, stderr)
	case "audit":
		return cmdAudit(rest, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout, stderr)
	case "credentials":
		return cmdCredentials(rest, stdout, stderr)
	case "revoke":
		return cmdRevoke(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return 2
}
