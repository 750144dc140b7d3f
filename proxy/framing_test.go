package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestTunnelFramingErrorEndsTunnel: inside an intercepted tunnel, a
// request whose chunked body is broken gets its answer with Connection:
// close and ends the tunnel. Kept open, goproxy would read the bytes
// after the framing error as the next request and send it upstream (the
// plain path closes, as net/http does).
func TestTunnelFramingErrorEndsTunnel(t *testing.T) {
	for _, tt := range []struct{ name, contentType, status string }{
		{"capture", "application/json", "400"},
		{"pass-through", "text/plain", "400"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
			}, true)
			_, c, host := tunnelTo(t, rc, Options{Store: openStore(t)})
			resp, body := c.send(t, http.MethodPost, "POST /h HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: "+tt.contentType+"\r\n"+
				"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nZZ\r\n"+
				"GET /smuggled HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
			if strconv.Itoa(resp.StatusCode) != tt.status || !resp.Close {
				t.Errorf("broken chunked body: %d (Connection: close %v) %s; want %s and a close", resp.StatusCode, resp.Close, body, tt.status)
			}
			// The tunnel must end; whatever it still carried is read here,
			// so a request the proxy read from it has reached the receiver.
			if rest, _ := io.ReadAll(c.br); len(rest) > 0 {
				t.Errorf("the tunnel carried on after the close: %q", rest)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range paths {
				if p == "/smuggled" {
					t.Errorf("bytes inside a broken request body reached the receiver as a request (%v)", paths)
				}
			}
		})
	}
}

// TestHTTP10HookNeedsContentLength: HTTP/1.0 has no chunked framing, and
// net/http reads an HTTP/1.0 request that says Transfer-Encoding as one
// with an empty body. Such a hook, or a POST passed through, is refused
// with 411 and a close, not stored or forwarded empty.
func TestHTTP10HookNeedsContentLength(t *testing.T) {
	store := &fakeStore{}
	tp := startProxy(t, Options{Store: store})
	c := dialRaw(t, tp.Addr)
	resp, body := c.send(t, http.MethodPost, "POST http://receiver.example/h10 HTTP/1.0\r\nHost: receiver.example\r\n"+
		"Connection: keep-alive\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n")
	assertJSONError(t, resp, body, http.StatusLengthRequired)
	if !resp.Close {
		t.Errorf("411 without Connection: close: the body would be read as the next request")
	}
	if store.putCount() != 0 {
		t.Errorf("Put called for an HTTP/1.0 hook without Content-Length")
	}

	// The same for a POST passed through: its body would be lost.
	c = dialRaw(t, tp.Addr)
	resp, body = c.send(t, http.MethodPost, "POST http://receiver.example/p HTTP/1.0\r\nHost: receiver.example\r\n"+
		"Connection: keep-alive\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	assertJSONError(t, resp, body, http.StatusLengthRequired)

	// With a Content-Length an HTTP/1.0 hook is an ordinary hook.
	c = dialRaw(t, tp.Addr)
	resp, body = c.send(t, http.MethodPost, "POST http://receiver.example/h10 HTTP/1.0\r\nHost: receiver.example\r\n"+
		"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
	assertAccepted(t, resp, body)
}

// TestEncodedHooks: a hook sent with Content-Encoding gzip or deflate is
// stored decoded, without the header, batching or not, so a batch holds
// its JSON; the body limit applies to the decoded body. Other codings
// get 415 naming the ones taken.
func TestEncodedHooks(t *testing.T) {
	const hook = `{"hook": {"event": "book.added"}, "data": {"pk": 7}}`
	encoder := func(newWriter func(io.Writer) io.WriteCloser) func(string) string {
		return func(s string) string {
			var b bytes.Buffer
			w := newWriter(&b)
			_, _ = io.WriteString(w, s)
			_ = w.Close()
			return b.String()
		}
	}
	gz := encoder(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
	zl := encoder(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
	raw := encoder(func(w io.Writer) io.WriteCloser {
		fw, _ := flate.NewWriter(w, flate.DefaultCompression)
		return fw
	})
	big := `{"pad": "` + strings.Repeat("x", 4096) + `"}`
	for _, tt := range []struct {
		name, encoding, body string
		status               int
	}{
		{"gzip", "gzip", gz(hook), http.StatusAccepted},
		{"x-gzip", "x-gzip", gz(hook), http.StatusAccepted},
		{"deflate", "deflate", zl(hook), http.StatusAccepted},
		{"raw deflate", "deflate", raw(hook), http.StatusAccepted},
		{"identity", "identity", hook, http.StatusAccepted},
		{"decoded over the limit", "gzip", gz(big), http.StatusRequestEntityTooLarge},
		{"not gzip", "gzip", hook, http.StatusBadRequest},
		{"data after the stream", "deflate", zl(hook) + zl(`{"more": 1}`), http.StatusBadRequest},
		{"wire size over the limit", "gzip", gz(hook) + strings.Repeat(gz(""), 100), http.StatusRequestEntityTooLarge},
		{"brotli", "br", hook, http.StatusUnsupportedMediaType},
		{"two codings", "gzip, gzip", gz(gz(hook)), http.StatusUnsupportedMediaType},
	} {
		for _, batching := range []bool{false, true} {
			t.Run(tt.name+"/batching="+strconv.FormatBool(batching), func(t *testing.T) {
				store := openStore(t)
				tp := startProxy(t, Options{Store: store, RequireValidJSON: batching, MaxBodyBytes: 1024})
				c := dialRaw(t, tp.Addr)
				resp, body := c.send(t, http.MethodPost, "POST http://receiver.example/gz HTTP/1.1\r\nHost: receiver.example\r\n"+
					"Content-Type: application/json\r\nContent-Encoding: "+tt.encoding+"\r\nX-Kept: yes\r\n"+
					"Content-Length: "+strconv.Itoa(len(tt.body))+"\r\n\r\n", tt.body)
				hooks := storedHooks(t, store)
				if tt.status != http.StatusAccepted {
					assertJSONError(t, resp, body, tt.status)
					if tt.status == http.StatusUnsupportedMediaType && resp.Header.Get("Accept-Encoding") != "gzip, deflate" {
						t.Errorf("415 with Accept-Encoding %q, want the codings taken", resp.Header.Get("Accept-Encoding"))
					}
					if len(hooks) != 0 {
						t.Errorf("refused hook stored: %+v", hooks)
					}
					return
				}
				assertAccepted(t, resp, body)
				if len(hooks) != 1 {
					t.Fatalf("%d hooks stored, want 1", len(hooks))
				}
				h := hooks[0]
				if string(h.Body) != hook || h.Header.Get("Content-Encoding") != "" || h.Header.Get("X-Kept") != "yes" {
					t.Errorf("stored body %q, headers %v; want the decoded JSON, no Content-Encoding, the other headers kept", h.Body, h.Header)
				}
			})
		}
	}
}

// TestOptionsForAServer: an OPTIONS in absolute form with an empty path
// asks about the server as a whole, and reaches it as "OPTIONS *"
// (RFC 9112 3.2.4); with a path, the path.
func TestOptionsForAServer(t *testing.T) {
	got := make(chan string, 2)
	up := newRawHTTPServer(t, func(c net.Conn, req *http.Request) {
		got <- req.RequestURI
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	tp := startProxy(t, Options{Store: &fakeStore{}})
	addr := up.Addr().String()
	c := dialRaw(t, tp.Addr)
	for _, tt := range []struct{ target, want string }{
		{"http://" + addr, "*"},
		{"http://" + addr + "/x", "/x"},
	} {
		resp, _ := c.send(t, http.MethodOptions, "OPTIONS "+tt.target+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("OPTIONS %s: %d", tt.target, resp.StatusCode)
		}
		if g := recv(t, got, "the upstream OPTIONS"); g != tt.want {
			t.Errorf("OPTIONS %s reached the server as %q, want %q", tt.target, g, tt.want)
		}
	}
}

// TestMaxForwards: a TRACE or OPTIONS with Max-Forwards: 0 is answered
// by the proxy as the final recipient, not forwarded (RFC 9110 7.6.2);
// with a larger value it goes on less one. A TRACE's echo leaves out the
// fields that carry credentials.
func TestMaxForwards(t *testing.T) {
	got := make(chan *http.Request, 4)
	up := newRawHTTPServer(t, func(c net.Conn, req *http.Request) {
		got <- req
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nupstream")
	})
	tp := startProxy(t, Options{Store: &fakeStore{}})
	addr := up.Addr().String()
	c := dialRaw(t, tp.Addr)

	resp, body := c.send(t, http.MethodTrace, "TRACE http://"+addr+"/t HTTP/1.1\r\nHost: "+addr+"\r\n"+
		"Max-Forwards: 0\r\nAuthorization: Bearer secret\r\nProxy-Authorization: Basic secret\r\nCookie: session=secret\r\nX-Probe: 1\r\n\r\n")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "message/http" ||
		!strings.HasPrefix(string(body), "TRACE http://"+addr+"/t HTTP/1.1\r\n") || !strings.Contains(string(body), "X-Probe: 1\r\n") {
		t.Errorf("TRACE with Max-Forwards: 0: %d %v %q, want 200 message/http echoing the request", resp.StatusCode, resp.Header, body)
	}
	if strings.Contains(string(body), "secret") {
		t.Errorf("the TRACE echo holds a field that carries credentials: %q", body)
	}
	resp, body = c.send(t, http.MethodOptions, "OPTIONS http://"+addr+"/o HTTP/1.1\r\nHost: "+addr+"\r\nMax-Forwards: 0\r\n\r\n")
	if resp.StatusCode != http.StatusOK || string(body) == "upstream" || resp.Header.Get("Content-Type") != "" {
		t.Errorf("OPTIONS with Max-Forwards: 0: %d %v %q, want the proxy's own 200 without a content type", resp.StatusCode, resp.Header, body)
	}
	select {
	case r := <-got:
		t.Fatalf("a request with Max-Forwards: 0 was forwarded: %s %s", r.Method, r.RequestURI)
	default:
	}

	for _, m := range []string{http.MethodTrace, http.MethodOptions} {
		for _, tt := range []struct{ fields, want string }{
			{"Max-Forwards: 3\r\n", "2"},
			{"Max-Forwards: 1\r\n", "0"},
			// Not one count: passed on as it came.
			{"Max-Forwards: 0\r\nMax-Forwards: 0\r\n", "0"},
			{"Max-Forwards: none\r\n", "none"},
		} {
			resp, body = c.send(t, m, m+" http://"+addr+"/f HTTP/1.1\r\nHost: "+addr+"\r\n"+tt.fields+"\r\n")
			if string(body) != "upstream" {
				t.Fatalf("%s with %q: %d %q, want the upstream's answer", m, tt.fields, resp.StatusCode, body)
			}
			if r := recv(t, got, "the forwarded "+m); r.Header.Get("Max-Forwards") != tt.want {
				t.Errorf("%s with %q went on with Max-Forwards %q, want %s", m, tt.fields, r.Header.Get("Max-Forwards"), tt.want)
			}
		}
	}
}

// TestGoproxyMessagesHoldNoSecrets: a request inside a tunnel whose Host
// has a bad port, or with a control byte in a header value (as python's
// http.client lets through), is refused; a query string, credentials or
// a header's value (an API key) must not reach the log on the way.
// goproxy, which read tunnels before net/http did, logged the whole URL
// of the one and the whole header line of the other.
func TestGoproxyMessagesHoldNoSecrets(t *testing.T) {
	for _, tt := range []struct {
		method, request string
		status          int
	}{
		{http.MethodPost, "POST /hook?token=SUPERSECRET HTTP/1.1\r\nHost: hooks.example:4x3\r\n" +
			"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", http.StatusMisdirectedRequest},
		{http.MethodGet, "GET /x HTTP/1.1\r\nHost: hooks.example\r\nX-Api-Key: SUPERSECRET\x01\r\n\r\n", http.StatusBadRequest},
	} {
		ca := newCA(t)
		upstream := &recordingTransport{}
		tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, Transport: upstream})
		c := intercepted(t, tp, ca, "hooks.example:443")
		resp, body := c.send(t, tt.method, tt.request)
		if resp.StatusCode != tt.status || upstream.count() != 0 {
			t.Errorf("%q: %d %s, %d requests upstream; want %d and none", tt.request, resp.StatusCode, body, upstream.count(), tt.status)
		}
		if logs := tp.logs.String(); strings.Contains(logs, "SUPERSECRET") {
			t.Errorf("a secret reached the log:\n%s", logs)
		}
	}
	if got := redactSecrets(`GET "https://user:pw@h.example/p?a=1&b=2" failed`); got != `GET "https://[userinfo]@h.example/p?[query]" failed` {
		t.Errorf("redactSecrets = %s", got)
	}
}

// TestForwardedHookFailureKeepsConnection: a hook forwarded because the
// store failed was read whole before it was sent, so a 502 for it leaves
// the app's connection open; a pass-through request whose body may be
// unread closes it.
func TestForwardedHookFailureKeepsConnection(t *testing.T) {
	refuse := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("dial: refused")
	})
	tp := startProxy(t, Options{Store: &fakeStore{err: errors.New("disk on fire")}, ForwardTransport: refuse, Transport: refuse})
	c := dialRaw(t, tp.Addr)
	resp, body := c.send(t, http.MethodPost, "POST http://receiver.example/h HTTP/1.1\r\nHost: receiver.example\r\nContent-Type: application/json\r\n"+
		"Content-Length: 2\r\n\r\n", "{}")
	assertJSONError(t, resp, body, http.StatusBadGateway)
	if resp.Close {
		t.Errorf("the 502 of a forwarded hook ends the app's connection")
	}
	resp, body = c.send(t, http.MethodPost, "POST http://receiver.example/p HTTP/1.1\r\nHost: receiver.example\r\nContent-Type: text/plain\r\n"+
		"Content-Length: 2\r\n\r\n", "hi")
	assertJSONError(t, resp, body, http.StatusBadGateway)
	if !resp.Close {
		t.Errorf("the 502 of a pass-through request with a body keeps the app's connection")
	}
}

// TestTunnelRequestHeadIsBounded: goproxy read the requests inside an
// intercepted tunnel with http.ReadRequest, which has no limit of its
// own; a head that never ends grew the proxy's memory without bound. A
// head past about 1 MiB now gets 431 and ends the tunnel, as on the
// plain path, while bodies, however large, and the requests that follow
// them are not counted against it.
func TestTunnelRequestHeadIsBounded(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}, true)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig()})
	u, _ := url.Parse(rc.URL)

	// A 3 MiB body, pipelined with the requests after it: none is a head.
	c := intercepted(t, tp, ca, u.Host)
	big := strings.Repeat("b", 3<<20)
	go func() {
		_, _ = io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: "+u.Host+"\r\nContent-Type: text/plain\r\n"+
			"Content-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big+
			"POST /chunked HTTP/1.1\r\nHost: "+u.Host+"\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"+
			strconv.FormatInt(int64(len(big)), 16)+"\r\n"+big+"\r\n0\r\n\r\n"+
			"GET /after HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n")
	}()
	for _, path := range []string{"/upload", "/chunked", "/after"} {
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("response to %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != path {
			t.Fatalf("response to %s: %d %q %v, want 200 and the path", path, resp.StatusCode, body, err)
		}
	}
	seen := len(rc.requests())

	// A head that never ends.
	endlessHead(t, intercepted(t, tp, ca, u.Host), u.Host, rc, seen)
}

// TestTunnelHeadBoundIsPerHead: the bound of an intercepted tunnel is
// on each request head, not on what the tunnel carries: many requests
// whose heads, together, pass it are answered, and a head that never
// ends after them still gets 431 and ends the tunnel. Accepted
// connections of another kind than TCP (a unix socket's, a listener's
// wrapper) are bounded alike.
func TestTunnelHeadBoundIsPerHead(t *testing.T) {
	for _, tt := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", nil},
		{"other", func(c net.Conn) net.Conn { return struct{ net.Conn }{c} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, r.URL.Path)
			}, true)
			ca := newCA(t)
			tp := startProxyWrapping(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig()}, tt.wrap)
			u, _ := url.Parse(rc.URL)
			c := intercepted(t, tp, ca, u.Host)

			// 32 heads of 60 KiB: about 1.9 MiB of heads in one tunnel.
			pad := "X-Pad: " + strings.Repeat("p", 60<<10) + "\r\n"
			for i := range 32 {
				path := "/r" + strconv.Itoa(i)
				resp, body := c.send(t, http.MethodGet, "GET "+path+" HTTP/1.1\r\nHost: "+u.Host+"\r\n"+pad+"\r\n")
				if resp.StatusCode != http.StatusOK || string(body) != path {
					t.Fatalf("request %d of the tunnel: %d %q, want 200 and the path", i, resp.StatusCode, body)
				}
			}
			seen := len(rc.requests())

			// Then, in the same tunnel, a head that never ends.
			endlessHead(t, c, u.Host, rc, seen)
		})
	}
}

// TestMITMWebSocketPastTheHeadBound: a websocket inside an intercepted
// tunnel carries far more than a request head's bound from the app: its
// frames are read while the upgrade request is still in progress, so
// they are not counted as a head and do not end the tunnel.
func TestMITMWebSocketPastTheHeadBound(t *testing.T) {
	const sent = 3 << 20
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		n, _ := io.CopyN(io.Discard, brw, sent)
		_, _ = io.WriteString(c, strconv.FormatInt(n, 10))
	}, true)
	_, c, host := tunnelTo(t, rc, Options{})
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade inside the tunnel: %v %v", resp, err)
	}
	go func() { _, _ = io.WriteString(c, strings.Repeat("f", sent)) }()
	got, err := io.ReadAll(io.LimitReader(c.br, 16))
	if string(got) != strconv.Itoa(sent) {
		t.Fatalf("the receiver answered %q (%v) after the app sent %d bytes on the websocket, want %d", got, err, sent, sent)
	}
}

// endlessHead sends a request head that never ends (4 MiB of one header)
// on c, an intercepted tunnel to host, and checks that the tunnel answers
// 431 with Connection: close and ends, and that rc, which had seen
// requests, got no more.
func endlessHead(t *testing.T, c *rawConn, host string, rc *receiver, seen int) {
	t.Helper()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = io.WriteString(c, "GET /big HTTP/1.1\r\nHost: "+host+"\r\nX-Big: ")
		chunk := strings.Repeat("a", 64<<10)
		for range 64 { // 4 MiB
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(c.br, nil)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the tunnel stayed open, silent, while the app sent a head of several MiB after %d requests", seen)
	}
	if err != nil {
		t.Fatalf("no answer to a head of several MiB: %v", err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
		t.Errorf("a head of several MiB: %d (Connection: close %v), want 431 and a close", resp.StatusCode, resp.Close)
	}
	// The rest of the 431's body, then the end of the tunnel.
	if _, err := io.ReadAll(c.br); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the tunnel stayed open after its 431")
	}
	_ = c.Close()
	recv(t, wrote, "the writer to end")
	if n := len(rc.requests()); n != seen {
		t.Errorf("the receiver got %d more requests, want none", n-seen)
	}
}

// arrivingBody is a request body of which only data has arrived: it
// records the largest buffer a read offers, and then fails as a
// connection that breaks off would.
type arrivingBody struct {
	data    []byte
	largest int
}

func (b *arrivingBody) Read(p []byte) (int, error) {
	b.largest = max(b.largest, len(p))
	if len(b.data) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// TestBodyBufferFollowsArrival: the buffer a hook body is read into
// grows with the bytes that arrive, not with the Content-Length the
// head announces: many heads announcing the largest body, and sending
// none of it, would otherwise hold the limit each in memory.
func TestBodyBufferFollowsArrival(t *testing.T) {
	const limit = 16 << 20
	body := &arrivingBody{data: []byte(`{"a":`)}
	if _, err := readBody(body, limit, limit); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
	}
	if body.largest > readAhead {
		t.Errorf("a read was offered %d bytes with 5 arrived, want at most %d", body.largest, readAhead)
	}
}

// TestReadBodyWithContentLength: a body of exactly Content-Length bytes
// is read whole whatever its size against the read-ahead; a shorter one
// is an error, also when it ends where the buffer grows.
func TestReadBodyWithContentLength(t *testing.T) {
	for _, n := range []int{0, 1, readAhead - 1, readAhead, readAhead + 1, 3*readAhead + 5, 1 << 20} {
		want := bytes.Repeat([]byte("x"), n)
		got, err := readBody(io.MultiReader(bytes.NewReader(want), strings.NewReader("after")), int64(n), 1<<20)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
	}
	for _, n := range []int{readAhead, 2*readAhead + 1} {
		_, err := readBody(bytes.NewReader(make([]byte, n)), int64(n)+1, 1<<20)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%d of %d bytes: error %v, want io.ErrUnexpectedEOF", n, n+1, err)
		}
	}
}

// TestBrokenPassThroughBodyIs400: a pass-through request whose body the
// app breaks (chunked framing that does not parse, a body cut short) is
// a malformed request: 400 with a close, as for a hook, not a 502 that
// blames the receiver.
func TestBrokenPassThroughBodyIs400(t *testing.T) {
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: &fakeStore{}})
	head := "POST " + rc.URL + "/p HTTP/1.1\r\nHost: " + strings.TrimPrefix(rc.URL, "http://") + "\r\nContent-Type: text/plain\r\n"
	for _, tt := range []struct {
		name      string
		req       string
		halfClose bool
	}{
		{"chunk size not hex", head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n", false},
		{"chunk line with a bare LF", head + "Transfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n", false},
		{"body cut short", head + "Content-Length: 10\r\n\r\nhi", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, tp.Addr)
			if _, err := io.WriteString(c, tt.req); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			resp, body := c.send(t, http.MethodPost)
			assertJSONError(t, resp, body, http.StatusBadRequest)
			if !resp.Close {
				t.Errorf("the 400 of a broken body keeps the app's connection")
			}
			if !strings.Contains(tp.logs.String(), "request refused: cannot read body") {
				t.Errorf("no log line for the broken body:\n%s", tp.logs.String())
			}
		})
	}
}
