package audit

// Outcomes of a change to the revocation list. The trail records who cut
// off (or restored) access next to the decisions that cut-off affects, so
// one query answers "why was this job refused, and who decided it".
const (
	// Revoked is a revocation added.
	Revoked Outcome = "revoked"
	// Unrevoked is a revocation deleted (access restored).
	Unrevoked Outcome = "unrevoked"
)

// Known reports whether o is an outcome the trail records.
func (o Outcome) Known() bool {
	switch o {
	case Issued, Denied, Failed, Revoked, Unrevoked, Adopted:
		return true
	case Summarized: // refusals counted past the denial-record budget
		return true
	}
	return false
}
