package auth

import (
	"net/http"
	"sync"
	"time"
)

// jwksSource caches the keys of a JSON Web Key Set. It is refetched every
// refresh interval and on an unknown kid, at most once per minGap.
type jwksSource struct {
	url     string
	refresh time.Duration
	client  *http.Client

	mu      sync.Mutex
	cached  []verificationKey
	fetched time.Time
}

func newJWKSSource(url string, refresh time.Duration, client *http.Client) *jwksSource {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return &jwksSource{url: url, refresh: refresh, client: client}
}

// keys returns the cached keys; TODO(jwks): fetch and parse.
func (s *jwksSource) keys(kid string) []verificationKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cached
}
