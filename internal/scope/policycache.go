package scope

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
)

// policyCacheEntries bounds the compiled session policies kept per Rules.
const policyCacheEntries = 4096

// policyCacheMaxKey is the longest input cached: a file list long enough
// to pass it names one task's objects and is seldom asked for twice.
const policyCacheMaxKey = 1024

// compiledPolicy is a session policy built once for one distinct grant
// input (operation, bucket, prefix, exact keys, tenant switches).
type compiledPolicy struct {
	policy    string
	sha256    string // hex SHA-256 of policy
	compacted bool
}

// policyCache remembers compiled policies. Building one (statements, JSON
// encoding, the STS size check) is the largest cost of Decide, and a fleet
// asks for the same few locations over and over. It lives in the Rules it
// serves, so a reload starts with an empty one; it holds at most
// policyCacheEntries, dropping an arbitrary entry when full.
type policyCache struct {
	mu sync.RWMutex
	m  map[string]compiledPolicy
}

// policyKey is the cache key of a policy input; "" when it is not cached.
func policyKey(op Operation, loc Location, keys []string, opt PolicyOptions) string {
	n := len(op) + len(loc.Bucket) + len(loc.Prefix) + 4
	for _, k := range keys {
		n += len(k) + 1
	}
	if n > policyCacheMaxKey {
		return ""
	}
	var b strings.Builder
	b.Grow(n)
	// NUL cannot occur in an operation, bucket or validated key, so the
	// fields cannot run into each other.
	b.WriteString(string(op))
	b.WriteByte(0)
	b.WriteString(loc.Bucket)
	b.WriteByte(0)
	b.WriteString(loc.Prefix)
	b.WriteByte(0)
	if opt.CheckAllowsGet {
		b.WriteByte('g')
	}
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
	}
	return b.String()
}

// policy returns the compiled policy for the input, building it on a miss.
// Errors are not cached (they are requests refused as too large, which
// cost only their own building).
func (c *policyCache) policy(op Operation, loc Location, keys []string, opt PolicyOptions) (compiledPolicy, error) {
	key := policyKey(op, loc, keys, opt)
	if key != "" {
		c.mu.RLock()
		p, ok := c.m[key]
		c.mu.RUnlock()
		if ok {
			return p, nil
		}
	}
	s, compacted, err := buildPolicy(op, loc, keys, opt)
	if err != nil {
		return compiledPolicy{}, err
	}
	sum := sha256.Sum256([]byte(s))
	p := compiledPolicy{policy: s, sha256: hex.EncodeToString(sum[:]), compacted: compacted}
	if key == "" {
		return p, nil
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]compiledPolicy)
	}
	if len(c.m) >= policyCacheEntries {
		for k := range c.m { // map order is random: an arbitrary victim
			delete(c.m, k)
			break
		}
	}
	c.m[key] = p
	c.mu.Unlock()
	return p, nil
}

// len is the number of cached policies (tests).
func (c *policyCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
