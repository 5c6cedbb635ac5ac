package connlimit

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vtk/dispenser/internal/metrics"
)

// serve runs an http.Server on a capped loopback listener. Its handler
// answers "ok", except GET /hold, which it holds until the client goes
// away (a request in progress) after telling held.
func serve(t *testing.T, o Options, tlsCfg *tls.Config) (*Listener, string) {
	t.Helper()
	l, addr, _ := serveHolding(t, o, tlsCfg)
	return l, addr
}

// serveHolding is serve, also returning where the handler tells of each
// request it holds.
func serveHolding(t *testing.T, o Options, tlsCfg *tls.Config) (*Listener, string, <-chan struct{}) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(raw, o)
	held := make(chan struct{}, 64)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), ConnState: l.ConnState, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if tlsCfg != nil {
			_ = srv.Serve(tls.NewListener(l, tlsCfg))
			return
		}
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return l, raw.Addr().String(), held
}

// hold opens a connection from src whose request the server holds in
// progress, once the handler has it.
func hold(t *testing.T, addr, src string, held <-chan struct{}) net.Conn {
	t.Helper()
	c := dial(t, addr, src)
	if _, err := fmt.Fprintf(c, "GET /hold HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never had the request (connection closed?)")
	}
	return c
}

// dial connects from src (127.0.0.0/8) without sending anything.
func dial(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// request sends one keep-alive request on c and reads the answer: after
// it the connection is idle on the server. It returns false when the
// server closed the connection instead.
func request(c net.Conn, addr string) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

// refused reports whether a connection from src is closed by the server
// at once: its reset may already fail the dial.
func refused(t *testing.T, addr, src string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return true
	}
	defer c.Close()
	return closedByServer(c)
}

// stillOpen reports whether c is still open a moment later (a closed
// connection reads EOF or a reset at once).
func stillOpen(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// closedByServer reports whether the server closed c (EOF or reset)
// within a second.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func waitOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d open, want %d", l.Open(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTotalCapRefusesAtOnce: at the cap with every connection busy (a
// request in progress), a new connection is closed at once and counted,
// not left waiting.
func TestTotalCapRefusesAtOnce(t *testing.T) {
	m := metrics.New("test")
	l, addr, inProgress := serveHolding(t, Options{Name: "api", Max: 4, Metrics: m}, nil)
	var held []net.Conn
	for range 4 {
		held = append(held, hold(t, addr, "127.0.9.1", inProgress))
	}
	waitOpen(t, l, 4)
	if !refused(t, addr, "127.0.9.2") {
		t.Fatal("a connection over the cap was not closed at once")
	}
	if got := testutil.ToFloat64(m.ConnectionsRefused.WithLabelValues("api", ReasonTotal)); got != 1 {
		t.Fatalf("refused{max_connections} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.ConnectionsLimit.WithLabelValues("api")); got != 4 {
		t.Fatalf("limit gauge = %v", got)
	}
	// A slot freed is a slot again.
	held[0].Close()
	waitOpen(t, l, 3)
	if c := dial(t, addr, "127.0.9.2"); !request(c, addr) {
		t.Fatal("a connection within the cap was not served")
	} else {
		held = append(held, c)
	}
	for _, c := range held {
		c.Close()
	}
	waitOpen(t, l, 0)
	if got := testutil.ToFloat64(m.ConnectionsOpen.WithLabelValues("api")); got != 0 {
		t.Fatalf("open gauge = %v after every connection closed", got)
	}
}

// TestSilentConnectionsGiveWayAtTheCap: connections that have not sent a
// request (StateNew: nothing sent, or a header still arriving) do not
// lock clients out until the read-header timeout: at the cap with none
// idle, the oldest of them is closed for a new connection. Connections
// with a request in progress are kept.
func TestSilentConnectionsGiveWayAtTheCap(t *testing.T) {
	m := metrics.New("test")
	l, addr, inProgress := serveHolding(t, Options{Name: "api", Max: 6, Metrics: m}, nil)
	busy := []net.Conn{hold(t, addr, "127.0.13.1", inProgress), hold(t, addr, "127.0.13.1", inProgress)}
	var silent []net.Conn
	for i := range 4 {
		c := dial(t, addr, "127.0.13.2")
		if i%2 == 1 {
			_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n") // a header never finished
		}
		silent = append(silent, c)
	}
	waitOpen(t, l, 6)
	for i := range 4 {
		// hold returns once the server has the new connection's request.
		busy = append(busy, hold(t, addr, "127.0.13.3", inProgress))
		if !closedByServer(silent[i]) {
			t.Fatalf("new connection %d: the silent connection %d (oldest) was not closed", i, i)
		}
	}
	for _, c := range busy {
		if !stillOpen(c) {
			t.Fatal("a connection with a request in progress was closed")
		}
	}
	if got := testutil.ToFloat64(m.ConnectionsRefused.WithLabelValues("api", ReasonTotal)); got != 0 {
		t.Fatalf("refused = %v, want 0 while silent connections could give way", got)
	}
}

// TestIdleConnectionsGiveWayOldestFirst: near the cap, each new
// connection closes the connection idle longest; active ones are kept.
func TestIdleConnectionsGiveWayOldestFirst(t *testing.T) {
	m := metrics.New("test")
	l, addr := serve(t, Options{Name: "api", Max: 10, Metrics: m}, nil)
	var idle []net.Conn
	for i := range 5 {
		c := dial(t, addr, "127.0.10.1")
		if !request(c, addr) {
			t.Fatalf("idle %d: no answer", i)
		}
		idle = append(idle, c)
		time.Sleep(5 * time.Millisecond) // a clear idle order
	}
	var busy []net.Conn
	for range 4 {
		busy = append(busy, dial(t, addr, "127.0.10.2")) // new: not idle
	}
	waitOpen(t, l, 9) // the high-water mark of a cap of 10
	for i := range 5 {
		fresh := dial(t, addr, "127.0.10.3")
		if !closedByServer(idle[i]) {
			t.Fatalf("new connection %d: the idle connection %d (oldest) was not closed", i, i)
		}
		if !request(fresh, addr) {
			t.Fatalf("new connection %d was not served", i)
		}
		idle = append(idle, fresh)
	}
	for _, c := range busy {
		if !stillOpen(c) {
			t.Fatal("a connection that was not idle was closed")
		}
	}
	if got := testutil.ToFloat64(m.ConnectionsClosed.WithLabelValues("api")); got != 5 {
		t.Fatalf("idle_closed = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.ConnectionsRefused.WithLabelValues("api", ReasonTotal)); got != 0 {
		t.Fatalf("refused = %v, want 0 while idle connections could give way", got)
	}
}

// TestPerClientCap: one address holds at most its share; another address
// and an exempt proxy are not limited by it.
func TestPerClientCap(t *testing.T) {
	m := metrics.New("test")
	proxy := netip.MustParseAddr("127.0.11.9")
	l, addr := serve(t, Options{Name: "api", Max: 100, MaxPerClient: 2, Metrics: m,
		Exempt: func(a netip.Addr) bool { return a == proxy }}, nil)
	a1, a2 := dial(t, addr, "127.0.11.1"), dial(t, addr, "127.0.11.1")
	waitOpen(t, l, 2)
	if !refused(t, addr, "127.0.11.1") {
		t.Fatal("a third connection from one address was accepted")
	}
	if other := dial(t, addr, "127.0.11.2"); !request(other, addr) {
		t.Fatal("another address was refused")
	}
	for range 5 {
		if c := dial(t, addr, proxy.String()); !request(c, addr) {
			t.Fatal("the exempt proxy was capped per client")
		}
	}
	if got := testutil.ToFloat64(m.ConnectionsRefused.WithLabelValues("api", ReasonPerClient)); got != 1 {
		t.Fatalf("refused{per_client} = %v, want 1", got)
	}
	// A slot freed is a slot again.
	a1.Close()
	waitOpen(t, l, 1+1+5)
	if c := dial(t, addr, "127.0.11.1"); !request(c, addr) {
		t.Fatal("the address was still refused after one of its connections closed")
	}
	_ = a2
}

// TestTLSConnectionsAreTracked: ConnState receives the *tls.Conn wrapping
// the listener's connection; idle TLS connections give way too.
func TestTLSConnectionsAreTracked(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // only for its certificate
	cert := srv.TLS.Certificates[0]
	srv.Close()
	l, addr := serve(t, Options{Name: "api", Max: 3}, &tls.Config{Certificates: []tls.Certificate{cert}})
	var conns []*tls.Conn
	for range 2 {
		c := tls.Client(dial(t, addr, "127.0.12.1"), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test server
		if !request(c, addr) {
			t.Fatal("TLS request failed")
		}
		conns = append(conns, c)
	}
	waitOpen(t, l, 2)                                                                       // at the high-water mark of a cap of 3
	fresh := tls.Client(dial(t, addr, "127.0.12.2"), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test server
	if !request(fresh, addr) {
		t.Fatal("new TLS connection not served")
	}
	if !closedByServer(conns[0]) {
		t.Fatal("the idle TLS connection was not closed to make room")
	}
}

func TestDefaults(t *testing.T) {
	for _, c := range []struct {
		nofile uint64
		admin  int
		want   int
		err    bool
	}{
		{512, 64, 192, false},
		{4000, 64, 4000 - 400 - 64, false},
		{1 << 20, 64, Ceiling, false},
		{300, 64, 0, true},
	} {
		got, err := DefaultMax(c.nofile, c.admin)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("DefaultMax(%d, %d) = %d, %v; want %d (error %v)", c.nofile, c.admin, got, err, c.want, c.err)
		}
	}
	if DefaultMaxPerClient(192) != 19 || DefaultMaxPerClient(100) != 16 || DefaultMaxPerClient(10) != 10 {
		t.Errorf("DefaultMaxPerClient: %d %d %d", DefaultMaxPerClient(192), DefaultMaxPerClient(100), DefaultMaxPerClient(10))
	}
	n, err := DescriptorLimit()
	if err != nil || n == 0 {
		t.Fatalf("DescriptorLimit = %d, %v", n, err)
	}
}

// TestSilentTLSConnectionsGiveWay: on a TLS listener, connections that
// never start their handshake give way at the cap too.
func TestSilentTLSConnectionsGiveWay(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // only for its certificate
	cert := srv.TLS.Certificates[0]
	srv.Close()
	l, addr := serve(t, Options{Name: "api", Max: 3}, &tls.Config{Certificates: []tls.Certificate{cert}})
	var silent []net.Conn
	for range 3 {
		silent = append(silent, dial(t, addr, "127.0.14.1"))
	}
	waitOpen(t, l, 3)
	c := tls.Client(dial(t, addr, "127.0.14.2"), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test server
	if !request(c, addr) {
		t.Fatal("a TLS client was not served while silent connections held the cap")
	}
	if !closedByServer(silent[0]) {
		t.Fatal("the oldest silent connection was not closed")
	}
}
