// Package diskspace watches the free space of the volume holding the
// SQLite audit trail. A full volume makes every audit write fail, and the
// dispenser then refuses every request (fail closed): below a floor set
// well above that point, refusals stop being recorded one by one (they are
// summarised), a gauge says so and an alert fires, long before issuance
// itself has to stop.
package diskspace

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/metrics"
)

// Bytes is a size in the configuration: a number of bytes or a string with
// a unit ("256MiB", "1GB").
type Bytes uint64

// UnmarshalYAML accepts an integer or a size with a unit.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a number of bytes or a string like \"256MiB\"", n.Line)
	}
	v, err := humanize.ParseBytes(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid size %q: use a number of bytes or a form like \"256MiB\"", n.Line, n.Value)
	}
	*b = Bytes(v)
	return nil
}

// MarshalYAML writes the size with a binary unit.
func (b Bytes) MarshalYAML() (any, error) { return b.String(), nil }

// String formats the size with a binary unit (256 MiB).
func (b Bytes) String() string { return humanize.IBytes(uint64(b)) }

// FreeFunc reports the bytes available on the volume holding path.
type FreeFunc func(path string) (uint64, error)

// Statfs is the FreeFunc of the real filesystem: the blocks statfs(2)
// reports available to unprivileged processes.
func Statfs(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Options are a Guard's dependencies.
type Options struct {
	// Free reads the free space (default Statfs).
	Free    FreeFunc
	Metrics *metrics.Metrics
	Logger  *zap.Logger
}

// Guard knows whether the volume is under its floor. It is safe for
// concurrent use; Low is read on every refusal.
type Guard struct {
	path  string
	floor uint64
	o     Options
	low   atomic.Bool

	mu      sync.Mutex // serialises Check (its logging state)
	failing bool
}

// New returns a guard of the volume holding path (a directory or a file
// on it) with the given floor. It reads nothing until Check or Run.
func New(path string, floor uint64, o Options) *Guard {
	if o.Free == nil {
		o.Free = Statfs
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Guard{path: path, floor: floor, o: o}
}

// Low reports whether the volume was under the floor at the last check.
func (g *Guard) Low() bool { return g.low.Load() }

// Check reads the free space once. A volume whose free space cannot be
// read keeps its last state: the audit writes themselves still fail
// closed if it is really full.
func (g *Guard) Check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	free, err := g.o.Free(g.path)
	if err != nil {
		if !g.failing {
			g.o.Logger.Warn("cannot read the audit volume's free space", zap.String("path", g.path), zap.Error(err))
		}
		g.failing = true
		return
	}
	g.failing = false
	low := free < g.floor
	g.o.Metrics.AuditVolume(free, low)
	switch was := g.low.Swap(low); {
	case low && !was:
		g.o.Logger.Error("audit volume under its free-space floor: refusals are now recorded as summaries only; free space before issuance fails closed",
			zap.String("path", g.path), zap.String("free", humanize.IBytes(free)), zap.String("floor", humanize.IBytes(g.floor)))
	case !low && was:
		g.o.Logger.Info("audit volume back above its free-space floor: refusals are recorded again",
			zap.String("path", g.path), zap.String("free", humanize.IBytes(free)))
	}
}

// Run checks now and then every interval until ctx ends.
func (g *Guard) Run(ctx context.Context, interval time.Duration) {
	g.Check()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.Check()
		}
	}
}
