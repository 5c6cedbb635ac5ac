// Package iam holds the IAM policies of the assume-role setup as JSON files
// (see docs/aws-setup.md); the package
// embeds them so a test can check that they parse and cover what the
// dispenser does.
package iam

import "embed"

// Files are the policy documents.
//
//go:embed *.json
var Files embed.FS
