// Package connlimit caps the connections a listener holds, so that no
// number of idle or slow clients can take every file descriptor of the
// process (and with them the stores, the anchors and the probes).
//
// A Listener wraps a net.Listener and is told each connection's HTTP state
// through ConnState (http.Server.ConnState). Near the cap, every accepted
// connection closes the connection that has been idle longest (an idle
// keep-alive connection costs its client nothing to reopen); at the cap
// with none idle, the oldest connection that has not sent a request yet
// (nothing, or a header still arriving) is closed instead, so connections
// that never send a byte cannot hold the cap until the read-header
// timeout; with none of those either, a new connection is closed at once
// and counted. A
// per-client cap keeps one address (one IPv6 /64) from holding more than
// its share.
package connlimit

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vtk/dispenser/internal/clientip"
	"github.com/vtk/dispenser/internal/metrics"
)

// Reasons a connection is refused (the reason label of
// dispenser_connections_refused_total).
const (
	ReasonTotal     = "max_connections"
	ReasonPerClient = "max_connections_per_client"
)

// Options configure a Listener.
type Options struct {
	// Name labels the listener's metrics (api, admin).
	Name string
	// Max is the most connections the listener holds open (at least 1).
	Max int
	// MaxPerClient is the most one client address holds (an IPv6 /64
	// counts as one address); 0 means no per-client cap.
	MaxPerClient int
	// Exempt, when set, names peers the per-client cap does not apply to
	// (trusted proxies, which carry many clients' requests).
	Exempt  func(netip.Addr) bool
	Metrics *metrics.Metrics
	Logger  *zap.Logger
	// Now is the clock of the rate-limited refusal log (tests).
	Now func() time.Time
}

// Listener is a net.Listener that caps its connections. Pass its
// ConnState to the http.Server serving it.
type Listener struct {
	net.Listener
	o Options
	// highWater is where closing idle connections starts: a tenth of the
	// cap below it, so bursts of new connections find room.
	highWater int

	mu        sync.Mutex
	open      int
	perClient map[netip.Addr]int
	idle      list.List // of *conn, idle longest at the front
	fresh     list.List // of *conn without a request yet, oldest at the front
	lastWarn  time.Time
	refused   int // since lastWarn
}

// Wrap caps ln's connections.
func Wrap(ln net.Listener, o Options) *Listener {
	if o.Max < 1 {
		o.Max = 1
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Listener{Listener: ln, o: o, highWater: o.Max - max(1, o.Max/10), perClient: map[netip.Addr]int{}}
	o.Metrics.ConnLimit(o.Name, o.Max)
	return l
}

// conn is an accepted connection; Close releases its slot once.
type conn struct {
	net.Conn
	l      *Listener
	client netip.Addr // zero when the per-client cap does not count it
	once   sync.Once
	// Guarded by l.mu: its element in l.idle or l.fresh, and whether its
	// slot was released.
	idle, fresh *list.Element
	released    bool
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// Accept returns the next connection the caps allow; connections over a
// cap are closed at once (with a reset, so they leave no TIME_WAIT behind)
// and counted, and Accept waits for the next one.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, victim, reason := l.admit(nc)
		if reason != "" {
			l.o.Metrics.ConnRefused(l.o.Name, reason)
			l.warnRefused(reason)
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = nc.Close()
			continue
		}
		l.o.Metrics.ConnOpen(l.o.Name, 1)
		if victim != nil {
			l.o.Metrics.ConnIdleClosed(l.o.Name)
			_ = victim.Close()
		}
		return c, nil
	}
}

// admit decides on a new connection: the connection to return and the
// idle or silent one to close for it, or the reason to refuse it.
func (l *Listener) admit(nc net.Conn) (c *conn, victim *conn, reason string) {
	client := l.clientOf(nc)
	l.mu.Lock()
	defer l.mu.Unlock()
	if client.IsValid() && l.perClient[client] >= l.o.MaxPerClient {
		return nil, nil, ReasonPerClient
	}
	if l.open >= l.highWater {
		if front := l.idle.Front(); front != nil {
			victim = l.idle.Remove(front).(*conn)
			victim.idle = nil
		}
	}
	if victim == nil && l.open >= l.o.Max {
		// A connection that has sent no request yet costs its peer
		// nothing to hold: the oldest gives way, as an idle one would.
		front := l.fresh.Front()
		if front == nil {
			return nil, nil, ReasonTotal
		}
		victim = l.fresh.Remove(front).(*conn)
		victim.fresh = nil
	}
	// The victim's slot is free once it closes, an instant later.
	l.open++
	if client.IsValid() {
		l.perClient[client]++
	}
	return &conn{Conn: nc, l: l, client: client}, victim, ""
}

// clientOf is the address the per-client cap counts nc under, or the zero
// address when it does not count nc.
func (l *Listener) clientOf(nc net.Conn) netip.Addr {
	if l.o.MaxPerClient <= 0 {
		return netip.Addr{}
	}
	ta, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	a := ta.AddrPort().Addr().Unmap()
	if l.o.Exempt != nil && l.o.Exempt(a) {
		return netip.Addr{}
	}
	return clientip.Group(a)
}

func (l *Listener) release(c *conn) {
	l.mu.Lock()
	l.open--
	c.released = true
	l.untrack(c)
	if c.client.IsValid() {
		if n := l.perClient[c.client] - 1; n > 0 {
			l.perClient[c.client] = n
		} else {
			delete(l.perClient, c.client)
		}
	}
	l.mu.Unlock()
	l.o.Metrics.ConnOpen(l.o.Name, -1)
}

// ConnState tracks which connections are idle and which have not sent a
// request yet; set it as the http.Server's ConnState (without it, no
// connection gives way). It accepts the *tls.Conn the server wraps
// around a connection of this listener.
func (l *Listener) ConnState(nc net.Conn, state http.ConnState) {
	c := l.unwrap(nc)
	if c == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	l.untrack(c)
	switch state {
	case http.StateNew:
		c.fresh = l.fresh.PushBack(c)
	case http.StateIdle:
		c.idle = l.idle.PushBack(c)
	}
}

// untrack takes c off the idle and fresh lists; l.mu is held.
func (l *Listener) untrack(c *conn) {
	if c.idle != nil {
		l.idle.Remove(c.idle)
		c.idle = nil
	}
	if c.fresh != nil {
		l.fresh.Remove(c.fresh)
		c.fresh = nil
	}
}

func (l *Listener) unwrap(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if c, ok := nc.(*conn); ok && c.l == l {
		return c
	}
	return nil
}

// Open returns the connections held open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// warnRefused logs refusals at most once every ten seconds (a flood
// would otherwise flood the log too); the metric counts each one.
func (l *Listener) warnRefused(reason string) {
	now := l.o.Now()
	l.mu.Lock()
	l.refused++
	if now.Sub(l.lastWarn) < 10*time.Second {
		l.mu.Unlock()
		return
	}
	n := l.refused
	l.refused, l.lastWarn = 0, now
	open := l.open
	l.mu.Unlock()
	l.o.Logger.Warn("connections refused at the listener's cap (counted in dispenser_connections_refused_total)",
		zap.String("listener", l.o.Name), zap.String("reason", reason), zap.Int("refused", n), zap.Int("open", open),
		zap.Int("max_connections", l.o.Max), zap.Int("max_connections_per_client", l.o.MaxPerClient))
}
