package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vtk/dispenser/internal/duration"
	"github.com/vtk/dispenser/internal/fault"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/testenv"
)

// startCluster runs a three-master Redis Cluster of local redis-server
// processes (stopped at cleanup) and returns one node's address.
func startCluster(t *testing.T) string {
	t.Helper()
	bin := testenv.Binary(t, "redis-server")
	dir := t.TempDir()
	ctx := context.Background()
	var nodes []*redis.Client
	for i := 0; i < 3; i++ {
		port := freeClusterPort(t)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)), "--cluster-node-timeout", "5000",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
		t.Cleanup(func() { _ = c.Close() })
		waitFor(t, "redis-server on port "+strconv.Itoa(port), func() bool { return c.Ping(ctx).Err() == nil })
		nodes = append(nodes, c)
	}
	// Slots split in three, then the nodes meet.
	bounds := []int{0, 5461, 10923, 16384}
	for i, c := range nodes {
		if err := c.ClusterAddSlotsRange(ctx, bounds[i], bounds[i+1]-1).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
		}
	}
	for _, c := range nodes[1:] {
		host, port, _ := net.SplitHostPort(c.Options().Addr)
		if err := nodes[0].ClusterMeet(ctx, host, port).Err(); err != nil {
			t.Fatalf("CLUSTER MEET: %v", err)
		}
	}
	waitFor(t, "cluster_state:ok on every node", func() bool {
		for _, c := range nodes {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false
			}
		}
		return true
	})
	return nodes[0].Options().Addr
}

// freeClusterPort finds a port that is free together with its cluster bus
// port (port + 10000).
func freeClusterPort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		port := 20000 + rand.IntN(30000)
		a, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		return port
	}
	t.Fatal("no free port pair for a Redis Cluster node")
	return 0
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func clusterLimiter(t *testing.T, addr string, cfg Config, m *metrics.Metrics) *Limiter {
	t.Helper()
	cfg.Redis = &RedisConfig{Addr: addr, Cluster: true, Timeout: duration.Duration(2 * time.Second)}
	cfg.ApplyDefaults()
	l, err := New(cfg, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// TestRedisClusterSharesBuckets runs two replicas against a real
// three-node Redis Cluster: the principal and org buckets are shared and
// taken together (one script over two keys, which a cluster refuses
// unless they share a slot), and orgs spread over the nodes.
func TestRedisClusterSharesBuckets(t *testing.T) {
	addr := startCluster(t)
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	t.Cleanup(func() { _ = cc.Close() })

	// The control: two keys without a common hash tag are refused, so the
	// test really runs against a cluster.
	err := takeScript.Run(ctx, cc, []string{"dispenser:ratelimit:a", "dispenser:ratelimit:b"}, 1, 1, 1, 1).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("a two-key script without a hash tag = %v, want CROSSSLOT", err)
	}

	cfg := Config{PerPrincipal: Limit{Rate: 0.001, Burst: 3}, PerOrg: Limit{Rate: 0.001, Burst: 5}}
	m := metrics.New("test")
	a := clusterLimiter(t, addr, cfg, m)
	b := clusterLimiter(t, addr, cfg, nil)
	okA, _ := allowN(a, 2, "w1", "acme")
	okB, err := allowN(b, 2, "w1", "acme")
	if okA != 2 || okB != 1 || fault.From(err).Reason != "rate_limited_principal" {
		t.Fatalf("replica a allowed %d, b %d (%v): want 2 and 1 from one shared bucket of 3", okA, okB, err)
	}
	if ok, err := allowN(b, 3, "w2", "acme"); ok != 2 || fault.From(err).Reason != "rate_limited_org" {
		t.Fatalf("w2 allowed %d (%v), want 2 then rate_limited_org", ok, err)
	}
	// Many orgs: every call is decided by the cluster, none by the local
	// fallback, and the buckets land on more than one node.
	for i := 0; i < 40; i++ {
		if err := a.Allow(ctx, "w1", fmt.Sprintf("org-%d", i)); err != nil {
			t.Fatalf("org-%d: %v", i, err)
		}
	}
	if a.downUntil.Load() != 0 || gaugeValue(t, m.RateLimitBackend.WithLabelValues("redis")) != 1 {
		t.Fatal("the limiter fell back to local buckets on a healthy cluster")
	}
	var used atomic.Int32 // ForEachMaster calls fn concurrently
	err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		n, err := c.DBSize(ctx).Result()
		if n > 0 {
			used.Add(1)
		}
		return err
	})
	if err != nil || used.Load() < 2 {
		t.Fatalf("buckets on %d of 3 masters (%v), want them spread over the cluster", used.Load(), err)
	}
}
