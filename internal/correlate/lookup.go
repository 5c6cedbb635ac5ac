package correlate

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/scope/iampolicy"
)

// issuance is one issued record of an access key, as the correlator keeps
// it (no client address, user agent or latency).
type issuance struct {
	Issuance
	policy *policyRef
}

// policyRef is one distinct session policy, compiled on first use.
type policyRef struct {
	sha256   string // of text
	text     string
	compiled *iampolicy.Policy
	err      error
	done     bool
}

func (p *policyRef) get() (*iampolicy.Policy, error) {
	if !p.done {
		p.compiled, p.err = iampolicy.Parse(p.text)
		p.text, p.done = "", true
	}
	return p.compiled, p.err
}

// keyEntry is what the trail holds for one access key id.
type keyEntry struct {
	key string
	// issued are the issued records, newest first (at most one page).
	issued []*issuance
	// dense is set when the key has more issued records than one page
	// (a static key shared by many tasks): each event then looks up the
	// records around its own time.
	dense bool
	// revokedAt is when the key was last revoked (zero: not revoked, or
	// the revocation was lifted).
	revokedAt time.Time
}

func (e *keyEntry) weight() int { return max(1, len(e.issued)) }

// lookups reads access keys from the trail through a bounded LRU cache,
// weighted by the records each entry holds, and interns policies so
// records of one grant share one compiled policy.
type lookups struct {
	trail    audit.Querier
	capacity int
	used     int
	ll       *list.List
	items    map[string]*list.Element
	policies map[string]*policyRef
	queries  int
}

// maxPolicies bounds the intern table; entries keep their own references,
// so clearing it only costs re-interning.
const maxPolicies = 4096

func newLookups(trail audit.Querier, capacity int) *lookups {
	return &lookups{trail: trail, capacity: capacity, ll: list.New(), items: map[string]*list.Element{}, policies: map[string]*policyRef{}}
}

// entry returns the cached entry of key, querying the trail on a miss.
func (l *lookups) entry(ctx context.Context, key string) (*keyEntry, error) {
	if el, ok := l.items[key]; ok {
		l.ll.MoveToFront(el)
		return el.Value.(*keyEntry), nil
	}
	page, err := l.query(ctx, audit.Filter{AccessKeyID: key, Limit: audit.MaxLimit})
	if err != nil {
		return nil, err
	}
	e := &keyEntry{key: key, dense: page.Next != ""}
	e.issued, e.revokedAt = l.convert(page.Records)
	l.used += e.weight()
	l.items[key] = l.ll.PushFront(e)
	for l.used > l.capacity && l.ll.Len() > 1 {
		old := l.ll.Back()
		oe := old.Value.(*keyEntry)
		l.ll.Remove(old)
		delete(l.items, oe.key)
		l.used -= oe.weight()
	}
	return e, nil
}

// around returns the issued records of a dense key that can have been
// live at t: issued from the longest session before it up to t.
func (l *lookups) around(ctx context.Context, key string, t time.Time, skew time.Duration) ([]*issuance, error) {
	page, err := l.query(ctx, audit.Filter{AccessKeyID: key, Since: t.Add(-scope.MaxRoleDuration - skew), Until: t.Add(skew + time.Nanosecond), Limit: audit.MaxLimit})
	if err != nil {
		return nil, err
	}
	issued, _ := l.convert(page.Records)
	return issued, nil
}

func (l *lookups) query(ctx context.Context, f audit.Filter) (audit.Page, error) {
	l.queries++
	p, err := l.trail.Query(ctx, f)
	if err != nil {
		return audit.Page{}, fmt.Errorf("audit trail lookup of access key %s: %w", f.AccessKeyID, err)
	}
	return p, nil
}

// convert keeps the issued records (newest first) and the key's
// revocation state from one page of records.
func (l *lookups) convert(recs []audit.Record) ([]*issuance, time.Time) {
	var issued []*issuance
	var revokedAt time.Time
	decided := false
	for i := range recs {
		r := &recs[i]
		switch r.Outcome {
		case audit.Issued:
			issued = append(issued, &issuance{Issuance: issuanceOf(r), policy: l.intern(r)})
		case audit.Revoked, audit.Unrevoked:
			// Newest first: the newest change decides.
			if !decided && r.Outcome == audit.Revoked {
				revokedAt = r.Time
			}
			decided = true
		}
	}
	return issued, revokedAt
}

// intern keys policies by the hash of their text, not the record's
// policy_sha256: a record is judged by the policy it holds.
func (l *lookups) intern(r *audit.Record) *policyRef {
	h := sha256.Sum256([]byte(r.Policy))
	sum := hex.EncodeToString(h[:])
	if p, ok := l.policies[sum]; ok {
		return p
	}
	if len(l.policies) >= maxPolicies {
		clear(l.policies)
	}
	p := &policyRef{sha256: sum, text: r.Policy}
	if r.Policy == "" {
		p.err, p.done = fmt.Errorf("record %s has no session policy", r.ID), true
	}
	l.policies[sum] = p
	return p
}

func issuanceOf(r *audit.Record) Issuance {
	loc := "s3://" + r.Bucket + "/" + r.Prefix
	return Issuance{RecordID: r.ID, IssuedAt: r.Time.UTC(), Expiration: r.Expiration.UTC(), Principal: r.Principal, Org: r.Org,
		JobID: r.JobID, TaskID: r.TaskID, Operation: r.Operation, Location: loc, Backend: r.Backend, RoleARN: r.RoleARN,
		SessionName: r.SessionName, SourceIdentity: r.SourceIdentity, PolicySHA256: r.PolicySHA256}
}
