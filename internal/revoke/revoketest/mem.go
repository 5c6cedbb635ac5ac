package revoketest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vtk/dispenser/internal/revoke"
)

// Mem is an in-memory revoke.Store for tests. Fail, when set, makes every
// call return its error.
type Mem struct {
	mu   sync.Mutex
	list []revoke.Revocation
	Fail error
}

var _ revoke.Store = (*Mem)(nil)

// Add implements revoke.Store.
func (m *Mem) Add(_ context.Context, r revoke.Revocation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		return m.Fail
	}
	for _, x := range m.list {
		if x.ID == r.ID {
			return fmt.Errorf("duplicate id %s", r.ID)
		}
	}
	m.list = append(m.list, r)
	return nil
}

// List implements revoke.Store.
func (m *Mem) List(_ context.Context, activeAt time.Time) ([]revoke.Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		return nil, m.Fail
	}
	var out []revoke.Revocation
	for _, r := range m.list {
		if activeAt.IsZero() || r.Active(activeAt) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Delete implements revoke.Store.
func (m *Mem) Delete(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Fail != nil {
		return m.Fail
	}
	for i, x := range m.list {
		if x.ID == id {
			m.list = append(m.list[:i], m.list[i+1:]...)
			return nil
		}
	}
	return revoke.ErrNotFound
}
