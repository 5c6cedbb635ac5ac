package connlimit

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Ceiling bounds the derived cap whatever the descriptor limit: containers
// often allow a million descriptors, and a million idle connections (tens
// of kilobytes each, more with TLS) would exhaust memory first.
const Ceiling = 4096

// DescriptorLimit is the process's RLIMIT_NOFILE soft limit. The Go
// runtime raises the soft limit to the hard limit at start, so this is
// the hard limit the process was started with.
func DescriptorLimit() (uint64, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	return r.Cur, nil
}

// Reserve is what the derived cap leaves to everything else: the stores'
// pools, the anchors, the key store, Redis, STS and JWKS clients, the
// configuration watch. A tenth of the limit, at least 256.
func Reserve(nofile uint64) uint64 { return max(256, nofile/10) }

// DefaultMax is the API listener's cap for a process allowed nofile
// descriptors: nofile minus Reserve and the admin listener's cap, at most
// Ceiling. It fails when that leaves fewer than 16.
func DefaultMax(nofile uint64, adminMax int) (int, error) {
	left := int64(nofile) - int64(Reserve(nofile)) - int64(adminMax)
	if left < 16 {
		return 0, fmt.Errorf("the descriptor limit (%d) leaves %d connections after a reserve of %d and the admin listener's %d: raise RLIMIT_NOFILE or set server.max_connections",
			nofile, max(left, 0), Reserve(nofile), adminMax)
	}
	return int(min(left, Ceiling)), nil
}

// DefaultMaxPerClient is the per-client cap of a listener capped at total:
// a tenth of it (at least 16, at most total), so at least ten addresses
// are needed to fill the listener, and even then idle connections give
// way first.
func DefaultMaxPerClient(total int) int { return min(max(total/10, 16), total) }
