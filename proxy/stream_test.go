package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUnknownLengthResponseStreams: a response of unknown length (chunked)
// reaches the app as the receiver sends it, not once 512 B / 4 KiB have
// piled up in net/http.
func TestUnknownLengthResponseStreams(t *testing.T) {
	for _, tt := range []struct {
		name, sent string
		want       int
	}{
		{"first chunk", "5\r\nfirst\r\n", 5},
		{"past the sniff buffer", "3e8\r\n" + strings.Repeat("a", 1000) + "\r\n4\r\ntick\r\n", 1004},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			up := newTCPServer(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.sent)
				<-release // the rest comes later (a long poll, a progress stream)
				_, _ = io.WriteString(c, "0\r\n\r\n")
			})
			defer close(release)
			tp := startProxy(t, Options{Store: &fakeStore{}})
			c := dialRaw(t, tp.Addr)
			addr := up.Addr().String()
			_, _ = io.WriteString(c, "GET http://"+addr+"/stream HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(testTimeout))
			resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("no response head within %v; the receiver sent head and %d body bytes: %v", testTimeout, tt.want, err)
			}
			got := make([]byte, tt.want)
			if n, err := io.ReadFull(resp.Body, got); err != nil {
				t.Fatalf("got %d of the %d body bytes the receiver sent: %v", n, tt.want, err)
			}
		})
	}
}

// upgradeWS sends a websocket upgrade through tp to a receiver served by
// handle (after it has read the request) and returns the app's connection
// once the 101 is read.
func upgradeWS(t *testing.T, tp *testProxy, handle func(net.Conn, *bufio.Reader)) *rawConn {
	t.Helper()
	up := newTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		handle(c, br)
	})
	c := dialRaw(t, tp.Addr)
	addr := up.Addr().String()
	_, _ = io.WriteString(c, "GET http://"+addr+"/ws HTTP/1.1\r\nHost: "+addr+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c
}

// TestWebSocketEndReachesApp: when the receiver ends a websocket, the app's
// connection ends too.
func TestWebSocketEndReachesApp(t *testing.T) {
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: 300 * time.Millisecond})
	c := upgradeWS(t, tp, func(c net.Conn, _ *bufio.Reader) {
		_, _ = io.WriteString(c, "bye") // and the receiver closes
	})
	got := make([]byte, 3)
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "bye" {
		t.Fatalf("read %q %v", got, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := c.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("receiver closed the websocket; %v later the app's connection: read %d, %v; want EOF", testTimeout, n, err)
	}
}

// TestWebSocketAppCloseReleasesConn: when the app ends a websocket, the
// proxy closes its side of the app's connection instead of holding it
// (CLOSE_WAIT) until Shutdown.
func TestWebSocketAppCloseReleasesConn(t *testing.T) {
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := upgradeWS(t, tp, func(_ net.Conn, br *bufio.Reader) { _, _ = io.Copy(io.Discard, br) })
	tracked := func() int {
		tp.conns.mu.Lock()
		defer tp.conns.mu.Unlock()
		return len(tp.conns.conns)
	}
	// The 101 reaches the app just before net/http reports the hijack.
	for deadline := time.Now().Add(testTimeout); tracked() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("upgraded connection never tracked")
		}
	}
	_ = c.Close()
	for deadline := time.Now().Add(testTimeout); tracked() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("app closed its websocket %v ago; proxy still holds %d hijacked connection(s) open", testTimeout, tracked())
		}
	}
}

// TestUpgradeOtherThanWebSocket: a request to switch to a protocol other
// than websocket either reaches the receiver as an upgrade request
// (Connection: Upgrade, which route sets) with the 101 relayed, or the
// upgrade is declined and the receiver sees no Upgrade. A bare Upgrade (RFC
// 9110 7.8) is neither.
func TestUpgradeOtherThanWebSocket(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := newTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		seen <- req.Header
		if req.Header.Get("Upgrade") == "" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\nhello")
		_, _ = io.Copy(io.Discard, br)
	})
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := dialRaw(t, tp.Addr)
	addr := up.Addr().String()
	_, _ = io.WriteString(c, "GET http://"+addr+"/up HTTP/1.1\r\nHost: "+addr+"\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n")
	if h := recv(t, seen, "the request"); h.Get("Upgrade") != "" && !strings.EqualFold(h.Get("Connection"), "upgrade") {
		t.Errorf("receiver got Upgrade %q with Connection %q", h.Get("Upgrade"), h.Get("Connection"))
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		got := make([]byte, 5)
		if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "hello" {
			t.Fatalf("app got a 101 but not the upgraded bytes: %q %v", got, err)
		}
	}
}

// TestHostPatternForms: python requests sends an internationalized host in
// its ASCII (punycode) form and an IPv6 literal as the subscriber wrote it;
// a pattern that New accepts and that names the same host must select it.
func TestHostPatternForms(t *testing.T) {
	for _, tt := range []struct{ pattern, wireHost string }{
		{"bücher.example", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"}, // control: passes
		{"2001:db8::1", "[2001:0db8:0:0::1]"},
	} {
		t.Run(tt.pattern, func(t *testing.T) {
			upstream := &recordingTransport{}
			store := &fakeStore{}
			tp := startProxy(t, Options{Store: store, CaptureHosts: []string{tt.pattern}, Transport: upstream})
			c := dialRaw(t, tp.Addr)
			resp, body := c.send(t, http.MethodPost,
				"POST http://"+tt.wireHost+"/hook HTTP/1.1\r\nHost: "+tt.wireHost+"\r\n"+
					"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n", "{}")
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("pattern %q, hook to %s: status %d %s, want 202; upstream got %d requests, store %d puts",
					tt.pattern, tt.wireHost, resp.StatusCode, body, upstream.count(), store.putCount())
			}
		})
	}
}

// TestPassThroughKeepsContentLength: a pass-through response reaches the
// app with the receiver's Content-Length, on a GET and on a HEAD (goproxy
// drops it from a response whose body a filter replaced).
func TestPassThroughKeepsContentLength(t *testing.T) {
	const size = 10000
	up := newRawHTTPServer(t, func(c net.Conn, req *http.Request) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		if req.Method != http.MethodHead {
			_, _ = io.WriteString(c, strings.Repeat("a", size))
		}
	})
	tp := startProxy(t, Options{Store: &fakeStore{}})
	addr := up.Addr().String()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			c := dialRaw(t, tp.Addr)
			resp, body := c.send(t, method, method+" http://"+addr+"/file HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
			if resp.ContentLength != size || len(resp.TransferEncoding) != 0 {
				t.Errorf("%s: app got ContentLength %d TransferEncoding %v, body %d bytes; receiver sent Content-Length: %d",
					method, resp.ContentLength, resp.TransferEncoding, len(body), size)
			}
		})
	}
}
