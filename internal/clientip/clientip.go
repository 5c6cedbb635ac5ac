// Package clientip names the client of a request: its TCP peer, or, when
// the peer is a proxy the configuration trusts, the address that proxy
// forwards in X-Forwarded-For. Budgets keyed on the client (the failed
// authentication budget) and the audit trail's client address use it, so
// behind a trusted proxy they see callers rather than the proxy.
package clientip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Trusted is a set of proxy networks.
type Trusted []netip.Prefix

// Parse reads CIDRs ("10.0.0.0/8", "2001:db8::/32"); a prefix of length
// 0 trusts every address and is refused.
func Parse(cidrs []string) (Trusted, error) {
	var out Trusted
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%q must be a CIDR like 10.0.0.0/16: %w", c, err)
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("%s trusts every address", c)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Contains reports whether a is in one of the networks.
func (t Trusted) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Peer is the request's TCP peer address.
func Peer(r *http.Request) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// Of returns the client of r as a string: the forwarded address when the
// peer is trusted and forwards one, else the peer address (RemoteAddr's
// host, or RemoteAddr itself when it is not host:port).
func (t Trusted) Of(r *http.Request) string {
	if a, ok := t.Forwarded(r); ok {
		return a.String()
	}
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// Forwarded returns the address a trusted peer forwards: walking
// X-Forwarded-For from the right (the entry the peer itself appended),
// the first address that is not a trusted proxy. Entries to its left are
// the client's own claims and are never believed. False when the peer is
// not trusted or forwards nothing usable.
func (t Trusted) Forwarded(r *http.Request) (netip.Addr, bool) {
	if len(t) == 0 {
		return netip.Addr{}, false
	}
	peer, ok := Peer(r)
	if !ok || !t.Contains(peer) {
		return netip.Addr{}, false
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(strings.TrimSpace(hops[i]))
		if !ok {
			break // garbage from the client's part of the header
		}
		last = a
		if !t.Contains(a) {
			return a, true
		}
	}
	// Every hop is a trusted proxy (or the first untrusted one is not an
	// address): the innermost proxy named is the best attribution.
	return last, last.IsValid()
}

func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// Group is the unit a per-client budget or cap counts: an IPv4 address
// itself, an IPv6 address's /64 (one host usually holds a whole /64, and
// counting single addresses would give it 2^64 budgets).
func Group(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// BudgetKey is key with an IPv6 address replaced by its /64 (as
// "2001:db8::/64"); any other key (an IPv4 address, a gateway-asserted
// caller) is returned as it is.
func BudgetKey(key string) string {
	a, err := netip.ParseAddr(key)
	if err != nil {
		return key
	}
	if a = a.Unmap(); a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}
