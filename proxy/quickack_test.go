package proxy

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestNoDelayedAckStall sends hook POSTs the way urllib3 does through a
// proxy (Nagle on, headers and body in separate writes) on one reused
// connection. Without TCP_QUICKACK re-armed on every read, each request
// waits ~40 ms for the proxy's delayed ACK before the body leaves the app.
func TestNoDelayedAckStall(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_QUICKACK is Linux-only")
	}
	const rounds = 11
	const limit = 20 * time.Millisecond // the stall is ~40 ms; a request takes well under 1 ms
	measure := func(t *testing.T, c *rawConn, head string, check func(*http.Response, []byte)) {
		_ = c.Conn.(*net.TCPConn).SetNoDelay(false) // as urllib3 does for proxy sockets
		var took []time.Duration
		for range rounds {
			start := time.Now()
			resp, body := c.send(t, http.MethodPost, head, hookBody)
			took = append(took, time.Since(start))
			check(resp, body)
		}
		slices.Sort(took)
		if median := took[rounds/2]; median > limit {
			t.Errorf("median request took %v (all: %v), want < %v: delayed-ACK stall", median, took, limit)
		}
	}
	t.Run("proxy request", func(t *testing.T) {
		tp := startProxy(t, Options{Store: &fakeStore{}})
		measure(t, dialRaw(t, tp.Addr),
			"POST http://receiver.example/t0 HTTP/1.1\r\nHost: receiver.example\r\nContent-Type: application/json\r\n"+
				"Content-Length: "+strconv.Itoa(len(hookBody))+"\r\n\r\n",
			func(resp *http.Response, body []byte) { assertAccepted(t, resp, body) })
	})
	t.Run("connect tunnel", func(t *testing.T) {
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, false)
		u, _ := url.Parse(rc.URL)
		tp := startProxy(t, Options{Store: &fakeStore{}})
		measure(t, connect(t, tp.Addr, u.Host),
			"POST /t0 HTTP/1.1\r\nHost: "+u.Host+"\r\nContent-Type: application/json\r\n"+
				"Content-Length: "+strconv.Itoa(len(hookBody))+"\r\n\r\n",
			func(resp *http.Response, body []byte) {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
			})
	})
}
