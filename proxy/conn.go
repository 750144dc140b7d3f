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
)

// Serve accepts client connections on l and serves the proxy on them until
// Shutdown. It wraps l so that each TCP connection re-arms TCP_QUICKACK
// around every read, and so that hijacked (CONNECT) connections get an
// idle timeout and are closed by Shutdown. It returns nil after Shutdown,
// and otherwise the error that stopped it. Serve closes l.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.srv.Serve(&listener{Listener: l, p: p})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve proxy: %w", err)
}

// Shutdown stops accepting connections, waits for requests in progress to
// finish (as http.Server.Shutdown does, and inside intercepted tunnels
// too), then closes every hijacked connection (CONNECT tunnels) and the
// idle upstream connections of the default transport. When ctx ends first it closes every connection at
// once and returns the context's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	// From here on a response inside an intercepted tunnel ends its
	// tunnel.
	p.active.drain()
	err := p.srv.Shutdown(ctx)
	if err != nil {
		_ = p.srv.Close()
	} else {
		// http.Server does not see requests inside intercepted tunnels:
		// they finish (their answers written) before the tunnels close.
		err = p.active.wait(ctx)
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

// listener wraps accepted connections.
type listener struct {
	net.Listener
	p *Proxy
}

// Accept implements net.Listener.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		w := &tcpConn{TCPConn: tc}
		w.idle, w.set = l.p.idle, &l.p.conns
		if quickackSupported {
			if raw, err := tc.SyscallConn(); err == nil {
				w.raw = raw
				w.wrote.Store(true) // arm before the first read
			}
		}
		return w, nil
	}
	w := &otherConn{Conn: c}
	w.idle, w.set = l.p.idle, &l.p.conns
	return w, nil
}

// hijackable is a connection that can switch to hijacked mode.
type hijackable interface {
	markHijacked()
}

// idleState is the part of a connection wrapper that handles the idle
// timeout of a hijacked connection, and watches it for the app's close.
type idleState struct {
	hijacked atomic.Bool
	idle     time.Duration
	set      *connSet
	watch    closeWatch
	heads    headBudget
}

// maxTunnelHead bounds what an app may send inside an intercepted tunnel
// while no request is in progress: the head of the next request. It is
// net/http's limit on the plain path (http.DefaultMaxHeaderBytes, plus
// the 4 KiB it allows on top), with room for TLS records and what the
// readers above read ahead of the head's end.
const maxTunnelHead = http.DefaultMaxHeaderBytes + 64<<10

// errTunnelHeadTooLarge ends an intercepted tunnel whose request head
// passes maxTunnelHead.
var errTunnelHeadTooLarge = fmt.Errorf("request head inside the tunnel is over %d bytes", maxTunnelHead)

// headBudget counts the bytes an intercepted tunnel reads from the app
// between requests. goproxy reads the requests inside a tunnel with
// http.ReadRequest, which has no limit of its own (net/http's server
// answers 431 on the plain path): a head that never ends would grow the
// proxy's memory until it is killed. Bodies are not counted: a request
// is in progress from its handler (requestStarted) to the end of
// goproxy's work on it (requestEnded), its body's rest drained.
type headBudget struct {
	on   atomic.Bool  // an intercepted tunnel: the budget applies
	head atomic.Bool  // between requests: reads are the next head
	read atomic.Int64 // bytes read since the head began

	mu  sync.Mutex
	gen uint64 // requests started; requestEnded of an older one is stale
}

// limitHeads switches the budget on: the connection is an intercepted
// tunnel, whose first head starts now.
func (s *idleState) limitHeads() {
	s.heads.read.Store(0)
	s.heads.head.Store(true)
	s.heads.on.Store(true)
}

// requestStarted marks a request's head as read; it returns the request's
// number for requestEnded.
func (s *idleState) requestStarted() uint64 {
	s.heads.mu.Lock()
	defer s.heads.mu.Unlock()
	s.heads.gen++
	s.heads.head.Store(false)
	return s.heads.gen
}

// requestEnded starts the next head, unless a later request has started
// meanwhile.
func (s *idleState) requestEnded(gen uint64) {
	s.heads.mu.Lock()
	defer s.heads.mu.Unlock()
	if s.heads.gen == gen {
		s.heads.read.Store(0)
		s.heads.head.Store(true)
	}
}

// overHead reports whether the head being read is over its budget.
func (s *idleState) overHead() bool {
	return s.heads.on.Load() && s.heads.head.Load() && s.heads.read.Load() > maxTunnelHead
}

// countHead counts n bytes read.
func (s *idleState) countHead(n int) {
	if n > 0 && s.heads.on.Load() && s.heads.head.Load() {
		s.heads.read.Add(int64(n))
	}
}

// touch pushes the deadlines of a hijacked connection idle into the
// future, for reads and writes: a tunnel that only downloads stays open,
// and a write to an app that stopped reading ends at the idle timeout.
// While a close watch reads, its read deadline is the watch's own.
func (s *idleState) touch(c net.Conn) {
	if !s.hijacked.Load() {
		return
	}
	if s.watch.reading.Load() {
		_ = c.SetWriteDeadline(time.Now().Add(s.idle))
		return
	}
	_ = c.SetDeadline(time.Now().Add(s.idle))
}

// watcher is an accepted connection that can watch for the app's close
// while nothing else reads it.
type watcher interface {
	// watchClose starts a background read that calls gone when the app
	// closes the connection (or it breaks); stop ends the watch. What
	// the watch reads is returned by the next Reads. It does nothing
	// while a watch runs or what the last one read is unclaimed.
	watchClose(gone func()) (stop func())
}

// aLongTimeAgo is a read deadline that wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// maxWatchStash bounds what a close watch reads ahead: the start of a
// request that follows at once, or the TLS close_notify alert that most
// TLS clients (not python's ssl) send before they close.
const maxWatchStash = 16 << 10

// closeWatch is the background read of an app's connection inside an
// intercepted tunnel while its request is upstream. goproxy reads nothing
// from the app then, so an app that gives up (a timeout) and closes went
// unnoticed: the upstream request, its connection and the app's socket
// were held until the receiver answered, for ever if it never did.
// net/http watches plain proxy connections the same way. It reads on
// past a TLS alert (the close_notify most TLS clients send before they
// close) to see the end, and, as net/http does, stops at anything else:
// a pipelined request means the app is still there, also when it then
// closes its sending side to wait for the answers.
type closeWatch struct {
	reading atomic.Bool // a watch read is blocked or running
	claim   atomic.Bool // the last watch left bytes, an error or a deadline to undo

	mu    sync.Mutex
	done  chan struct{} // closed when the running watch ends; nil: none
	stash []byte        // read by the watch, for the next Reads
	err   error         // the watch read's error, returned after stash
}

// start begins a watch that reads with read (from the unwrapped
// connection raw) and calls gone on an error other than a timeout.
func (w *closeWatch) start(raw net.Conn, read func([]byte) (int, error), gone func()) (stop func()) {
	w.mu.Lock()
	if w.done != nil || len(w.stash) > 0 || w.err != nil {
		w.mu.Unlock()
		return func() {}
	}
	done := make(chan struct{})
	w.done = done
	w.reading.Store(true)
	w.claim.Store(true)
	// The request may be upstream for longer than the idle timeout. Set
	// under mu, so that a stop's deadline always comes after it.
	_ = raw.SetReadDeadline(time.Time{})
	w.mu.Unlock()
	go func() {
		defer close(done)
		defer w.reading.Store(false)
		buf := make([]byte, 1024)
		next := 0 // offset in stash of the next TLS record header
		for {
			n, err := read(buf)
			var ne net.Error
			closed := err != nil && !(errors.As(err, &ne) && ne.Timeout())
			w.mu.Lock()
			w.stash = append(w.stash, buf[:n]...)
			var talking bool
			next, talking = pastAlerts(w.stash, next)
			if closed {
				w.err = err
			}
			full := len(w.stash) >= maxWatchStash
			w.mu.Unlock()
			if talking {
				// The app sent more than an alert (a pipelined request):
				// it has not hung up, even if its end of the stream
				// follows (it may still read the answers). net/http stops
				// its own watch at the first such byte for that reason
				// (Go issue 23921). What was read stays for the next
				// Reads, its error too.
				return
			}
			if closed {
				gone()
			}
			if err != nil || full {
				return
			}
		}
	}()
	return func() { w.stop(raw) }
}

// pastAlerts walks the TLS records in b from offset at, which starts a
// record, over those that can only be alerts (close_notify): a record of
// type alert (TLS 1.2), or an application data record no longer than an
// encrypted alert (TLS 1.3: 2 bytes, the inner type and a 16-byte tag).
// It returns the offset of the first record not yet whole, and talking
// when a record (or a byte that starts none, in a tunnel without TLS)
// carries more than an alert.
func pastAlerts(b []byte, at int) (next int, talking bool) {
	const (
		alert         = 21
		appData       = 23
		maxTLS13Alert = 19
	)
	for at < len(b) {
		if typ := b[at]; typ != alert && typ != appData {
			return at, true
		}
		if len(b)-at < 5 {
			return at, false
		}
		n := int(b[at+3])<<8 | int(b[at+4])
		if b[at] == appData && n > maxTLS13Alert {
			return at, true
		}
		at += 5 + n
	}
	return at, false
}

// stop wakes the running watch read, if any, and waits for it.
func (w *closeWatch) stop(raw net.Conn) {
	w.mu.Lock()
	done := w.done
	w.mu.Unlock()
	if done == nil {
		return
	}
	_ = raw.SetReadDeadline(aLongTimeAgo)
	<-done
	w.mu.Lock()
	if w.done == done {
		w.done = nil
	}
	w.mu.Unlock()
}

// take ends a watch and hands over what it read: ok reports that n and
// err are the Read's result. Otherwise the read deadline the watch left
// is undone (touch sets it again on a hijacked connection).
func (w *closeWatch) take(raw net.Conn, b []byte) (n int, err error, ok bool) {
	if !w.claim.Load() {
		return 0, nil, false
	}
	w.stop(raw)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case len(w.stash) > 0:
		n = copy(b, w.stash)
		w.stash = w.stash[n:]
		if len(w.stash) == 0 {
			w.stash = nil
		}
		return n, nil, true
	case w.err != nil:
		return 0, w.err, true
	}
	w.claim.Store(false)
	_ = raw.SetReadDeadline(time.Time{})
	return 0, nil, false
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

func (c *tcpConn) markHijacked() {
	c.hijacked.Store(true)
	c.touch(c.TCPConn)
}

// watchClose implements watcher. The watch read arms TCP_QUICKACK as
// Read does: it may be the read that gets the app's next request.
func (c *tcpConn) watchClose(gone func()) (stop func()) {
	return c.watch.start(c.TCPConn, func(b []byte) (int, error) {
		c.quickack()
		n, err := c.TCPConn.Read(b)
		if n > 0 && c.raw != nil {
			c.arm()
		}
		return n, err
	}, gone)
}

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
	if c.overHead() {
		return 0, errTunnelHeadTooLarge
	}
	if n, err, ok := c.watch.take(c.TCPConn, b); ok {
		c.countHead(n)
		return n, err
	}
	c.touch(c.TCPConn)
	if c.quickack() && c.hijacked.Load() {
		c.recheck.Store(true)
	}
	n, err := c.TCPConn.Read(b)
	if !c.quickack() && n > 0 && c.recheck.Swap(false) {
		c.arm()
	}
	c.countHead(n)
	return n, err
}

// Write implements net.Conn.
func (c *tcpConn) Write(b []byte) (int, error) {
	c.touch(c.TCPConn)
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
	c.set.remove(c)
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
	_ = c.raw.Control(setQuickack)
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

func (c *otherConn) markHijacked() {
	c.hijacked.Store(true)
	c.touch(c.Conn)
}

// watchClose implements watcher.
func (c *otherConn) watchClose(gone func()) (stop func()) {
	return c.watch.start(c.Conn, c.Conn.Read, gone)
}

// Read implements net.Conn.
func (c *otherConn) Read(b []byte) (int, error) {
	if c.overHead() {
		return 0, errTunnelHeadTooLarge
	}
	if n, err, ok := c.watch.take(c.Conn, b); ok {
		c.countHead(n)
		return n, err
	}
	c.touch(c.Conn)
	n, err := c.Conn.Read(b)
	c.countHead(n)
	return n, err
}

// Write implements net.Conn.
func (c *otherConn) Write(b []byte) (int, error) {
	c.touch(c.Conn)
	return c.Conn.Write(b)
}

// Close implements net.Conn.
func (c *otherConn) Close() error {
	c.set.remove(c)
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

// activeSet counts the requests in progress inside intercepted tunnels.
type activeSet struct {
	draining atomic.Bool
	mu       sync.Mutex
	n        int
	// idle is closed when n drops to zero while wait waits.
	idle chan struct{}
}

// start counts a request in.
func (s *activeSet) start() {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
}

// isDraining reports whether Shutdown has begun.
func (s *activeSet) isDraining() bool { return s.draining.Load() }

// done counts a request out.
func (s *activeSet) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if s.n == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// drain marks the start of Shutdown.
func (s *activeSet) drain() { s.draining.Store(true) }

// wait returns once no request is in progress, or with ctx's error.
func (s *activeSet) wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.n == 0 {
			s.mu.Unlock()
			return nil
		}
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle := s.idle
		s.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
