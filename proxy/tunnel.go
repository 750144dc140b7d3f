package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// recordTypeHandshake is the first byte of a TLS ClientHello.
const recordTypeHandshake = 22

// intercept takes over the app's connection after a CONNECT to a host
// that is intercepted, answers 200 and serves the requests inside the
// tunnel with p.tunnels: net/http's server reads them (400, 431, 501,
// 505 for what it cannot read, as on a proxy connection; the idle
// timeout bounds each head) and serveInTunnel passes each on as a proxy
// request. The app
// speaks TLS inside, answered with a certificate for the host, or plain
// HTTP when its first byte does not start a TLS handshake.
//
// goproxy's ConnectHijack action would do the same, but it drops the
// bytes net/http read past the CONNECT (a ClientHello sent with it).
func (p *Proxy) intercept(w http.ResponseWriter, r *http.Request) {
	tun := newMITMTunnel(r.URL)
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Warn("intercept failed: cannot take over the connection", "target", r.URL.Host, "error", err)
		return
	}
	// From here on net/http's server of tunnels manages the read
	// deadlines; connState armed the idle timeout of a relayed tunnel.
	if hc, ok := c.(hijackable); ok {
		hc.markIntercepted()
	}
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	ahead = bytes.Clone(ahead)
	if _, err := fmt.Fprintf(c, "HTTP/%d.%d 200 OK\r\n\r\n", r.ProtoMajor, r.ProtoMinor); err != nil {
		_ = c.Close()
		return
	}
	if len(ahead) == 0 {
		// The first bytes tell TLS from plain HTTP. An app that sends
		// none is treated as one that sends no request head.
		buf := make([]byte, 1024)
		_ = c.SetReadDeadline(time.Now().Add(p.idle))
		n, _ := c.Read(buf)
		_ = c.SetReadDeadline(time.Time{})
		if n == 0 {
			_ = c.Close()
			return
		}
		ahead = buf[:n]
	}

	tc := &tunnelConn{Conn: c, tun: tun, ahead: ahead}
	var served net.Conn = tc
	if ahead[0] == recordTypeHandshake {
		cfg, err := p.tlsConfig(r.URL.Hostname())
		if err != nil {
			p.log.Warn("intercept failed: no certificate", "target", r.URL.Host, "status", http.StatusBadGateway, "error", err)
			_ = c.Close()
			return
		}
		cfg = cfg.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		tun.scheme = "https"
		// The handshake here rather than in net/http's server, whose log
		// line would not name the tunnel's host (a CA whose name
		// constraints leave it out fails here).
		tlsConn := tls.Server(tc, cfg)
		_ = c.SetDeadline(time.Now().Add(p.idle))
		err = tlsConn.Handshake()
		_ = c.SetDeadline(time.Time{})
		if err != nil {
			p.log.Warn("intercept failed: TLS handshake with the app", "target", r.URL.Host, "error", err)
			_ = c.Close()
			return
		}
		served = tlsConn
	}
	// Serve returns at once: the listener holds one connection, which
	// p.tunnels serves from its own goroutine.
	l := &connListener{c: served, addr: c.LocalAddr()}
	_ = p.tunnels.Serve(l)
	if !l.accepted() {
		_ = c.Close() // the server of tunnels is shut down
	}
}

// serveInTunnel is the handler of p.tunnels: a request inside an
// intercepted tunnel, which net/http has read and checked. It goes on as
// a proxy request for the tunnel's host.
func (p *Proxy) serveInTunnel(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	tun := tunnelOf(c).tun
	if r.Method == http.MethodConnect {
		// goproxy would open a tunnel in the tunnel, to any host.
		p.log.Warn("request refused: CONNECT inside a tunnel", "tunnel", tun.host, "status", http.StatusBadRequest)
		w.Header().Set("Connection", "close")
		writeJSONError(w, http.StatusBadRequest, "CONNECT inside a tunnel is not supported")
		p.boundUnreadBody(r)
		return
	}
	// net/http keeps r for itself (it checks its body after the
	// handler): the request goes on as a copy.
	r = r.WithContext(r.Context())
	r.URL = tun.url(r)
	// A request passed on (or a hook forwarded) names the host it goes
	// to as url has it, brackets repaired: a receiver that checks its
	// Host (Django's ALLOWED_HOSTS) refuses "[[::1]]:8443".
	r.Host = r.URL.Host
	if !tun.carries(r.URL) {
		// The certificate and MITMHosts were chosen for the CONNECT's
		// host: a request for another host does not ride on them.
		p.log.Warn("request refused: host differs from its tunnel's", "target", r.URL.Host,
			"tunnel", tun.host, "status", http.StatusMisdirectedRequest)
		writeJSONError(w, http.StatusMisdirectedRequest,
			"request host "+r.URL.Host+" is not the host of its CONNECT tunnel")
		p.boundUnreadBody(r)
		return
	}
	p.forward(headFlusher{w}, r)
}

// headFlusher sends the head of a response of unknown length as soon as
// it is written: goproxy writes the body as it comes, and a stream that
// says nothing for a while (server-sent events) would otherwise hold its
// head back too, where the app waits for it. goproxy's own loop, which
// served tunnels before, wrote each head at once.
type headFlusher struct{ http.ResponseWriter }

// WriteHeader implements http.ResponseWriter.
func (w headFlusher) WriteHeader(code int) {
	_, chunked := w.Header()["Transfer-Encoding"] // upstream's mark of an unknown length
	w.ResponseWriter.WriteHeader(code)
	if chunked {
		w.Flush()
	}
}

// Flush implements http.Flusher, which goproxy uses to stream.
func (w headFlusher) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Hijack implements http.Hijacker, which goproxy uses for websockets.
func (w headFlusher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w headFlusher) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// tunnelConnState is the ConnState hook of p.tunnels. A connection that
// is hijacked inside a tunnel (an upgrade to a websocket) is relayed from
// then on, with the idle timeout in both directions. Shutdown closes it:
// it is the hijacked connection of its CONNECT.
func tunnelConnState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	if hc, ok := tunnelOf(c).Conn.(hijackable); ok {
		hc.markHijacked()
	}
}

// mitmTunnel is an intercepted CONNECT, which every request read inside
// the tunnel belongs to.
type mitmTunnel struct {
	host      string // normalized host name of the CONNECT
	port      string // its port; "443" when the CONNECT named none
	authority string // the CONNECT's host[:port] as the app wrote it
	scheme    string // "https", or "http" when the app speaks plain HTTP inside
}

func newMITMTunnel(u *url.URL) *mitmTunnel {
	t := &mitmTunnel{host: normalizeHost(u.Hostname()), port: u.Port(), authority: u.Host, scheme: "http"}
	if t.port == "" {
		t.port = "443"
	}
	return t
}

// url returns the absolute URL of r, a request inside the tunnel: the
// tunnel's scheme, r's host (the CONNECT's when an HTTP/1.0 request
// names none) and r's target.
func (t *mitmTunnel) url(r *http.Request) *url.URL {
	u := *r.URL
	u.Scheme = t.scheme
	u.Host = r.Host
	if u.Host == "" {
		u.Host = t.authority
	}
	// python's http.client before 3.11.9 (CPython gh-100985) doubles the
	// brackets of an IPv6 literal in the Host of a tunnelled request:
	// "[[::1]]:8443". Kept so, the target would be no URL to deliver to.
	if h := u.Hostname(); strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		port := u.Port()
		u.Host = "[" + strings.Trim(h, "[]") + "]"
		if port != "" {
			u.Host += ":" + port
		}
	}
	if r.RequestURI == "*" {
		// "OPTIONS *", a request for the server as a whole: route sends
		// an empty path on as "*".
		u.Path, u.RawPath = "", ""
	}
	return &u
}

// carries reports whether a request for u belongs in the tunnel: same
// host, same port (python requests leaves out the default port of the
// scheme in Host).
func (t *mitmTunnel) carries(u *url.URL) bool {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return normalizeHost(u.Hostname()) == t.host && port == t.port
}

// tunnelConn is the app's side of an intercepted tunnel as p.tunnels
// serves it (under TLS when the app speaks it).
type tunnelConn struct {
	net.Conn // the accepted connection
	tun      *mitmTunnel
	// ahead was read from the app before the tunnel was served; it is
	// read first. net/http and crypto/tls read one at a time.
	ahead []byte
}

// Read implements net.Conn.
func (c *tunnelConn) Read(b []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(b, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// tunnelOf returns the tunnelConn under c, a connection of p.tunnels.
func tunnelOf(c net.Conn) *tunnelConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*tunnelConn)
	return t
}

// connListener is a listener of one connection: its first Accept returns
// it and the next ones fail, so that http.Server.Serve starts serving it
// and returns.
type connListener struct {
	addr net.Addr
	mu   sync.Mutex
	c    net.Conn // nil once accepted or closed
	took bool
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.c
	if c == nil {
		return nil, net.ErrClosed
	}
	l.c, l.took = nil, true
	return c, nil
}

// Close implements net.Listener; it leaves the connection open.
func (l *connListener) Close() error {
	l.mu.Lock()
	l.c = nil
	l.mu.Unlock()
	return nil
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return l.addr }

// accepted reports whether Accept returned the connection.
func (l *connListener) accepted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.took
}

// idleBody is the body of a request from the app, on a proxy connection
// or inside an intercepted tunnel: each read waits for the app for at
// most the idle timeout (net/http's only bound on a body, ReadTimeout,
// would bound the whole request). At the body's end
// net/http starts its background read, which watches for the app's
// close and must run without a deadline: no read sets one after the
// end or an error.
type idleBody struct {
	io.ReadCloser
	conn net.Conn
	idle time.Duration
	// done is set at the end or an error; the transport may still read
	// a pass-through body after the handler has returned.
	done atomic.Bool
	// failed holds the error that ended the body when it was not its
	// end: the app's framing was broken, or the app stalled.
	failed atomic.Pointer[error]
}

// Read implements io.Reader.
func (b *idleBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return b.ReadCloser.Read(p)
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		// A read after the transport closed the body (its upstream
		// failed) is not the app's failure.
		if err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
			b.failed.CompareAndSwap(nil, &err)
		}
		b.done.Store(true)
	}
	return n, err
}

// Close implements io.Closer. The transport closes the body unread when
// the receiver cannot be reached (a refused dial, say); net/http then
// reads up to 256 KiB of the rest to keep the connection, which must
// wait for the app no longer than a read does: an app that stalled
// there held the connection without an answer for as long as it kept it
// open. A body that fails there failed as a read would have.
func (b *idleBody) Close() error {
	if b.done.Swap(true) {
		return b.ReadCloser.Close()
	}
	_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	err := b.ReadCloser.Close()
	if err != nil {
		b.failed.CompareAndSwap(nil, &err)
	}
	return err
}

// readError returns the error that cut the body short, or nil.
func (b *idleBody) readError() error {
	if err := b.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// bound arms the idle timeout for what net/http reads of the body after
// an answer that left it unread (see boundUnreadBody); nothing to do once
// the body has ended.
func (b *idleBody) bound() {
	if !b.done.Load() {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
}

// boundUnreadBody arms the idle timeout for net/http's read of the rest
// of r's body, which the handler answered without reading. net/http
// reads up to 256 KiB of it to keep the connection (before it sends the
// answer, or after it when the answer closes the connection or the app
// still waits for its 100 Continue), with no deadline of its own: an app
// that stalled there held the connection, and its place under MaxConns,
// for ever, without an answer. With the deadline the read fails at the
// idle timeout, and net/http answers with Connection: close and closes.
// No background read runs before the body's end, so the deadline
// disturbs none.
func (p *Proxy) boundUnreadBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		_ = c.SetReadDeadline(time.Now().Add(p.idle))
	}
}
