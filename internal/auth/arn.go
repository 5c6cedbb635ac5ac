package auth

import (
	"regexp"
	"strings"

	"github.com/vtk/dispenser/internal/validate"
)

// ARNRule maps AWS principals to an organization. Used by the gateway and
// IAM methods: the caller's ARN decides the org, never the request.
type ARNRule struct {
	// ARN is a pattern where * matches any run of characters (including
	// '/') and ? one character. It is matched against the ARN as reported
	// and against its normalised role form, so both
	// arn:aws:sts::873682911326:assumed-role/VTKWorker/* and
	// arn:aws:iam::873682911326:role/VTKWorker match a VTKWorker session.
	ARN string `yaml:"arn"`
	Org string `yaml:"org"`
	// RoleID, when set, pins the rule to the role's unique id (AROA...), so
	// a role deleted and recreated under the same name does not inherit
	// access. The caller's id comes from aws:userid ("AROA...:session").
	RoleID string `yaml:"role_id"`
}

var (
	arnShape    = regexp.MustCompile(`^arn:[a-z*?-]+:[a-z0-9*?-]+:[a-z0-9*?-]*:[0-9*?]*:.+$`)
	roleIDShape = regexp.MustCompile(`^(AROA|AIDA)[A-Z0-9]{12,124}$`)
)

func validateARNRules(p *validate.Problems, path string, rules []ARNRule) {
	if len(rules) == 0 {
		p.Addf(path, "configure at least one principal rule (arn → org)")
	}
	for i, r := range rules {
		rp := validate.Join(path, i)
		if !arnShape.MatchString(r.ARN) {
			p.Addf(validate.Join(rp, "arn"), "must be an ARN pattern like arn:aws:sts::123456789012:assumed-role/ROLE/*, got %q", r.ARN)
		} else if strings.Count(r.ARN, "*") > 0 && strings.HasPrefix(strings.SplitN(r.ARN, ":", 6)[4], "*") {
			p.Addf(validate.Join(rp, "arn"), "the account id must not be a wildcard")
		}
		if r.Org == "" {
			p.Addf(validate.Join(rp, "org"), "is required")
		}
		if r.RoleID != "" && !roleIDShape.MatchString(r.RoleID) {
			p.Addf(validate.Join(rp, "role_id"), "must be a role or user unique id (AROA... / AIDA...)")
		}
	}
}

// NormalizeARN turns an STS assumed-role ARN
// (arn:PART:sts::ACCT:assumed-role/ROLE/SESSION) into the role's IAM ARN
// (arn:PART:iam::ACCT:role/ROLE). Other ARNs are returned unchanged. Role
// paths are not part of an assumed-role ARN, so the result has none.
func NormalizeARN(arn string) string {
	f := strings.SplitN(arn, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[2] != "sts" {
		return arn
	}
	res, ok := strings.CutPrefix(f[5], "assumed-role/")
	if !ok {
		return arn
	}
	role, _, ok := strings.Cut(res, "/")
	if !ok || role == "" {
		return arn
	}
	return "arn:" + f[1] + ":iam::" + f[4] + ":role/" + role
}

// globMatch matches s against a pattern of literal characters, * (any run,
// including '/' and ':') and ? (one byte).
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// matchARN returns the first rule matching arn (raw or normalised) and the
// normalised principal. userID is the caller's aws:userid ("AROA...:session"
// or "AIDA..."), used for role_id pins. pinned reports a rule matched the
// ARN but its role_id pin failed.
func matchARN(rules []ARNRule, arn, userID string) (rule ARNRule, principal string, ok, pinFailed bool) {
	norm := NormalizeARN(arn)
	uid, _, _ := strings.Cut(userID, ":")
	for _, r := range rules {
		if !globMatch(r.ARN, arn) && !globMatch(r.ARN, norm) {
			continue
		}
		if r.RoleID != "" && r.RoleID != uid {
			pinFailed = true
			continue
		}
		return r, norm, true, false
	}
	return ARNRule{}, norm, false, pinFailed
}
