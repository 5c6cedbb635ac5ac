package cache

import (
	"context"
	"testing"
	"time"

	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// countingVendor returns a new access key per call.
type countingVendor struct{ n int }

func (v *countingVendor) Vend(_ context.Context, g scope.Grant) (vend.Credentials, error) {
	v.n++
	return vend.Credentials{AccessKeyID: "ASIAFORGET" + string(rune('A'+v.n)), Expiration: time.Now().Add(time.Hour), PackedPolicySize: -1}, nil
}

// TestForgetDropsEntry: a revoked access key must not be served again from
// the cache; Forget makes the next request vend fresh credentials.
func TestForgetDropsEntry(t *testing.T) {
	up := &countingVendor{}
	c := New(up, vend.CacheOptions{MaxEntries: 10}, 20*time.Minute, Deps{})
	defer c.Close()
	g := scope.Grant{Org: "acme", Backend: "b", RoleARN: "arn:aws:iam::111122223333:role/r", Policy: "{}", Duration: time.Hour, SessionName: "s1"}
	first, err := c.Vend(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Vend(context.Background(), g); again.AccessKeyID != first.AccessKeyID || up.n != 1 {
		t.Fatalf("second request was not a hit: %s vs %s, upstream calls %d", again.AccessKeyID, first.AccessKeyID, up.n)
	}
	c.Forget(g)
	if c.Cached(g) {
		t.Fatal("grant still cached after Forget")
	}
	fresh, err := c.Vend(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.AccessKeyID == first.AccessKeyID || up.n != 2 {
		t.Fatalf("Forget did not force a new issuance: %s, upstream calls %d", fresh.AccessKeyID, up.n)
	}
}
