package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"hookproxy/quickack"
)

// Serve accepts client connections on l and serves the proxy on them until
// Shutdown. It wraps l so that each TCP connection re-arms TCP_QUICKACK
// around every read, and so that hijacked (CONNECT) connections get an
// idle timeout and are closed by Shutdown. It returns nil after Shutdown,
// and otherwise the error that stopped it. Serve closes l.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.srv.Serve(&listener{Listener: l, p: p, done: make(chan struct{})})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve proxy: %w", err)
}

// Shutdown stops accepting connections, waits for requests in progress to
// finish (as http.Server.Shutdown does, on the proxy connections and
// inside intercepted tunnels), then closes every hijacked connection
// (CONNECT tunnels) and the idle upstream connections of the default
// transport. When ctx ends first it closes every connection at once and
// returns the context's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	// From here on an answer inside an intercepted tunnel ends its tunnel
	// (it says Connection: close), and idle tunnels close, while the
	// proxy connections drain.
	p.tunnels.SetKeepAlivesEnabled(false)
	err := p.srv.Shutdown(ctx)
	if err == nil {
		err = p.tunnels.Shutdown(ctx)
	}
	if err != nil {
		_ = p.srv.Close()
		_ = p.tunnels.Close()
	}
	p.conns.closeAll()
	if p.ownTransport != nil {
		p.ownTransport.CloseIdleConnections()
	}
	if err != nil {
		return fmt.Errorf("shut down proxy: %w", err)
	}
	return nil
}

// connState is the http.Server's ConnState hook. Deadlines are armed only
// once a connection is hijacked: before that, net/http manages them itself
// and its background read must not be disturbed. http.Server.Shutdown
// ignores hijacked connections, so they are remembered here.
func (p *Proxy) connState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	hc, ok := c.(hijackable)
	if !ok {
		return
	}
	if !p.conns.add(c) {
		// Hijacked while Shutdown was closing the others.
		_ = c.Close()
		return
	}
	hc.markHijacked()
}

// listener wraps accepted connections, and bounds how many are open at
// once (Options.MaxConns).
type listener struct {
	net.Listener
	p         *Proxy
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// Accept implements net.Listener.
func (l *listener) Accept() (net.Conn, error) {
	free, err := l.takeSlot()
	if err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		free()
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		w := &tcpConn{TCPConn: tc}
		w.idle, w.set, w.free = l.p.idle, &l.p.conns, free
		if quickack.Supported {
			if raw, err := tc.SyscallConn(); err == nil {
				w.raw = raw
				w.wrote.Store(true) // arm before the first read
			}
		}
		return w, nil
	}
	w := &otherConn{Conn: c}
	w.idle, w.set, w.free = l.p.idle, &l.p.conns, free
	return w, nil
}

// Close implements net.Listener; it also ends a wait for a connection
// to close.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// takeSlot waits until one more app connection may be open, and returns
// what gives its place back. A connection waiting meanwhile stays in the
// listen queue, where it holds no file descriptor of the process.
func (l *listener) takeSlot() (free func(), err error) {
	slots := l.p.slots
	if slots == nil {
		return func() {}, nil
	}
	select {
	case slots <- struct{}{}:
	default:
		l.p.full()
		select {
		case slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	return sync.OnceFunc(func() { <-slots }), nil
}

// full reports that the app connections are at Options.MaxConns: in the
// log at most once a minute.
func (p *Proxy) full() {
	if p.onFull != nil {
		p.onFull()
	}
	if onceAMinute(&p.lastFull) {
		p.log.Warn("app connections at their limit: new ones wait until one closes", "limit", cap(p.slots))
	}
}

// onceAMinute reports whether a minute has passed since it last
// reported true for last (Unix nanoseconds), and if so records now: one
// caller at a time gets true.
func onceAMinute(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(time.Minute) && last.CompareAndSwap(prev, now)
}

// hijackable is an accepted connection whose idle deadlines the proxy
// manages once net/http no longer does.
type hijackable interface {
	// markHijacked arms the idle timeout in both directions: the
	// connection is a relayed tunnel or an upgraded (websocket) one.
	markHijacked()
	// markIntercepted hands the connection to the server of intercepted
	// tunnels, which manages read deadlines itself (header timeout, idle
	// wait between requests, its background read); only writes keep the
	// idle timeout, so an app that stops reading does not hold it.
	markIntercepted()
}

// idleState is the part of a connection wrapper that handles the idle
// timeout of a hijacked or intercepted connection.
type idleState struct {
	hijacked    atomic.Bool
	intercepted atomic.Bool
	idle        time.Duration
	set         *connSet
	// free gives back the connection's place under Options.MaxConns
	// (nil: none taken); it may be called more than once.
	free func()
}

// closed forgets the connection, which is closing, and gives back its
// place.
func (s *idleState) closed(c net.Conn) {
	s.set.remove(c)
	if s.free != nil {
		s.free()
	}
}

// touchRead pushes the deadlines of a hijacked connection idle into the
// future, for reads and writes: a tunnel that only downloads stays open.
func (s *idleState) touchRead(c net.Conn) {
	if s.hijacked.Load() {
		_ = c.SetDeadline(time.Now().Add(s.idle))
	}
}

// touchWrite is touchRead for a write, which also bounds the write of an
// intercepted connection: a write to an app that stopped reading ends
// at the idle timeout.
func (s *idleState) touchWrite(c net.Conn) {
	switch {
	case s.hijacked.Load():
		_ = c.SetDeadline(time.Now().Add(s.idle))
	case s.intercepted.Load():
		_ = c.SetWriteDeadline(time.Now().Add(s.idle))
	}
}

// tunnel reports whether the connection carries a tunnel.
func (s *idleState) tunnel() bool { return s.hijacked.Load() || s.intercepted.Load() }

func (s *idleState) markHijacked(c net.Conn) {
	s.hijacked.Store(true)
	s.touchRead(c)
}

func (s *idleState) markIntercepted(c net.Conn) {
	s.hijacked.Store(false)
	s.intercepted.Store(true)
	_ = c.SetDeadline(time.Time{})
}

// tcpConn is an accepted TCP connection, or the receiver side of a
// relayed tunnel (dialTunnel). It embeds *net.TCPConn so that goproxy
// sees CloseWrite/CloseRead and half-closes tunnels.
type tcpConn struct {
	*net.TCPConn
	idleState
	raw syscall.RawConn // nil: no TCP_QUICKACK
	// wrote is set after every write, and writing counts writes in
	// progress: sending is what puts Linux back in delayed-ACK
	// ("pingpong") mode, so TCP_QUICKACK needs re-arming only during or
	// after a write.
	wrote   atomic.Bool
	writing atomic.Int32
	// recheck is set when a read in a tunnel armed TCP_QUICKACK after a
	// write: the kernel may still send that write's last segment after
	// the arm, which puts the socket back in delayed-ACK mode (seen with
	// an intercepted response, which is several writes, under CPU load),
	// so the first read that returns data arms again (and so sends an
	// ACK held back). A plain proxy response is one write, and its
	// connection does without the extra system call.
	recheck atomic.Bool
}

func (c *tcpConn) markHijacked()    { c.idleState.markHijacked(c.TCPConn) }
func (c *tcpConn) markIntercepted() { c.idleState.markIntercepted(c.TCPConn) }

// Read re-arms TCP_QUICKACK, before and after reading, when something was
// written since it was last armed. Without it, python requests (Nagle on,
// headers and body written separately) waits ~40 ms for our delayed ACK on
// every POST over a reused proxy connection, and inside CONNECT tunnels.
// The check after the read covers a read that was already waiting when
// the response went out (net/http's background read): the request that
// arrives then is ACKed as soon as it is read; in a tunnel, the first
// read that returns data after an arm arms again (see recheck). Re-arming
// only after a write keeps it to about one system call per request (two
// in a tunnel) instead of two per read.
func (c *tcpConn) Read(b []byte) (int, error) {
	c.touchRead(c.TCPConn)
	if c.quickack() && c.tunnel() {
		c.recheck.Store(true)
	}
	n, err := c.TCPConn.Read(b)
	if !c.quickack() && n > 0 && c.recheck.Swap(false) {
		c.arm()
	}
	return n, err
}

// Write implements net.Conn.
func (c *tcpConn) Write(b []byte) (int, error) {
	c.touchWrite(c.TCPConn)
	if c.raw == nil {
		return c.TCPConn.Write(b)
	}
	c.writing.Add(1)
	n, err := c.TCPConn.Write(b)
	c.wrote.Store(true)
	c.writing.Add(-1)
	return n, err
}

// WriteTo and ReadFrom hide the embedded *net.TCPConn's splice paths:
// io.Copy in a CONNECT tunnel would otherwise move the bytes in the kernel
// without calling Read or Write, skipping TCP_QUICKACK and the idle
// deadline (which would then never move, cutting busy tunnels).
func (c *tcpConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, readerOnly{c})
}

// ReadFrom implements io.ReaderFrom; see WriteTo.
func (c *tcpConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{c}, r)
}

// Close implements net.Conn.
func (c *tcpConn) Close() error {
	c.closed(c)
	return c.TCPConn.Close()
}

// quickack arms TCP_QUICKACK if the connection wrote since the last arm
// (or was never armed), or is writing now: a read may return between a
// send and the flag that records it. It reports whether it armed.
func (c *tcpConn) quickack() bool {
	if c.raw != nil && (c.wrote.Swap(false) || c.writing.Load() > 0) {
		c.arm()
		return true
	}
	return false
}

// arm turns TCP_QUICKACK on.
func (c *tcpConn) arm() {
	quickackArms.Add(1)
	_ = c.raw.Control(quickack.Set)
}

// dialTunnel dials the receiver of a relayed CONNECT tunnel and wraps it
// as an accepted connection in a tunnel is wrapped (a tcpConn, hijacked,
// without TCP_QUICKACK): it has the idle timeout in both directions (once
// the app half-closes, only this side is read, and a receiver that stays
// silent would hold the tunnel for ever), and Shutdown closes it with the
// app's side.
func (p *Proxy) dialTunnel(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	w := &tcpConn{TCPConn: tc}
	w.idle, w.set = p.idle, &p.conns
	if !p.conns.add(w) {
		_ = tc.Close()
		return nil, net.ErrClosed // shutting down
	}
	w.markHijacked()
	return w, nil
}

// quickackArms counts the times TCP_QUICKACK was armed, for tests.
var quickackArms atomic.Int64

// otherConn is an accepted connection of another kind (a Unix socket, a
// test pipe): idle timeout and tracking, no TCP_QUICKACK.
type otherConn struct {
	net.Conn
	idleState
}

func (c *otherConn) markHijacked()    { c.idleState.markHijacked(c.Conn) }
func (c *otherConn) markIntercepted() { c.idleState.markIntercepted(c.Conn) }

// Read implements net.Conn.
func (c *otherConn) Read(b []byte) (int, error) {
	c.touchRead(c.Conn)
	return c.Conn.Read(b)
}

// Write implements net.Conn.
func (c *otherConn) Write(b []byte) (int, error) {
	c.touchWrite(c.Conn)
	return c.Conn.Write(b)
}

// Close implements net.Conn.
func (c *otherConn) Close() error {
	c.closed(c)
	return c.Conn.Close()
}

type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }

// connSet holds the hijacked connections still open.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// add remembers c; it returns false when the set is already closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

// remove forgets c.
func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll closes every connection in the set and every one added later.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}
