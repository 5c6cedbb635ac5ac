package vend_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
)

// plainVendor has no optional ability.
type plainVendor struct{}

func (plainVendor) Vend(context.Context, scope.Grant) (vend.Credentials, error) {
	return vend.Credentials{}, nil
}

// ableVendor has every optional ability the Router passes on.
type ableVendor struct {
	plainVendor
	forgot    []string
	reloadErr error
	reloads   int
}

func (v *ableVendor) Forget(g scope.Grant) bool { v.forgot = append(v.forgot, g.Org); return true }
func (v *ableVendor) Reload() error             { v.reloads++; return v.reloadErr }

var (
	_ vend.Vendor    = plainVendor{}
	_ vend.Forgetter = (*ableVendor)(nil)
	_ vend.Reloader  = (*ableVendor)(nil)
)

func TestRouterForgetAsksTheGrantsBackend(t *testing.T) {
	able := &ableVendor{}
	r := vend.Router{"cached": able, "plain": plainVendor{}}
	for _, tc := range []struct {
		backend string
		want    bool
	}{{"cached", true}, {"plain", false}, {"missing", false}} {
		if got := r.Forget(scope.Grant{Backend: tc.backend, Org: tc.backend}); got != tc.want {
			t.Errorf("Forget on %s = %v, want %v", tc.backend, got, tc.want)
		}
	}
	if len(able.forgot) != 1 || able.forgot[0] != "cached" {
		t.Fatalf("the caching backend was asked to forget %v", able.forgot)
	}
}

func TestRouterReloadStopsAtTheFirstFailure(t *testing.T) {
	bad := &ableVendor{reloadErr: errors.New("unreadable file")}
	good := &ableVendor{}
	r := vend.Router{"a-good": good, "b-bad": bad, "c-plain": plainVendor{}}
	err := r.Reload()
	if err == nil || err.Error() != "backend b-bad: unreadable file" {
		t.Fatalf("Reload = %v, want the failing backend named", err)
	}
	if good.reloads != 1 || bad.reloads != 1 {
		t.Fatalf("reloads: good %d, bad %d", good.reloads, bad.reloads)
	}
	if err := (vend.Router{"a": good}).Reload(); err != nil {
		t.Fatal(err)
	}
}
