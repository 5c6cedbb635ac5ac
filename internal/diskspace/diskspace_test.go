package diskspace

import (
	"errors"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/metrics"
)

// fakeVolume reports a settable free space (no disk is filled).
type fakeVolume struct {
	mu   sync.Mutex
	free uint64
	err  error
}

func (f *fakeVolume) read(string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.free, f.err
}

func (f *fakeVolume) set(free uint64, err error) {
	f.mu.Lock()
	f.free, f.err = free, err
	f.mu.Unlock()
}

func TestGuardFollowsTheFloor(t *testing.T) {
	vol := &fakeVolume{free: 10 << 30}
	m := metrics.New("test")
	g := New("/data", 1<<30, Options{Free: vol.read, Metrics: m})
	for _, step := range []struct {
		free uint64
		err  error
		low  bool
	}{
		{10 << 30, nil, false},
		{1<<30 - 1, nil, true},
		{0, errors.New("statfs: EIO"), true}, // unreadable: the last state holds
		{1 << 30, nil, false},                // at the floor is enough
	} {
		vol.set(step.free, step.err)
		g.Check()
		if g.Low() != step.low {
			t.Fatalf("free %d (err %v): Low() = %v, want %v", step.free, step.err, g.Low(), step.low)
		}
		want := 0.0
		if step.low {
			want = 1
		}
		if got := testutil.ToFloat64(m.AuditVolumeLow); got != want {
			t.Fatalf("free %d: dispenser_audit_volume_low = %v, want %v", step.free, got, want)
		}
	}
	if got := testutil.ToFloat64(m.AuditVolumeFree); got != 1<<30 {
		t.Fatalf("dispenser_audit_volume_free_bytes = %v", got)
	}
}

func TestStatfsReadsARealVolume(t *testing.T) {
	free, err := Statfs(t.TempDir())
	if err != nil || free == 0 {
		t.Fatalf("Statfs = %d, %v", free, err)
	}
	if _, err := Statfs("/no/such/dir"); err == nil {
		t.Fatal("Statfs of a missing path succeeded")
	}
}

func TestBytesYAML(t *testing.T) {
	for in, want := range map[string]Bytes{"268435456": 256 << 20, "256MiB": 256 << 20, "1GB": 1e9, "0": 0} {
		var b Bytes
		if err := yaml.Unmarshal([]byte(in), &b); err != nil || b != want {
			t.Errorf("%s: %d %v, want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"lots", "[1]", "-5MiB"} {
		var b Bytes
		if err := yaml.Unmarshal([]byte(bad), &b); err == nil {
			t.Errorf("%s accepted as %d", bad, b)
		}
	}
	if s := Bytes(256 << 20).String(); s != "256 MiB" {
		t.Errorf("String() = %q", s)
	}
}
