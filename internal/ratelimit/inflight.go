package ratelimit

import "sync"

// InFlightLimit bounds the requests being authenticated at once. A
// request holds its place from arrival until its authentication ends
// (success or failure), so a valid caller holds one for microseconds (a
// JWT) to a round trip (STS for the IAM method), while a flood of slow or
// stalled requests (an HTTP/2 client opening hundreds of streams whose
// bodies never arrive) is refused at once instead of holding memory, and
// cannot run more outbound calls (STS, JWKS, the key store) than the cap.
type InFlightLimit struct {
	// PerClient is the most one client (an address, an IPv6 /64, or the
	// caller a trusted gateway asserts) may have in authentication; 0 turns
	// it off. Unset: DefaultAuthInFlightPerClient, except behind a TLS
	// proxy not trusted to forward addresses, where every caller shares
	// the proxy's address and the per-client cap is off.
	PerClient *int `yaml:"per_client"`
	// Total is the most in authentication at once across all clients
	// (default DefaultAuthInFlightTotal); 0 turns it off.
	Total *int `yaml:"total"`
}

// DefaultAuthInFlightPerClient and DefaultAuthInFlightTotal are the
// in-flight authentication caps when none is configured.
const (
	DefaultAuthInFlightPerClient = 64
	DefaultAuthInFlightTotal     = 1024
)

// InFlight counts the requests in authentication, per client and in all.
// Its memory is bounded by the requests in flight: a client's entry is
// dropped when its last request leaves.
type InFlight struct {
	perClient, total int // 0: no cap

	mu    sync.Mutex
	n     int
	byKey map[string]int
}

// NewInFlight returns the counter, or nil (no cap) when both caps are 0.
func NewInFlight(perClient, total int) *InFlight {
	if perClient <= 0 && total <= 0 {
		return nil
	}
	return &InFlight{perClient: perClient, total: total, byKey: map[string]int{}}
}

// Over names the cap a new request from key would exceed ("per_client" or
// "total"), or takes a place for it and returns "" with the function that
// gives the place back (call it exactly once). Safe on a nil counter.
func (f *InFlight) Over(key string) (release func(), over string) {
	if f == nil {
		return func() {}, ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The client's own cap first: a client over it is told so (429),
	// whatever the others are doing.
	if f.perClient > 0 && f.byKey[key] >= f.perClient {
		return nil, "per_client"
	}
	if f.total > 0 && f.n >= f.total {
		return nil, "total"
	}
	f.n++
	f.byKey[key]++
	var once sync.Once
	return func() { once.Do(func() { f.release(key) }) }, ""
}

func (f *InFlight) release(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.byKey[key]--; f.byKey[key] <= 0 {
		delete(f.byKey, key)
	}
}
