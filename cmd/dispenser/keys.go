package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/vtk/dispenser/internal/auth/keystore"
	"github.com/vtk/dispenser/internal/scope"
)

const keysUsage = `Usage:
  dispenser keys create  --config FILE --name NAME --org ORG
  dispenser keys list    --config FILE
  dispenser keys disable --config FILE --id ACCESS_KEY_ID
`

// cmdKeys manages the SigV4 access keys of auth.sigv4.keys.
func cmdKeys(args []string, stdout, stderr io.Writer) int {
	sub, rest, code, done := subcommand("keys", keysUsage, []string{"create", "list", "disable"}, args, stdout, stderr)
	if done {
		return code
	}
	fs := newFlags("keys "+sub, stderr)
	path := fs.String("config", "", "configuration file")
	name := fs.String("name", "", "key name (the principal of requests signed with it)")
	org := fs.String("org", "", "organization the key is bound to")
	id := fs.String("id", "", "access key id")
	if err := fs.Parse(rest); err != nil {
		return parseExit(err, 2)
	}
	c, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return configExit(err, 1)
	}
	if c.Auth.SigV4 == nil {
		fmt.Fprintln(stderr, "keys: the configuration has no auth.sigv4 section")
		return 1
	}
	store, err := c.Auth.SigV4.Keys.Open()
	if err != nil {
		fmt.Fprintln(stderr, "keys:", err)
		return 1
	}
	if cl, ok := store.(io.Closer); ok {
		defer cl.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch sub {
	case "create":
		if *name == "" || *org == "" {
			fmt.Fprintln(stderr, "keys create: --name and --org are required")
			return 2
		}
		if !orgConfigured(c.Tenants, *org) {
			fmt.Fprintf(stderr, "keys create: org %q has no tenant in the configuration\n", *org)
			return 1
		}
		return keysCreate(ctx, store, *name, *org, stdout, stderr)
	case "list":
		return keysList(ctx, store, stdout, stderr)
	case "disable":
		if *id == "" {
			fmt.Fprintln(stderr, "keys disable: --id is required")
			return 2
		}
		if err := store.Disable(ctx, *id); errors.Is(err, keystore.ErrNotFound) {
			fmt.Fprintf(stderr, "keys disable: no key %s\n", *id)
			return 1
		} else if err != nil {
			fmt.Fprintln(stderr, "keys disable:", err)
			return 1
		}
		fmt.Fprintf(stdout, "disabled %s\n", *id)
		return 0
	}
	fmt.Fprintf(stderr, "unknown keys command %q\n\n%s", sub, keysUsage)
	return 2
}

// keysCreate is dispenser keys create.
func keysCreate(ctx context.Context, store keystore.Store, name, org string, stdout, stderr io.Writer) int {
	k, err := store.Create(ctx, name, org)
	if err != nil {
		fmt.Fprintln(stderr, "keys create:", err)
		return 1
	}
	// The only time the secret is shown: it is printed, not logged.
	out, _ := json.MarshalIndent(map[string]string{
		"AccessKeyId": k.ID, "SecretAccessKey": k.Secret.Reveal(), "Name": k.Name, "Org": k.Org,
	}, "", "  ")
	fmt.Fprintln(stdout, string(out))
	return 0
}

// keysList is dispenser keys list.
func keysList(ctx context.Context, store keystore.Store, stdout, stderr io.Writer) int {
	keys, err := store.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "keys list:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCESS KEY ID\tNAME\tORG\tCREATED\tSTATUS")
	for _, k := range keys {
		status := "active"
		if k.Disabled {
			status = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Org, k.Created.Format(time.RFC3339), status)
	}
	_ = tw.Flush()
	return 0
}

func orgConfigured(tenants []scope.Tenant, org string) bool {
	for _, t := range tenants {
		if t.Org == org {
			return true
		}
	}
	return false
}
