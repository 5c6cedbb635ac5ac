// Package auth proves who is calling. Each method (JWT bearer, SigV4, mTLS,
// trusted gateway header, AWS IAM identity) is an Authenticator; a Chain
// tries them in order. Authenticators never decide what a caller may do:
// they return an Identity and scope decides.
package auth

import (
	"errors"
	"net/http"
	"slices"

	"github.com/vtk/dispenser/internal/fault"
)

// Method names how an identity was proven.
type Method string

// Authentication methods.
const (
	MethodJWT     Method = "jwt"
	MethodSigV4   Method = "sigv4"
	MethodGateway Method = "gateway"
	MethodMTLS    Method = "mtls"
	MethodIAM     Method = "iam"
	MethodAdmin   Method = "admin-token"
)

// Identity is an authenticated caller.
type Identity struct {
	// Principal is the caller's stable name: a JWT subject, an ARN, a key name.
	Principal string `json:"principal"`
	// Org is the organization the credential is bound to by configuration;
	// a caller can never choose it in the request.
	Org    string `json:"org"`
	Method Method `json:"method"`
	// JobID and TaskID, when set, bind the credential to one job/task: a
	// request for another is refused.
	JobID  string `json:"job_id,omitempty"`
	TaskID string `json:"task_id,omitempty"`
	// Details are non-secret facts about the proof (issuer, key id,
	// certificate serial) shown by /v1/whoami.
	Details map[string]string `json:"details,omitempty"`
}

// ErrNoCredentials is returned by an Authenticator when the request carries
// no credential of its kind, so the chain may try the next method.
var ErrNoCredentials = errors.New("no credentials for this method")

// Authenticator proves the identity of an HTTP caller.
//
// Authenticate returns ErrNoCredentials when the request carries nothing
// this method recognises, and a *fault.Error with code Unauthorized (or
// AccessDenied for a valid credential that is not allowed here) when it
// carries a credential that fails. It must not consume r.Body without
// restoring it.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
}

// Challenger is implemented by authenticators that name WWW-Authenticate
// challenges for their 401 answers: one method its own, a Chain those of
// its members.
type Challenger interface {
	Challenges() []string
}

// ChallengesOf returns the challenges of a, or none when it names none.
func ChallengesOf(a Authenticator) []string {
	if c, ok := a.(Challenger); ok {
		return c.Challenges()
	}
	return nil
}

// ClientKeyer is implemented by authenticators that know who a request
// comes from better than its TCP peer does (a trusted gateway asserts the
// caller). ClientKey returns false when it has nothing to say; the key is
// only used to budget failed authentications, never as an identity.
type ClientKeyer interface {
	ClientKey(r *http.Request) (string, bool)
}

// Chain tries each authenticator in order. The first one that recognises a
// credential decides: a failing credential is never retried with another
// method, so a bad token cannot fall through to a weaker method.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(r *http.Request) (Identity, error) {
	for _, a := range c {
		id, err := a.Authenticate(r)
		if errors.Is(err, ErrNoCredentials) {
			continue
		}
		return id, err
	}
	return Identity{}, fault.New(fault.Unauthorized, "missing_credentials", "no credentials: authenticate with one of the methods named in WWW-Authenticate (bearer token, SigV4, ...)")
}

// ClientKey implements ClientKeyer: the first member's key that has one.
func (c Chain) ClientKey(r *http.Request) (string, bool) {
	for _, a := range c {
		if k, ok := a.(ClientKeyer); ok {
			if key, ok := k.ClientKey(r); ok {
				return key, true
			}
		}
	}
	return "", false
}

// Challenges implements Challenger: the distinct challenges of the
// members, in order.
func (c Chain) Challenges() []string {
	var out []string
	for _, a := range c {
		for _, ch := range ChallengesOf(a) {
			if !slices.Contains(out, ch) {
				out = append(out, ch)
			}
		}
	}
	return out
}
