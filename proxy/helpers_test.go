package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"hookproxy/buffer"
)

// TestMain fails the package when any test leaves a goroutine behind:
// Shutdown must close tunnels, transports must drop idle connections.
//
// It also fences DNS off: the names tests use as mere labels
// (receiver.example, hooks.example) are never looked up, so a regression
// that sent one of their requests upstream fails here instead of leaving
// the machine. /etc/hosts still answers for localhost.
func TestMain(m *testing.M) {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("the proxy tests resolve no names through DNS")
	}}
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests; reaching it is a failure.
const testTimeout = 10 * time.Second

// handshakeIdle is the idle timeout of a test that opens an intercepted
// tunnel and then needs the timeout to fire, or not, later on. The proxy
// gives the app's whole TLS handshake one idle timeout, and a handshake
// is CPU work (a leaf to sign, the key exchange, the chain to verify)
// that the race detector slows: 5-12 ms on a quiet machine, up to 28 ms
// on a core shared with one busy loop. With 100 or 200 ms these tests
// failed whenever they got less than about a tenth of a core for that
// long (the tunnel closed before its first request: "TLS handshake
// inside the tunnel: EOF", "write: broken pipe"), which CI's shared
// 2-core machine can give them. A second is still a tenth of
// testTimeout: a tunnel the idle timeout fails to close still fails.
const handshakeIdle = time.Second

// logBuffer collects log output safely from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// countingListener counts accepted connections, keeps them (as accepted,
// before the proxy wraps them) and closes closed when it is closed.
type countingListener struct {
	net.Listener
	accepts   atomic.Int32
	closeOnce sync.Once
	closed    chan struct{}

	mu       sync.Mutex
	accepted []net.Conn

	// wrap, when set, is what Accept returns of each connection.
	wrap func(net.Conn) net.Conn
}

// conn returns the i-th accepted connection.
func (l *countingListener) conn(tb testing.TB, i int) net.Conn {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.accepted) {
		tb.Fatalf("connection %d not accepted (%d so far)", i, len(l.accepted))
	}
	return l.accepted[i]
}

func (l *countingListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepts.Add(1)
		l.mu.Lock()
		l.accepted = append(l.accepted, c)
		l.mu.Unlock()
		if l.wrap != nil {
			c = l.wrap(c)
		}
	}
	return c, err
}

// testProxy is a Proxy served on a loopback listener.
type testProxy struct {
	*Proxy
	URL      *url.URL
	Addr     string
	listener *countingListener
	logs     *logBuffer

	serveOnce sync.Once
	served    chan error
	serveErr  error
}

// startProxy serves a Proxy built from opts on 127.0.0.1:0 and shuts it
// down when the test ends. A nil opts.Logger logs to tp.logs.
func startProxy(tb testing.TB, opts Options) *testProxy {
	tb.Helper()
	return startProxyWrapping(tb, opts, nil)
}

// startProxyWrapping is startProxy with each accepted connection handed
// to the proxy as wrap returns it (nil: as accepted).
func startProxyWrapping(tb testing.TB, opts Options, wrap func(net.Conn) net.Conn) *testProxy {
	tb.Helper()
	tp := newTestProxy(tb, opts)
	tp.serve(tb, wrap)
	return tp
}

// newTestProxy builds a Proxy from opts for serve. A nil opts.Logger
// logs to tp.logs.
func newTestProxy(tb testing.TB, opts Options) *testProxy {
	tb.Helper()
	tp := &testProxy{logs: new(logBuffer), served: make(chan error, 1)}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(tp.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p, err := New(opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tp.Proxy = p
	return tp
}

// serve serves tp on 127.0.0.1:0, as startProxyWrapping does, and shuts
// it down when the test ends.
func (tp *testProxy) serve(tb testing.TB, wrap func(net.Conn) net.Conn) {
	tb.Helper()
	p := tp.Proxy
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	tp.listener = &countingListener{Listener: l, closed: make(chan struct{}), wrap: wrap}
	tp.Addr = l.Addr().String()
	tp.URL = &url.URL{Scheme: "http", Host: tp.Addr}
	go func() { tp.served <- p.Serve(tp.listener) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := tp.wait(tb); err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
}

// wait returns what Serve returned.
func (tp *testProxy) wait(tb testing.TB) error {
	tb.Helper()
	tp.serveOnce.Do(func() {
		select {
		case tp.serveErr = <-tp.served:
		case <-time.After(testTimeout):
			tp.serveErr = errors.New("Serve did not return")
		}
	})
	return tp.serveErr
}

// client returns an http.Client that uses tp as its proxy.
func (tp *testProxy) client(tb testing.TB) *http.Client {
	tb.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(tp.URL)}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// openStore opens the real buffer in a temporary directory.
func openStore(tb testing.TB) *buffer.Store {
	tb.Helper()
	s, err := buffer.Open(buffer.Options{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return s
}

// storedHooks returns every hook pending in s.
func storedHooks(tb testing.TB, s *buffer.Store) []buffer.Hook {
	tb.Helper()
	targets, err := s.Targets()
	if err != nil {
		tb.Fatalf("Targets: %v", err)
	}
	var hooks []buffer.Hook
	for _, t := range targets {
		b, err := s.Claim(t.ID, 0, 0)
		if errors.Is(err, buffer.ErrNoHooks) {
			continue
		}
		if err != nil {
			tb.Fatalf("Claim: %v", err)
		}
		hooks = append(hooks, b.Hooks...)
	}
	return hooks
}

// fakeStore is a Store whose Put fails with err, or, when err is nil,
// keeps hooks in memory.
type fakeStore struct {
	err  error
	mu   sync.Mutex
	puts int
	next atomic.Uint64
}

func (s *fakeStore) Put(ctx context.Context, h *buffer.Hook) error {
	s.mu.Lock()
	s.puts++
	s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	h.ID = "H" + strconv.FormatUint(s.next.Add(1), 10)
	if h.Received.IsZero() {
		h.Received = time.Now()
	}
	return nil
}

func (s *fakeStore) putCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// recorded is one request a receiver saw.
type recorded struct {
	Method string
	URI    string
	Host   string // the Host header as sent
	Header http.Header
	Body   []byte
}

// receiver is a webhook receiver on loopback that records what reaches it.
type receiver struct {
	*httptest.Server
	conns   atomic.Int32
	mu      sync.Mutex
	reqs    []recorded
	handler http.HandlerFunc
}

// newReceiver starts a receiver; a nil handler answers 418 with a body
// and an X-Receiver header.
func newReceiver(tb testing.TB, handler http.HandlerFunc, useTLS bool) *receiver {
	tb.Helper()
	rc := &receiver{handler: handler}
	if rc.handler == nil {
		rc.handler = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Receiver", "yes")
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, "receiver says hi to "+r.Method)
		}
	}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	rc.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rc.conns.Add(1)
		}
	}
	if useTLS {
		rc.StartTLS()
	} else {
		rc.Start()
	}
	tb.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: body})
	rc.mu.Unlock()
	rc.handler(w, r)
}

func (rc *receiver) requests() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

// assertUntouched fails when anything reached rc.
func (rc *receiver) assertUntouched(tb testing.TB) {
	tb.Helper()
	if n := rc.conns.Load(); n != 0 {
		tb.Errorf("receiver got %d connections, want none", n)
	}
	if reqs := rc.requests(); len(reqs) != 0 {
		tb.Errorf("receiver got %d requests, want none", len(reqs))
	}
}

// certPool trusts the receiver's TLS certificate.
func (rc *receiver) certPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(rc.Certificate())
	return pool
}

// tlsConfig is a client TLS config that trusts rc.
func (rc *receiver) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: rc.certPool()}
}

// recordingTransport stands in for the network on the pass-through path:
// it answers 299 and records the request, so tests can use any host name
// without resolving it.
type recordingTransport struct {
	mu   sync.Mutex
	reqs []recorded
}

const statusPassedThrough = 299

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		_ = r.Body.Close()
	}
	t.mu.Lock()
	host := r.Host // what net/http's client sends
	if host == "" {
		host = r.URL.Host
	}
	t.reqs = append(t.reqs, recorded{Method: r.Method, URI: r.URL.String(), Host: host, Header: r.Header.Clone(), Body: body})
	t.mu.Unlock()
	return &http.Response{
		StatusCode: statusPassedThrough, Status: "299 Passed Through",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: r,
	}, nil
}

func (t *recordingTransport) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.reqs)
}

// roundTripFunc is a RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rawConn is a client connection to the proxy driven byte by byte, the
// way python requests drives it.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(tb testing.TB, addr string) *rawConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// send writes each part with its own Write call (urllib3 writes headers
// and body separately) and reads the response with its body.
func (c *rawConn) send(tb testing.TB, method string, parts ...string) (*http.Response, []byte) {
	tb.Helper()
	for _, p := range parts {
		if _, err := io.WriteString(c, p); err != nil {
			tb.Fatalf("write: %v", err)
		}
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		tb.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// echoServer is a TCP server on loopback; newEchoServer's echoes bytes
// back.
type echoServer struct {
	net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newEchoServer(tb testing.TB) *echoServer {
	tb.Helper()
	return newTCPServer(tb, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// newTCPServer serves each connection with handle, then closes it.
func newTCPServer(tb testing.TB, handle func(net.Conn)) *echoServer {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	e := &echoServer{Listener: l}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				handle(c)
				_ = c.Close()
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = l.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			_ = c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

// newRawHTTPServer serves kept-alive HTTP/1.1 connections whose answers
// answer writes byte for byte (net/http would add headers of its own).
func newRawHTTPServer(tb testing.TB, answer func(c net.Conn, req *http.Request)) *echoServer {
	tb.Helper()
	return newTCPServer(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			answer(c, req)
		}
	})
}

// connect opens a CONNECT tunnel through the proxy at proxyAddr, sent as
// python requests sends it: HTTP/1.0, no headers.
func connect(tb testing.TB, proxyAddr, target string) *rawConn {
	tb.Helper()
	c := dialRaw(tb, proxyAddr)
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.0\r\n\r\n"); err != nil {
		tb.Fatalf("write CONNECT: %v", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		tb.Fatalf("read CONNECT response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("CONNECT status = %d, want 200", resp.StatusCode)
	}
	return c
}

// echo writes msg into a tunnel to an echo server and reads it back.
func (c *rawConn) echo(tb testing.TB, msg string) {
	tb.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		tb.Fatalf("write to tunnel: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c.br, got); err != nil {
		tb.Fatalf("read from tunnel: %v", err)
	}
	if string(got) != msg {
		tb.Fatalf("tunnel echoed %q, want %q", got, msg)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// recv receives from ch, failing the test when nothing comes within testTimeout.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// post is a whole hook request for host at path (absolute or not), as
// bytes on the wire.
func post(host, path string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(hookBody)) + "\r\n\r\n" + hookBody
}
