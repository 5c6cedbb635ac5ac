// Package mock is the `mock` backend: well-formed fake credentials for
// development and tests. They authenticate nowhere.
package mock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"time"

	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/secret"
	"github.com/vtk/dispenser/internal/validate"
	"github.com/vtk/dispenser/internal/vend"
)

func init() {
	vend.Register("mock", func(spec vend.Spec, d vend.Deps, p *validate.Problems, path string) vend.Vendor {
		var opts struct {
			AccountID string `yaml:"account_id"`
		}
		if !spec.Decode(&opts, p, path) {
			return nil
		}
		return &Vendor{Now: d.Now, AccountID: opts.AccountID}
	})
}

// Vendor returns fresh random credentials on every call.
type Vendor struct {
	Now       func() time.Time
	AccountID string
}

var _ vend.Vendor = (*Vendor)(nil)

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// Vend implements vend.Vendor.
func (v *Vendor) Vend(ctx context.Context, g scope.Grant) (vend.Credentials, error) {
	if err := ctx.Err(); err != nil {
		return vend.Credentials{}, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	id := make([]byte, 16)
	rand.Read(id)
	for i := range id {
		id[i] = keyAlphabet[int(id[i])%len(keyAlphabet)]
	}
	sec := make([]byte, 30) // 40 base64 characters
	rand.Read(sec)
	tok := make([]byte, 96)
	rand.Read(tok)
	return vend.Credentials{
		AccessKeyID:      "ASIA" + string(id),
		SecretAccessKey:  secret.Secret(base64.StdEncoding.EncodeToString(sec)),
		SessionToken:     secret.Secret("MOCK" + base64.StdEncoding.EncodeToString(tok)),
		Expiration:       now().Add(g.Duration).UTC().Truncate(time.Second),
		AccountID:        v.AccountID,
		PackedPolicySize: -1,
		Source:           "mock",
	}, nil
}
