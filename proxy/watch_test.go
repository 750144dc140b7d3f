package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMITMAppHangUpCancelsUpstream: an app that gives up on a request
// inside an intercepted tunnel (python requests' timeout) and closes its
// connection cancels the request upstream, as on the plain path (net/http
// watches both). Left running, its goroutine, its upstream connection and
// the app's socket would be held until the receiver answered (never, for
// a hung one), and Shutdown would wait for it.
func TestMITMAppHangUpCancelsUpstream(t *testing.T) {
	const get = "GET /slow HTTP/1.1\r\nHost: %s\r\n\r\n"
	for _, tt := range []struct {
		name, request string
		stream        bool // the receiver sends its headers, then nothing
		tcpOnly       bool // the app closes its socket without close_notify
		// TLS 1.2 sends close_notify as an alert record (TLS 1.3 as
		// application data); the watch reads on past both.
		tls12 bool
		// idle, when set, is the proxy's idle timeout, and the app hangs
		// up after two of them: a request may be upstream for longer
		// (a slow receiver, a stream that says nothing), and the watch has
		// no read deadline of its own.
		idle time.Duration
	}{
		{name: "get", request: get},
		{name: "get python close", request: get, tcpOnly: true},
		{name: "get tls 1.2", request: get, tls12: true},
		{name: "post", request: "POST /slow HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "silent stream", request: "GET /events HTTP/1.1\r\nHost: %s\r\n\r\n", stream: true},
		{name: "get after the idle timeout", request: get, idle: handshakeIdle},
		{name: "silent stream after the idle timeout", request: get, stream: true, idle: handshakeIdle},
	} {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			gone := make(chan struct{}, 1)
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.stream {
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					w.(http.Flusher).Flush()
				}
				entered <- struct{}{}
				<-r.Context().Done() // the proxy's upstream connection closed
				gone <- struct{}{}
			}, true)
			ca := newCA(t)
			tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig(), IdleTimeout: tt.idle})
			// Runs before the proxy's Shutdown: without the watch the
			// request would otherwise hold it until its deadline.
			t.Cleanup(rc.CloseClientConnections)
			u, _ := url.Parse(rc.URL)
			// Go's TLS client sends close_notify before it closes; python's
			// ssl module closes the socket alone.
			c, tcp := interceptedWith(t, tp, ca, u.Host, func(tc *tls.Config) {
				if tt.tls12 {
					tc.MaxVersion = tls.VersionTLS12
				}
			})
			if _, err := io.WriteString(c, strings.ReplaceAll(tt.request, "%s", u.Host)); err != nil {
				t.Fatalf("write: %v", err)
			}
			recv(t, entered, "the request upstream")
			if tt.stream {
				resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("stream headers: %v %v", resp, err)
				}
			}
			if tt.idle > 0 {
				// What is tested is the time: the request stays upstream
				// for two idle timeouts before the app hangs up, and is
				// not cancelled meanwhile (a watch that inherited a read
				// deadline would take its timeout for the app's hang-up).
				time.Sleep(2 * tt.idle)
				select {
				case <-gone:
					t.Fatalf("the upstream request was cancelled while the app waited for it (idle timeout %v)", tt.idle)
				default:
				}
			}
			if tt.tcpOnly {
				_ = tcp.Close()
			} else {
				_ = c.Close()
			}
			recv(t, gone, "the upstream request's cancellation")
		})
	}
}

// TestMITMWatchKeepsKeepAlive: the watch of the app's connection while a
// request is upstream (net/http's background read) hands the bytes it
// reads to the next request: requests that follow each other at once on
// one tunnel all get their answers, also two written together (the
// second one's bytes arrive while the first is upstream, and the watch
// reads them).
func TestMITMWatchKeepsKeepAlive(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}, true)
	_, c, host := tunnelTo(t, rc, Options{})
	for i := range 20 {
		path := "/r" + strconv.Itoa(i)
		resp, body := c.send(t, http.MethodPost, "POST "+path+" HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: text/plain\r\n"+
			"Content-Length: 2\r\n\r\n", "hi")
		if resp.StatusCode != http.StatusOK || string(body) != "ok "+path || resp.Close {
			t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
		}
	}
	// Pipelined: both requests in one write.
	req := func(path string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
	}
	if _, err := io.WriteString(c, req("/p1")+req("/p2")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/p1", "/p2"} {
		readOK(t, c.br, http.MethodPost, path)
	}
}

// TestMITMPipelinedThenHalfClose: an app that pipelines a second
// request while the first is upstream, then closes its sending side (it
// still reads the answers), has not hung up on the first request:
// net/http's own watch of a plain proxy connection stops at the first
// byte of a pipelined request for that reason (Go 1.11, issue 23921) and
// does not cancel it; inside an intercepted tunnel it is the same watch.
func TestMITMPipelinedThenHalfClose(t *testing.T) {
	for _, tt := range []struct {
		name        string
		closeNotify bool // tls.Conn.CloseWrite before the TCP half-close
	}{{"fin", false}, {"close_notify and fin", true}} {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			var cancelled atomic.Bool
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					entered <- struct{}{}
					select {
					case <-release:
					case <-r.Context().Done():
						cancelled.Store(true)
						return
					}
				}
				_, _ = io.WriteString(w, "ok "+r.URL.Path)
			}, true)
			ca := newCA(t)
			reads := new(atomic.Int64)
			tp := startProxyWrapping(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig()}, countReads(reads))
			t.Cleanup(rc.CloseClientConnections)
			u, _ := url.Parse(rc.URL)
			c, tcp := interceptedWith(t, tp, ca, u.Host, nil)
			if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			recv(t, entered, "the first request upstream")
			before := reads.Load()
			if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if tt.closeNotify {
				if err := c.Conn.(*tls.Conn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			if err := tcp.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// Wait until the proxy's watch of the app's connection has
			// read the pipelined request (it stops there), then let the
			// receiver answer.
			waitReads(t, reads, before, cancelled.Load)
			close(release)
			// Only the first request is checked: the last one of a
			// pipeline, followed by the end of the stream, is cancelled
			// by net/http too.
			readOK(t, c.br, http.MethodGet, "/slow")
			if resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet}); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// TestMITMWatchHandsOverAPipelinedRequest: a request the app pipelines
// while the one before it is upstream is read by the watch; it is handed
// to the next request's read and answered in turn.
func TestMITMWatchHandsOverAPipelinedRequest(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}, true)
	ca := newCA(t)
	reads := new(atomic.Int64)
	tp := startProxyWrapping(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig()}, countReads(reads))
	u, _ := url.Parse(rc.URL)
	host := u.Host
	c := intercepted(t, tp, ca, host)
	if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	recv(t, entered, "the first request upstream")
	before := reads.Load()
	if _, err := io.WriteString(c, "GET /next HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Wait until the watch has read the pipelined request.
	waitReads(t, reads, before, nil)
	close(release)
	for _, path := range []string{"/slow", "/next"} {
		readOK(t, c.br, http.MethodGet, path)
	}
}

// readOK reads the answer to a request for path from br: 200 with the
// body "ok <path>", which the receivers of these tests write.
func readOK(t *testing.T, br *bufio.Reader, method, path string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(b) != "ok "+path {
		t.Fatalf("%s: %d %q %v", path, resp.StatusCode, b, err)
	}
}

// countReads is a startProxyWrapping wrapper that counts, in n, the reads
// of accepted connections that return data.
func countReads(n *atomic.Int64) func(net.Conn) net.Conn {
	return func(c net.Conn) net.Conn { return readCounter{Conn: c, n: n} }
}

type readCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c readCounter) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.n.Add(1)
	}
	return n, err
}

// waitReads polls until the proxy has read data from the app since reads
// stood at before (while a request is upstream, only the watch of the
// app's connection reads), or done (when not nil) says there is nothing
// left to wait for.
func waitReads(t *testing.T, reads *atomic.Int64, before int64, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(testTimeout); reads.Load() == before && (done == nil || !done()); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watch never read the pipelined request")
		}
	}
}
