package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMITMMalformedRequestIsAnswered: a request inside an intercepted
// tunnel that cannot be read gets the answer the same request gets on a
// proxy connection, with Connection: close, and the tunnel ends; nothing
// reaches the store or upstream. goproxy, which read tunnels before,
// ended the tunnel without a word, and python requests reports that as
// a dropped connection.
func TestMITMMalformedRequestIsAnswered(t *testing.T) {
	const json = "Content-Type: application/json\r\n"
	for _, tt := range []struct {
		name string
		// head is the request without its request line's target: each
		// is sent as "METHOD <target> <head>", origin form inside the
		// tunnel and absolute form on the proxy connection.
		method, head string
		status       int
	}{
		{"conflicting Content-Lengths", "POST", "HTTP/1.1\r\nHost: hooks.example\r\n" + json + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", http.StatusBadRequest},
		{"Content-Length not a number", "POST", "HTTP/1.1\r\nHost: hooks.example\r\n" + json + "Content-Length: two\r\n\r\n{}", http.StatusBadRequest},
		{"two Host headers", "POST", "HTTP/1.1\r\nHost: hooks.example\r\nHost: other.example\r\n" + json + "Content-Length: 2\r\n\r\n{}", http.StatusBadRequest},
		{"header line without a colon", "GET", "HTTP/1.1\r\nHost: hooks.example\r\nNo colon here\r\n\r\n", http.StatusBadRequest},
		{"space before the colon", "GET", "HTTP/1.1\r\nHost: hooks.example\r\nX-Bad : 1\r\n\r\n", http.StatusBadRequest},
		{"no Host in HTTP/1.1", "GET", "HTTP/1.1\r\nAccept: */*\r\n\r\n", http.StatusBadRequest},
		// net/http answers a transfer coding it does not know 501 (RFC
		// 9112 6.1), on a proxy connection too.
		{"unknown Transfer-Encoding", "POST", "HTTP/1.1\r\nHost: hooks.example\r\n" + json + "Transfer-Encoding: gzip\r\n\r\n{}", http.StatusNotImplemented},
		{"garbage", "", "\x16\x03 garbage\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCA(t)
			store := &fakeStore{}
			upstream := &recordingTransport{}
			tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, Transport: upstream})
			line := func(target string) string {
				if tt.method == "" {
					return tt.head
				}
				return tt.method + " " + target + " " + tt.head
			}

			plain := dialRaw(t, tp.Addr)
			resp, body := plain.send(t, tt.method, line("http://hooks.example/t"))
			if resp.StatusCode != tt.status {
				t.Fatalf("on a proxy connection: %d %s, want %d: the test's table is wrong", resp.StatusCode, body, tt.status)
			}

			c := intercepted(t, tp, ca, "hooks.example:443")
			if _, err := io.WriteString(c, line("/t")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(c.br, &http.Request{Method: tt.method})
			if err != nil {
				t.Fatalf("no answer inside the tunnel: %v", err)
			}
			body, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !resp.Close {
				t.Errorf("inside the tunnel: %d (Connection: close %v) %s, want %d and a close", resp.StatusCode, resp.Close, body, tt.status)
			}
			tunnelEnds(t, c)
			if store.putCount() != 0 || upstream.count() != 0 {
				t.Errorf("%d hooks stored, %d requests upstream; want none", store.putCount(), upstream.count())
			}
		})
	}
}

// TestMITMOversizedHeadIs431: a request head inside an intercepted
// tunnel over net/http's limit (1 MiB) gets 431 with Connection: close,
// as on a proxy connection, and the tunnel ends. goproxy ended the tunnel
// without an answer (once hookproxy bounded it at all).
func TestMITMOversizedHeadIs431(t *testing.T) {
	ca := newCA(t)
	upstream := &recordingTransport{}
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, Transport: upstream})
	c := intercepted(t, tp, ca, "hooks.example:443")
	head := "GET /t HTTP/1.1\r\nHost: hooks.example\r\nX-Big: " + strings.Repeat("a", 1<<20+100<<10) + "\r\n\r\n"
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = io.WriteString(c, head) // cut short once the proxy closes
	}()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("no answer to a head of 1.1 MiB: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
		t.Errorf("head of 1.1 MiB: %d (Connection: close %v) %s, want 431 and a close", resp.StatusCode, resp.Close, body)
	}
	tunnelEnds(t, c)
	_ = c.Close()
	recv(t, wrote, "the writer to end")
	if upstream.count() != 0 {
		t.Errorf("%d requests upstream, want none", upstream.count())
	}
}

// TestHeaderReadTimeout: an app that starts a request head and stalls is
// cut off after ReadHeaderTimeout, on a proxy connection and inside an
// intercepted tunnel, as is a tunnel whose TLS handshake does not come.
// Inside tunnels only the idle timeout applied, pushed forward by every
// read: an app that sent a byte now and then held the tunnel for ever.
// The timeout not under test is far longer than the test, so only the
// header timeout can end these connections.
func TestHeaderReadTimeout(t *testing.T) {
	const partial = "POST /t HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\nX-Slow: "
	ca := newCA(t)
	for _, tt := range []struct {
		name string
		open func(*testing.T, *testProxy) *rawConn
	}{
		{"proxy connection", func(t *testing.T, tp *testProxy) *rawConn {
			c := dialRaw(t, tp.Addr)
			_, _ = io.WriteString(c, "POST http://hooks.example/t HTTP/1.1\r\nHost: hooks.example\r\nX-Slow: ")
			return c
		}},
		{"no TLS handshake", func(t *testing.T, tp *testProxy) *rawConn {
			return connect(t, tp.Addr, "hooks.example:443")
		}},
		{"first request", func(t *testing.T, tp *testProxy) *rawConn {
			c := intercepted(t, tp, ca, "hooks.example:443")
			_, _ = io.WriteString(c, partial)
			return c
		}},
		{"after a request", func(t *testing.T, tp *testProxy) *rawConn {
			c := intercepted(t, tp, ca, "hooks.example:443")
			resp, body := c.send(t, http.MethodPost, post("hooks.example", "/t"))
			assertAccepted(t, resp, body)
			_, _ = io.WriteString(c, partial)
			return c
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// On a proxy connection ReadHeaderTimeout bounds a head; inside
			// a tunnel, the idle timeout.
			opts := Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute}
			if tt.name != "proxy connection" {
				opts.ReadHeaderTimeout, opts.IdleTimeout = time.Minute, handshakeIdle
			}
			tp := startProxy(t, opts)
			c := tt.open(t, tp)
			start := time.Now()
			n, err := c.br.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a stalled request head held its connection for %v (timeout %v)", time.Since(start), min(opts.ReadHeaderTimeout, opts.IdleTimeout))
			}
			if err == nil {
				t.Fatalf("read %d bytes, want the connection's end", n)
			}
		})
	}
}

// TestMITMStalledBodyEndsAtIdleTimeout: inside an intercepted tunnel, a
// request body that stops coming is cut off after the idle timeout, as
// every read of a tunnel was before net/http served them (net/http bounds
// the head, not the body).
func TestMITMStalledBodyEndsAtIdleTimeout(t *testing.T) {
	ca := newCA(t)
	store := &fakeStore{}
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig, IdleTimeout: handshakeIdle})
	c := intercepted(t, tp, ca, "hooks.example:443")
	resp, body := c.send(t, http.MethodPost, "POST /t HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\n"+
		"Content-Length: 10\r\n\r\n{}") // 2 bytes of 10
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Errorf("stalled body: %d (Connection: close %v) %s, want 400 and a close", resp.StatusCode, resp.Close, body)
	}
	tunnelEnds(t, c)
	if store.putCount() != 0 {
		t.Errorf("a hook with a body cut short was stored")
	}
}

// TestMITMPlainHTTPInTunnel: an app that speaks plain HTTP inside a
// tunnel to an intercepted host (no TLS handshake) has its requests read
// and its hooks captured with an http:// target.
func TestMITMPlainHTTPInTunnel(t *testing.T) {
	store := openStore(t)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig})
	c := connect(t, tp.Addr, "hooks.example:80")
	for range 2 {
		resp, body := c.send(t, http.MethodPost, post("hooks.example", "/plain"))
		assertAccepted(t, resp, body)
	}
	hooks := storedHooks(t, store)
	if len(hooks) != 2 || hooks[0].Target != "http://hooks.example/plain" {
		t.Errorf("stored %+v, want two hooks for http://hooks.example/plain", hooks)
	}
}

// TestMITMIdleTunnelCloses: an intercepted tunnel that waits longer
// than IdleTimeout for its next request is closed.
func TestMITMIdleTunnelCloses(t *testing.T) {
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, IdleTimeout: handshakeIdle})
	c := intercepted(t, tp, ca, "hooks.example:443")
	resp, body := c.send(t, http.MethodPost, post("hooks.example", "/t"))
	assertAccepted(t, resp, body)
	tunnelEnds(t, c)
}

// TestMITMHTTP10WithoutHost: an HTTP/1.0 request inside a tunnel may
// leave out Host; it is for the CONNECT's host and port.
func TestMITMHTTP10WithoutHost(t *testing.T) {
	store := openStore(t)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig})
	c := intercepted(t, tp, ca, "hooks.example:443")
	resp, body := c.send(t, http.MethodPost, "POST /t10 HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	assertAccepted(t, resp, body)
	if hooks := storedHooks(t, store); len(hooks) != 1 || hooks[0].Target != "https://hooks.example:443/t10" {
		t.Errorf("stored %+v, want one hook for https://hooks.example:443/t10", hooks)
	}
}

// TestMITMClientHelloWithConnect: an app may send its TLS ClientHello in
// the same write as its CONNECT, before the 200; the bytes net/http read
// past the CONNECT start the tunnel's handshake.
func TestMITMClientHelloWithConnect(t *testing.T) {
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig})
	raw := dialRaw(t, tp.Addr)
	eager := &eagerConnect{Conn: raw.Conn, br: raw.br, connect: "CONNECT hooks.example:443 HTTP/1.1\r\nHost: hooks.example:443\r\n\r\n"}
	tc := trusting(ca.Certificate())
	tc.ServerName, tc.NextProtos = "hooks.example", []string{"http/1.1"}
	conn := tls.Client(eager, tc)
	if err := conn.Handshake(); err != nil {
		t.Fatalf("handshake sent with the CONNECT: %v", err)
	}
	c := &rawConn{Conn: conn, br: bufio.NewReader(conn)}
	resp, body := c.send(t, http.MethodPost, post("hooks.example", "/t"))
	assertAccepted(t, resp, body)
}

// eagerConnect writes its CONNECT in front of the first write (a TLS
// ClientHello) and reads the CONNECT's answer before the first read.
type eagerConnect struct {
	net.Conn
	br      *bufio.Reader
	connect string
	read    bool
}

func (c *eagerConnect) Write(b []byte) (int, error) {
	if c.connect != "" {
		_, err := io.WriteString(c.Conn, c.connect+string(b))
		c.connect = ""
		return len(b), err
	}
	return c.Conn.Write(b)
}

func (c *eagerConnect) Read(b []byte) (int, error) {
	if !c.read {
		c.read = true
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, errors.New("CONNECT: " + strconv.Itoa(resp.StatusCode))
		}
	}
	return c.br.Read(b)
}

// tunnelEnds reads c to its end, which must come before testTimeout.
func tunnelEnds(t *testing.T, c *rawConn) {
	t.Helper()
	rest, err := io.ReadAll(c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the tunnel stayed open after its answer")
	}
	if len(rest) > 0 {
		t.Errorf("the tunnel carried on after its answer: %q", rest[:min(len(rest), 200)])
	}
}

// TestMITMSlowAnswerAfterABody: inside an intercepted tunnel, a request
// body is read under the idle timeout, but once it has been read the app
// waits for the answer without a bound: a receiver that takes longer
// than the idle timeout to answer a passed-on POST is waited for, as on
// a proxy connection (net/http's watch of the app for its close, which
// reads from the body's end on, must not inherit the body's deadline).
func TestMITMSlowAnswerAfterABody(t *testing.T) {
	const idle = handshakeIdle
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select { // a receiver slower than the app's idle timeout
		case <-time.After(2 * idle):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "late")
	}, true)
	_, c, host := tunnelTo(t, rc, Options{IdleTimeout: idle})
	resp, body := c.send(t, http.MethodPost, "POST /slow HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: text/plain\r\n"+
		"Content-Length: 2\r\n\r\n", "hi")
	if resp.StatusCode != http.StatusOK || string(body) != "late" {
		t.Fatalf("a POST whose receiver answers after the idle timeout: %d %q, want 200 \"late\"", resp.StatusCode, body)
	}
}

// TestMITMFirstRequestAfterAPause: an app may open a tunnel and send its
// first request later, up to the idle timeout, as it may between
// requests: net/http's server counts the header timeout of a
// connection's first request from the connection's start, which would
// have closed such a tunnel without an answer.
func TestMITMFirstRequestAfterAPause(t *testing.T) {
	ca := newCA(t)
	for _, tlsInside := range []bool{true, false} {
		tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig,
			ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute})
		var c *rawConn
		if tlsInside {
			c = intercepted(t, tp, ca, "hooks.example:443")
		} else {
			c = connect(t, tp.Addr, "hooks.example:80")
		}
		time.Sleep(400 * time.Millisecond) // the app idles: longer than ReadHeaderTimeout, shorter than IdleTimeout
		resp, body := c.send(t, http.MethodPost, post("hooks.example", "/t"))
		assertAccepted(t, resp, body)
	}
}

// TestMITMHandshakeFailureNamesTheHost: an app that refuses hookproxy's
// certificate (it does not trust the CA, or the CA's name constraints
// leave the host out) fails its TLS handshake, and the log line says
// for which host.
func TestMITMHandshakeFailureNamesTheHost(t *testing.T) {
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig})
	raw := connect(t, tp.Addr, "hooks.example:443")
	conn := tls.Client(raw.Conn, &tls.Config{ServerName: "hooks.example"}) // the system roots: not hookproxy's CA
	if err := conn.Handshake(); err == nil {
		t.Fatal("handshake with a certificate of an untrusted CA succeeded")
	}
	_ = conn.Close()
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(tp.logs.String(), `"msg":"intercept failed: TLS handshake with the app","target":"hooks.example:443"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line naming the tunnel's host:\n%s", tp.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDialControlRefuses: Options.DialControl vets every connection the
// proxy opens itself (a request passed through, a relayed tunnel, a
// request inside an intercepted one); a refused one gets 502 and reaches
// nothing.
func TestDialControlRefuses(t *testing.T) {
	rc := newReceiver(t, nil, false)
	refused := rc.Listener.Addr().String()
	control := func(_, address string, _ syscall.RawConn) error {
		if address == refused {
			return errors.New("refused by the test")
		}
		return nil
	}
	ca := newCA(t)
	relay := startProxy(t, Options{Store: &fakeStore{}, DialControl: control})
	mitm := startProxy(t, Options{Store: &fakeStore{}, DialControl: control, TLSConfig: ca.TLSConfig})

	resp, err := relay.client(t).Get(rc.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "refused by the test") {
		t.Errorf("pass-through: %d %s, want 502 with the refusal", resp.StatusCode, body)
	}

	c := dialRaw(t, relay.Addr)
	resp, body = c.send(t, http.MethodConnect, "CONNECT "+refused+" HTTP/1.0\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "refused by the test") {
		t.Errorf("relayed CONNECT: %d %s, want 502 with the refusal", resp.StatusCode, body)
	}

	c = connect(t, mitm.Addr, refused)
	resp, body = c.send(t, http.MethodGet, "GET /x HTTP/1.1\r\nHost: "+refused+"\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "refused by the test") {
		t.Errorf("request in an intercepted tunnel: %d %s, want 502 with the refusal", resp.StatusCode, body)
	}
	rc.assertUntouched(t)
}

// TestStalledBodyEndsAtIdleTimeout: on a proxy connection too, a request
// body that stalls half-way ends at the idle timeout, a hook's with a
// 400 and nothing stored, a pass-through one with nothing sent on whole;
// either way the connection closes and gives back its place.
func TestStalledBodyEndsAtIdleTimeout(t *testing.T) {
	rc := newReceiver(t, nil, false)
	for _, ct := range []string{"application/json", "text/plain"} {
		t.Run(ct, func(t *testing.T) {
			store := &fakeStore{}
			tp := startProxy(t, Options{Store: store, IdleTimeout: 200 * time.Millisecond})
			c := dialRaw(t, tp.Addr)
			resp, body := c.send(t, http.MethodPost, "POST "+rc.URL+"/stalled HTTP/1.1\r\nHost: "+strings.TrimPrefix(rc.URL, "http://")+
				"\r\nContent-Type: "+ct+"\r\nContent-Length: 10\r\n\r\n{}") // 2 bytes of 10
			if resp.StatusCode < 400 || !resp.Close {
				t.Errorf("stalled body: %d (Connection: close %v) %s, want an error and a close", resp.StatusCode, resp.Close, body)
			}
			tunnelEnds(t, c)
			if store.putCount() != 0 {
				t.Errorf("a hook with a body cut short was stored")
			}
			for _, r := range rc.requests() {
				if r.URI == "/stalled" && len(r.Body) == 10 {
					t.Errorf("a body cut short reached the receiver whole: %q", r.Body)
				}
			}
		})
	}
}

// TestStalledBodyToAnUnreachableReceiver: a passed-through request whose
// receiver cannot be reached (here a closed port) has its body closed
// unread by the transport, and net/http then reads up to 256 KiB of the
// rest to keep the connection; a body that stalls there ends at the idle
// timeout too, with an answer and a close, instead of holding the
// connection without an answer for as long as the app keeps it.
func TestStalledBodyToAnUnreachableReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: 200 * time.Millisecond})
	head := "POST http://" + closed + "/x HTTP/1.1\r\nHost: " + closed + "\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
	for _, tt := range []struct {
		name, body string
		want       int
	}{
		{"whole body", "0123456789", http.StatusBadGateway},
		{"stalled body", "01", http.StatusBadRequest}, // 2 bytes of 10
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, tp.Addr)
			resp, body := c.send(t, http.MethodPost, head, tt.body)
			if resp.StatusCode != tt.want || !resp.Close {
				t.Errorf("%s to an unreachable receiver: %d (Connection: close %v) %s, want %d and a close", tt.name, resp.StatusCode, resp.Close, body, tt.want)
			}
			tunnelEnds(t, c)
		})
	}
}

// TestUnreadBodyEndsAtIdleTimeout: an answer given without reading the
// request body (a non-proxy request, a hook in an unsupported encoding,
// a 407, a 421 in a tunnel) leaves net/http to read the rest of it; a
// body that stalls there ends at the idle timeout too, with the answer
// and a close, instead of holding the connection without an answer.
func TestUnreadBodyEndsAtIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: idle, TLSConfig: ca.TLSConfig})
	auth := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: idle, ProxyAuth: "app:secret"})
	const stalled = "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{}" // 2 bytes of 10
	for _, tt := range []struct {
		name string
		dial func(t *testing.T) *rawConn
		head string
		want int
	}{
		{"non-proxy request", func(t *testing.T) *rawConn { return dialRaw(t, tp.Addr) },
			"POST /x HTTP/1.1\r\nHost: hooks.example\r\n", http.StatusBadRequest},
		{"unsupported encoding", func(t *testing.T) *rawConn { return dialRaw(t, tp.Addr) },
			"POST http://hooks.example/x HTTP/1.1\r\nHost: hooks.example\r\nContent-Encoding: br\r\n", http.StatusUnsupportedMediaType},
		{"unsupported encoding, 100-continue", func(t *testing.T) *rawConn { return dialRaw(t, tp.Addr) },
			"POST http://hooks.example/x HTTP/1.1\r\nHost: hooks.example\r\nContent-Encoding: br\r\nExpect: 100-continue\r\n", http.StatusUnsupportedMediaType},
		{"no credentials", func(t *testing.T) *rawConn { return dialRaw(t, auth.Addr) },
			"POST http://hooks.example/x HTTP/1.1\r\nHost: hooks.example\r\n", http.StatusProxyAuthRequired},
		{"host of another tunnel", func(t *testing.T) *rawConn { return connect(t, tp.Addr, "hooks.example:80") },
			"POST /x HTTP/1.1\r\nHost: other.example\r\n", http.StatusMisdirectedRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.dial(t)
			resp, body := c.send(t, http.MethodPost, tt.head+stalled)
			if resp.StatusCode != tt.want || !resp.Close {
				t.Errorf("stalled unread body: %d (Connection: close %v) %s, want %d and a close", resp.StatusCode, resp.Close, body, tt.want)
			}
			tunnelEnds(t, c)
		})
	}
}
