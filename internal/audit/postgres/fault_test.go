package postgres

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/audit"
	"github.com/vtk/dispenser/internal/auth"
	"github.com/vtk/dispenser/internal/scope"
	"github.com/vtk/dispenser/internal/vend"
	"github.com/vtk/dispenser/internal/vend/mock"
)

// proxy forwards a local port to PostgreSQL; down closes the listener and
// every connection (clients then get "connection refused"), up listens on
// the same port again.
type proxy struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func (p *proxy) up(t *testing.T) {
	t.Helper()
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

type fakeAuth struct {
	authenticate func(r *http.Request) (auth.Identity, error)
}

var _ auth.Authenticator = (*fakeAuth)(nil)

func (f *fakeAuth) Authenticate(r *http.Request) (auth.Identity, error) { return f.authenticate(r) }

// TestFailClosedConnectionRefused: with PostgreSQL unreachable, requests
// get 503 AuditUnavailable and no credentials; issuing resumes when it is
// back.
func TestFailClosedConnectionRefused(t *testing.T) {
	dsn := schemaDSN(t)
	u, _ := url.Parse(dsn)
	p := &proxy{target: u.Host}
	p.up(t)
	defer p.down()
	u.Host = p.addr
	s := openTemp(t, u.String(), "replica-a")

	tn := scope.Tenant{Org: "acme", RoleARN: "arn:aws:iam::111122223333:role/r", Grants: []scope.GrantRule{{Bucket: "media", Prefixes: []string{"acme/"}, Operations: []string{"get"}}}}
	tn.ApplyDefaults()
	rules, err := scope.Compile([]scope.Tenant{tn}, map[string]bool{"default": true})
	if err != nil {
		t.Fatal(err)
	}
	w := audit.NewWriter(s, audit.WriterOptions{})
	defer w.Close()
	srv := api.New(api.Options{
		Authenticator: &fakeAuth{authenticate: func(*http.Request) (auth.Identity, error) {
			return auth.Identity{Principal: "worker-1", Org: "acme", Method: auth.MethodJWT}, nil
		}},
		Rules: rules, Vendor: vend.Router{"default": &mock.Vendor{}}, Recorder: w,
	})
	srv.SetReady(true)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	get := func() (int, string) {
		resp, err := http.Get(hs.URL + "/credentials?operation=get&location=s3://media/acme/x/&task_id=pg")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		b, _ := json.Marshal(m)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 {
		t.Fatalf("healthy: %d %s", code, body)
	}
	p.down()
	for i := 0; i < 3; i++ {
		code, body := get()
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "AuditUnavailable") || strings.Contains(body, "ASIA") || strings.Contains(body, "Secret") {
			t.Fatalf("PostgreSQL down: %d %s; want 503 AuditUnavailable without credentials", code, body)
		}
	}
	p.up(t)
	ok := false
	for i := 0; i < 5 && !ok; i++ { // the pool may first hand out a connection that died with the proxy
		code, _ := get()
		ok = code == 200
	}
	if !ok {
		t.Fatal("issuing did not recover when PostgreSQL came back")
	}
	pg, err := s.Query(context.Background(), audit.Filter{TaskID: "pg", Outcome: audit.Issued})
	if err != nil {
		t.Fatal(err)
	}
	if len(pg.Records) != 2 {
		t.Fatalf("%d issued records, want 2 (one before, one after the outage)", len(pg.Records))
	}
}
