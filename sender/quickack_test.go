//go:build linux

package sender

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/egress"
)

// nagleReceiver answers every request on a kept-alive connection as
// python's http.server does: Nagle's algorithm on, the header and the
// body in two writes. It counts the connections it accepted.
func nagleReceiver(tb testing.TB) (url string, conns *atomic.Int32) {
	conns = new(atomic.Int32)
	url = rawReceiver(tb, func(c net.Conn, br *bufio.Reader) {
		defer c.Close()
		conns.Add(1)
		_ = c.(*net.TCPConn).SetNoDelay(false)
		for {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
			_, _ = io.WriteString(c, "ok")
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
		}
	})
	return url, conns
}

// postBatch sends one small batch through c and checks the answer.
func postBatch(tb testing.TB, c *http.Client, url string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`[{"n":1}]`))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		tb.Fatalf("answer %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestDeliveryConnectionsAckAtOnce: the sender's connections re-arm
// TCP_QUICKACK after every request they send, so that a receiver that
// writes its answer's header and body apart with Nagle's algorithm on
// (python's http.server, Django's runserver) is not held up by a
// delayed ACK on each answer of a kept-alive connection.
// BenchmarkDeliverToNagleReceiver measures what it saves.
func TestDeliveryConnectionsAckAtOnce(t *testing.T) {
	url, conns := nagleReceiver(t)
	tr := NewTransport(1, nil, &egress.Guard{AllowPrivate: true})
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	before := ackArms.Load()
	const n = 5
	for range n {
		postBatch(t, c, url)
	}
	if got := ackArms.Load() - before; got < n {
		t.Errorf("TCP_QUICKACK armed %d times for %d requests, want once after each at least", got, n)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("%d connections for %d requests, want one kept alive", got, n)
	}
}

// BenchmarkDeliverToNagleReceiver: one delivery after another on a
// kept-alive connection to a receiver that answers as python's
// http.server does, through the sender's transport and through the
// same transport without TCP_QUICKACK.
//
//	go test -run '^$' -bench DeliverToNagleReceiver -benchtime 50x ./sender/
func BenchmarkDeliverToNagleReceiver(b *testing.B) {
	guard := &egress.Guard{AllowPrivate: true}
	plain := NewTransport(1, nil, guard)
	d := guard.DialContext(&net.Dialer{Timeout: 10 * time.Second})
	plain.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) { return d(ctx, network, addr) }
	for _, bb := range []struct {
		name string
		tr   *http.Transport
	}{
		{"transport=sender", NewTransport(1, nil, guard)},
		{"transport=without-quickack", plain},
	} {
		b.Run(bb.name, func(b *testing.B) {
			url, _ := nagleReceiver(b)
			c := &http.Client{Transport: bb.tr}
			defer bb.tr.CloseIdleConnections()
			postBatch(b, c, url) // the connection
			for b.Loop() {
				postBatch(b, c, url)
			}
		})
	}
}
