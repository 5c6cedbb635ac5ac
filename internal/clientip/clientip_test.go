package clientip

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestForwarded(t *testing.T) {
	tr, err := Parse([]string{"10.0.0.0/8", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct caller", "203.0.113.9:5000", nil, "203.0.113.9"},
		{"untrusted peer's header is ignored", "203.0.113.9:5000", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted proxy without header", "10.1.2.3:443", nil, "10.1.2.3"},
		{"trusted proxy forwards the caller", "10.1.2.3:443", []string{"198.51.100.1"}, "198.51.100.1"},
		{"the client's own claims are skipped", "10.1.2.3:443", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"a chain of trusted proxies", "10.1.2.3:443", []string{"1.2.3.4, 198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"several header lines", "10.1.2.3:443", []string{"1.2.3.4", "198.51.100.1"}, "198.51.100.1"},
		{"address with port", "10.1.2.3:443", []string{"198.51.100.1:7000"}, "198.51.100.1"},
		{"IPv6 proxy and caller", "[2001:db8::1]:443", []string{"2001:db8:ffff::2, [2a00::5]:80"}, "2a00::5"},
		{"garbage where the caller should be", "10.1.2.3:443", []string{"nonsense, 10.9.9.9"}, "10.9.9.9"},
		{"only garbage", "10.1.2.3:443", []string{"nonsense"}, "10.1.2.3"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:443", []string{"198.51.100.1"}, "198.51.100.1"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tr.Of(r); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// Nothing trusted: always the peer.
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.2.3:443"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	if got := Trusted(nil).Of(r); got != "10.1.2.3" {
		t.Errorf("no trusted proxies: %q", got)
	}
}

func TestParse(t *testing.T) {
	for _, bad := range [][]string{{"10.0.0.0"}, {"0.0.0.0/0"}, {"::/0"}, {"nope/8"}} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	tr, err := Parse([]string{"10.1.2.3/8"})
	if err != nil || !tr.Contains(netipMust("10.200.0.1")) || tr.Contains(netipMust("11.0.0.1")) {
		t.Fatalf("%v %v", tr, err)
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestBudgetKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                    "192.0.2.1",
		"::ffff:192.0.2.1":             "192.0.2.1",
		"2001:db8:1:2:aaaa::1":         "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::9":    "2001:db8:1:2::/64",
		"caller:arn:aws:iam::1:role/x": "caller:arn:aws:iam::1:role/x",
		"not an address":               "not an address",
	} {
		if got := BudgetKey(in); got != want {
			t.Errorf("BudgetKey(%q) = %q, want %q", in, got, want)
		}
	}
}
