package mock

import (
	"context"
	"encoding/base64"
	"regexp"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

func TestVendShape(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 999, time.UTC)
	v := &Vendor{Now: func() time.Time { return now }, AccountID: "111122223333"}
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		c, err := v.Vend(context.Background(), scope.Grant{Duration: 45 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(c.AccessKeyID) {
			t.Fatalf("access key id %q", c.AccessKeyID)
		}
		if s := c.SecretAccessKey.Reveal(); len(s) != 40 {
			t.Fatalf("secret length %d", len(s))
		}
		if _, err := base64.StdEncoding.DecodeString(c.SessionToken.Reveal()[4:]); err != nil || c.SessionToken.Empty() {
			t.Fatalf("token %v", err)
		}
		if !c.Expiration.Equal(now.Add(45*time.Minute).Truncate(time.Second)) || c.Expiration.Location() != time.UTC {
			t.Fatalf("expiration %v", c.Expiration)
		}
		if c.AccountID != "111122223333" || c.Source != "mock" || c.PackedPolicySize != -1 {
			t.Fatalf("%+v", c)
		}
		if seen[c.AccessKeyID] {
			t.Fatal("repeated access key id")
		}
		seen[c.AccessKeyID] = true
	}
}

func TestVendHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Vendor{}).Vend(ctx, scope.Grant{}); err == nil {
		t.Fatal("vended on a cancelled context")
	}
}

func TestRegistered(t *testing.T) {
	for y, ok := range map[string]bool{"type: mock\naccount_id: \"1\"\n": true, "type: mock\n": true, "type: mock\nbogus: 1\n": false} {
		var spec vend.Spec
		if err := yaml.Unmarshal([]byte(y), &spec); err != nil {
			t.Fatal(err)
		}
		var p validate.Problems
		vs := vend.Build(map[string]vend.Spec{"m": spec}, vend.Deps{}, &p)
		if (p.Err() == nil) != ok || (vs["m"] != nil) != ok {
			t.Errorf("%q: problems %v", y, p.List())
		}
	}
}
