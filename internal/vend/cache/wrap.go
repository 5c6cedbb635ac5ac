package cache

import (
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/vend"
)

// WrapAll replaces every backend that implements vend.CacheConfigurable and has its
// cache enabled with a Cache around it, and returns the caches' Close
// functions. serverFloor is the server's min_remaining (see New). Backends
// without cache options (mock, static) are left as they are.
func WrapAll(backends map[string]vend.Vendor, serverFloor time.Duration, d Deps) []func() error {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	sort.Strings(names)
	var closers []func() error
	for _, name := range names {
		cc, ok := backends[name].(vend.CacheConfigurable)
		if !ok || !cc.CacheOptions().On() {
			continue
		}
		bd := d
		if bd.Logger == nil {
			bd.Logger = zap.NewNop()
		}
		bd.Logger = bd.Logger.With(zap.String("backend", name))
		c := New(backends[name], cc.CacheOptions(), serverFloor, bd)
		backends[name] = c
		closers = append(closers, c.Close)
		bd.Logger.Info("credential cache enabled", zap.Int("max_entries", c.opt.MaxEntries), zap.Duration("floor", c.floor))
	}
	return closers
}
