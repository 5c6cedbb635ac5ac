package scope

import (
	"testing"

	"github.com/vtk/dispenser/internal/scope/iampolicy"
)

// The policy tests check what a generated session policy actually allows
// with iampolicy, the evaluator the CloudTrail correlator uses too. It
// implements exactly the subset of the policy language the dispenser may
// emit and refuses everything else, so a new construct in a generated
// policy fails these tests instead of being silently misread.

// s3Request is one S3 call as IAM authorises it.
type s3Request = iampolicy.Request

// objectReq builds an object-level request.
func objectReq(action, bucket, key string) s3Request {
	return s3Request{Action: action, Resource: "arn:aws:s3:::" + bucket + "/" + key}
}

// listReq builds ListBucket; prefix nil means a request without a prefix.
func listReq(bucket string, prefix *string) s3Request {
	r := s3Request{Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + bucket}
	if prefix != nil {
		r.Context = map[string]string{"s3:prefix": *prefix}
	}
	return r
}

func ptr(s string) *string { return &s }

func parseEvalPolicy(policy string) (*iampolicy.Policy, error) { return iampolicy.Parse(policy) }

func evaluate(p *iampolicy.Policy, req s3Request) bool { return p.Allows(req) }

func iamMatch(pattern, s string) bool { return iampolicy.Match(pattern, s) }

// mustEval parses policy and evaluates req, failing the test on a policy
// the evaluator does not understand.
func mustEval(t testing.TB, policy string, req s3Request) bool {
	t.Helper()
	p, err := parseEvalPolicy(policy)
	if err != nil {
		t.Fatalf("evaluator cannot read policy %s: %v", policy, err)
	}
	return evaluate(p, req)
}
