//go:build linux

package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"hookproxy/buffer"
)

// quickackOn reads TCP_QUICKACK of an accepted socket. Linux reports it
// off while the connection is in delayed-ACK ("pingpong") mode, which it
// enters once it has answered anything promptly (a request, a CONNECT):
// on a kept-alive connection whose flag is not re-armed on every read it
// reads off from then on, and python requests (Nagle on, headers and
// body written separately) waits ~40 ms for our delayed ACK before it
// sends each body. (Without the re-arm this test fails on every request
// after the first, and on the first inside a tunnel.)
func quickackOn(tb testing.TB, c net.Conn) bool {
	tb.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
	}); err != nil {
		tb.Fatal(err)
	}
	if gerr != nil {
		tb.Fatalf("getsockopt TCP_QUICKACK: %v", gerr)
	}
	return v == 1
}

// gate holds each request where the test can look at the proxy's
// socket: after the proxy has read the whole request, before it answers.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) hold(ctx context.Context) error {
	select {
	case g.entered <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gateStore is a Store whose every Put waits at a gate.
type gateStore struct {
	*gate
	n atomic.Int64
}

func (s *gateStore) Put(ctx context.Context, h *buffer.Hook) error {
	if err := s.hold(ctx); err != nil {
		return err
	}
	h.ID = "G" + strconv.FormatInt(s.n.Add(1), 10)
	return nil
}

// TestQuickackRearmedOnEveryRead checks, on a kept-alive connection,
// that TCP_QUICKACK is on each time the proxy has just read a request:
// a plain proxy request, a request relayed through a CONNECT tunnel and
// one inside an intercepted tunnel (TLS read through the same wrapper).
// The request is written whole, so no delayed-ACK timer runs out and
// leaves pingpong mode on its own, which would hide a missing re-arm.
func TestQuickackRearmedOnEveryRead(t *testing.T) {
	const rounds = 6
	// drive sends rounds requests on c; g holds each one while the check
	// runs.
	drive := func(t *testing.T, tp *testProxy, c *rawConn, g *gate, request string, wantStatus int) {
		t.Helper()
		type answer struct {
			status int
			err    error
		}
		for i := range rounds {
			answered := make(chan answer, 1)
			go func() {
				if _, err := io.WriteString(c, request); err != nil {
					answered <- answer{err: err}
					return
				}
				resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodPost})
				if err != nil {
					answered <- answer{err: err}
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				answered <- answer{resp.StatusCode, err}
			}()
			recv(t, g.entered, "the request")
			if !quickackOn(t, tp.listener.conn(t, 0)) {
				t.Errorf("request %d: TCP_QUICKACK is off after the proxy read the request", i)
			}
			g.release <- struct{}{}
			if a := recv(t, answered, "the answer"); a.err != nil || a.status != wantStatus {
				t.Fatalf("request %d: %d %v, want %d", i, a.status, a.err, wantStatus)
			}
		}
	}

	t.Run("proxy request", func(t *testing.T) {
		g := newGate()
		tp := startProxy(t, Options{Store: &gateStore{gate: g}})
		drive(t, tp, dialRaw(t, tp.Addr), g, post("receiver.example", "http://receiver.example/t0"), http.StatusAccepted)
	})
	t.Run("connect tunnel", func(t *testing.T) {
		g := newGate()
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
			if g.hold(r.Context()) == nil {
				_, _ = io.WriteString(w, "ok")
			}
		}, false)
		u, _ := url.Parse(rc.URL)
		tp := startProxy(t, Options{Store: &fakeStore{}})
		drive(t, tp, connect(t, tp.Addr, u.Host), g, post(u.Host, "/t0"), http.StatusOK)
	})
	t.Run("intercepted tunnel", func(t *testing.T) {
		g := newGate()
		ca := newCA(t)
		tp := startProxy(t, Options{Store: &gateStore{gate: g}, TLSConfig: ca.TLSConfig})
		drive(t, tp, intercepted(t, tp, ca, "hooks.example:443"), g, post("hooks.example", "/t0"), http.StatusAccepted)
	})
}

// TestQuickackArmsPerRequest checks that keeping TCP_QUICKACK on costs
// about one system call per request on a kept-alive proxy connection, not
// two per read: only a write puts the socket back in delayed-ACK mode, so
// only a write calls for a re-arm. (Arming around every read costs about
// six per request here: the request read, net/http's background read and
// the read of the next request each arm twice.)
func TestQuickackArmsPerRequest(t *testing.T) {
	const requests = 20
	tp := startProxy(t, Options{Store: &fakeStore{}})
	before := quickackArms.Load() // before the server's first read can arm
	c := dialRaw(t, tp.Addr)
	request := post("receiver.example", "http://receiver.example/t0")
	for i := range requests {
		if _, err := io.WriteString(c, request); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: %d %v", i, resp.StatusCode, err)
		}
	}
	arms := quickackArms.Load() - before
	t.Logf("TCP_QUICKACK armed %d times for %d requests", arms, requests)
	// The first read arms once, each response once, and a read that
	// overlaps a response's write (the background read) may add one.
	if max := int64(2 * requests); arms > max {
		t.Errorf("TCP_QUICKACK armed %d times for %d requests, want at most %d", arms, requests, max)
	}
	if arms < requests {
		t.Errorf("TCP_QUICKACK armed %d times for %d requests: each response needs a re-arm", arms, requests)
	}
}
