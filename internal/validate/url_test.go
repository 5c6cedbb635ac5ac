package validate

import "testing"

func TestServiceURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://issuer.example/.well-known/jwks.json", true},
		{"http://127.0.0.1:8443/jwks", true},
		{"http://[::1]:9000/", true},
		{"http://localhost/x", true},
		{"http://127.0.0.1.attacker.example/jwks", false},
		{"http://localhost.attacker.example/jwks", false},
		{"http://issuer.example/jwks", false},
		{"https://user:pass@witness.example/", false},
		{"ftp://example.com/", false},
		{"/relative", false},
		{"", false},
	} {
		if err := ServiceURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("ServiceURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}
