// Package awsdeny is the AWS-side kill switch for revocations: it attaches
// an inline deny policy to the tenant roles, so credentials already issued
// stop working at AWS, not just new requests at the dispenser. It needs
// iam:PutRolePolicy and iam:DeleteRolePolicy on those roles.
//
// What each kind denies (a session carries the role's inline policies, and
// IAM evaluates them on every call, so the deny bites within seconds):
//   - job, task: sessions tagged job-id / task-id = value (aws:PrincipalTag)
//   - principal: sessions whose source identity is the principal
//     (aws:SourceIdentity, the principal sanitised as scope.SanitizeName
//     does; only when the tenant's source_identity is the default
//     "{principal}")
//   - org: every session of the tenant's role issued before the revocation
//     ("revoke all before T", aws:TokenIssueTime DateLessThan)
//   - access_key_id: IAM has no condition key for it; nothing is attached.
//
// With expires_at, the deny carries aws:CurrentTime DateLessThan expires_at.
package awsdeny

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/vtk/dispenser/internal/revoke"
	"github.com/vtk/dispenser/internal/scope"
)

// RolePolicyAPI is the part of the IAM client the kill switch uses.
type RolePolicyAPI interface {
	PutRolePolicy(ctx context.Context, in *iam.PutRolePolicyInput, opts ...func(*iam.Options)) (*iam.PutRolePolicyOutput, error)
	DeleteRolePolicy(ctx context.Context, in *iam.DeleteRolePolicyInput, opts ...func(*iam.Options)) (*iam.DeleteRolePolicyOutput, error)
}

// KillSwitch implements revoke.KillSwitch with IAM inline policies.
type KillSwitch struct {
	IAM RolePolicyAPI
	// Roles returns the role ARNs a revocation applies to: the org's role
	// for kind org, every tenant role otherwise.
	Roles func(r revoke.Revocation) []string
	// JobTagKey and TaskTagKey are the session tag keys (default job-id,
	// task-id, the scope package's defaults).
	JobTagKey, TaskTagKey string
}

var _ revoke.KillSwitch = (*KillSwitch)(nil)

// PolicyName is the inline policy name of a revocation.
func PolicyName(r revoke.Revocation) string { return "dispenser-revocation-" + r.ID }

// Document returns the deny policy of r, or "" when the kind has none.
func (k *KillSwitch) Document(r revoke.Revocation) (string, error) {
	jobKey, taskKey := k.JobTagKey, k.TaskTagKey
	if jobKey == "" {
		jobKey = "job-id"
	}
	if taskKey == "" {
		taskKey = "task-id"
	}
	cond := map[string]map[string]string{}
	switch r.Kind {
	case revoke.KindJob:
		cond["StringEquals"] = map[string]string{"aws:PrincipalTag/" + jobKey: r.Value}
	case revoke.KindTask:
		cond["StringEquals"] = map[string]string{"aws:PrincipalTag/" + taskKey: r.Value}
	case revoke.KindPrincipal:
		// Sessions carry the principal as sanitised for STS (charset, 64
		// characters): deny on that, or the deny never matches. Principals
		// that sanitise alike are denied alike (the safe direction).
		cond["StringEquals"] = map[string]string{"aws:SourceIdentity": scope.SanitizeName(r.Value)}
	case revoke.KindOrg:
		cond["DateLessThan"] = map[string]string{"aws:TokenIssueTime": r.CreatedAt.UTC().Format(time.RFC3339)}
	default:
		return "", nil
	}
	if r.ExpiresAt != nil {
		if cond["DateLessThan"] == nil {
			cond["DateLessThan"] = map[string]string{}
		}
		cond["DateLessThan"]["aws:CurrentTime"] = r.ExpiresAt.UTC().Format(time.RFC3339)
	}
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Sid": "DispenserRevocation", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition": cond,
		}},
	}
	b, err := json.Marshal(doc)
	return string(b), err
}

// RoleName returns the role name of a role ARN (the last path segment).
func RoleName(arn string) (string, error) {
	i := strings.Index(arn, ":role/")
	if !strings.HasPrefix(arn, "arn:") || i < 0 {
		return "", fmt.Errorf("not a role ARN: %q", arn)
	}
	rest := arn[i+len(":role/"):]
	name := rest[strings.LastIndexByte(rest, '/')+1:]
	if name == "" {
		return "", fmt.Errorf("not a role ARN: %q", arn)
	}
	return name, nil
}

func (k *KillSwitch) roleNames(r revoke.Revocation) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, arn := range k.Roles(r) {
		n, err := RoleName(arn)
		if err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// Apply attaches the deny to every role of r.
func (k *KillSwitch) Apply(ctx context.Context, r revoke.Revocation) error {
	doc, err := k.Document(r)
	if err != nil || doc == "" {
		return err
	}
	roles, err := k.roleNames(r)
	if err != nil {
		return err
	}
	var errs []error
	for _, role := range roles {
		_, err := k.IAM.PutRolePolicy(ctx, &iam.PutRolePolicyInput{
			RoleName: aws.String(role), PolicyName: aws.String(PolicyName(r)), PolicyDocument: aws.String(doc),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("role %s: %w", role, err))
		}
	}
	return errors.Join(errs...)
}

// Remove detaches the deny; a policy already gone is not an error.
func (k *KillSwitch) Remove(ctx context.Context, r revoke.Revocation) error {
	if doc, err := k.Document(r); err != nil || doc == "" {
		return err
	}
	roles, err := k.roleNames(r)
	if err != nil {
		return err
	}
	var errs []error
	for _, role := range roles {
		_, err := k.IAM.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(PolicyName(r))})
		var nse *types.NoSuchEntityException
		if err != nil && !errors.As(err, &nse) {
			errs = append(errs, fmt.Errorf("role %s: %w", role, err))
		}
	}
	return errors.Join(errs...)
}
