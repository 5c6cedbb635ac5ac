package validate

import (
	"fmt"
	"net"
	"net/url"
)

// IsLoopbackHost reports whether host (no port) is "localhost" or a
// loopback address.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServiceURL checks a URL the dispenser calls out to (JWKS, STS endpoint,
// audit witness): absolute, no userinfo (it would end up in logs and error
// messages), https — or http only to a loopback host, for local test peers.
// It parses the URL rather than testing a prefix, which would let
// http://127.0.0.1.attacker.example through.
func ServiceURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("must be an absolute https:// URL")
	}
	if u.User != nil {
		return fmt.Errorf("must not carry credentials in the URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if IsLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("http is allowed for loopback hosts only; use https")
	}
	return fmt.Errorf("scheme must be https (or http to a loopback host)")
}
