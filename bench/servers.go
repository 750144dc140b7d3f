package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"hookproxy/quickack"
)

// hookMarker appears exactly once in every hook body the benchmark sends,
// so a receiver counts the hooks of a batch without decoding it.
const hookMarker = `"bench_hook"`

// server is an HTTP server of the benchmark's own on a loopback port.
type server struct {
	srv *http.Server
	ln  net.Listener
	url string // http://127.0.0.1:PORT
}

// startServer serves h on 127.0.0.1 with TCP_QUICKACK re-armed after each
// write, as hookproxy does (see quickackConn).
func startServer(h http.Handler) (*server, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s := &server{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		ln:  quickackListener{ln},
		url: "http://" + ln.Addr().String(),
	}
	go func() { _ = s.srv.Serve(s.ln) }()
	return s, nil
}

// close stops the server, waiting a little for requests in progress.
func (s *server) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
}

// quickackListener hands out connections that re-arm TCP_QUICKACK.
type quickackListener struct{ *net.TCPListener }

func (l quickackListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	qc := &quickackConn{TCPConn: c}
	qc.wrote.Store(true) // armed before the first read
	return qc, nil
}

// quickackConn re-arms TCP_QUICKACK before and after a read when it wrote
// since the last arm, as hookproxy's plain proxy connections do (about
// one system call per request): the references pay what hookproxy pays,
// no more.
type quickackConn struct {
	*net.TCPConn
	wrote   atomic.Bool
	writing atomic.Int32
}

func (c *quickackConn) Read(p []byte) (int, error) {
	c.arm()
	n, err := c.TCPConn.Read(p)
	c.arm()
	return n, err
}

func (c *quickackConn) Write(p []byte) (int, error) {
	c.writing.Add(1)
	n, err := c.TCPConn.Write(p)
	c.wrote.Store(true)
	c.writing.Add(-1)
	return n, err
}

// arm turns TCP_QUICKACK on if the connection wrote since the last arm,
// or is writing now (a read may return between a send and its flag).
func (c *quickackConn) arm() {
	if c.wrote.Swap(false) || c.writing.Load() > 0 {
		quickackArms.Add(1)
		quickack.On(c.TCPConn)
	}
}

// quickackArms counts the arms of every quickackConn, for tests.
var quickackArms atomic.Int64

// startNoop starts the no-op endpoint: used as the proxy address, it reads
// each request and answers 202 with a body like hookproxy's, doing nothing
// else. Same client, same absolute-form requests: what is left is the
// cost of HTTP on this machine.
func startNoop() (*server, error) {
	body := []byte(`{"hook_id":"00000000000000000000000000","status":"accepted"}`)
	return startServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(body)
	}))
}

// sink is a receiver. It answers every request with its status (after
// its delay) and counts requests, and separately the deliveries hookproxy
// makes (requests carrying an Idempotency-Key, which every hookproxy
// delivery has and nothing else the benchmark sends does) and the hooks
// they hold.
type sink struct {
	*server
	status int
	delay  time.Duration

	requests     atomic.Int64
	deliveries   atomic.Int64
	hooks        atomic.Int64
	lastDelivery atomic.Int64 // UnixNano of the last delivery's arrival
}

// startSink starts a receiver answering status after delay.
func startSink(status int, delay time.Duration) (*sink, error) {
	k := &sink{status: status, delay: delay}
	srv, err := startServer(http.HandlerFunc(k.serve))
	if err != nil {
		return nil, err
	}
	k.server = srv
	return k, nil
}

func (k *sink) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	k.requests.Add(1)
	if r.Header.Get("Idempotency-Key") != "" {
		// lastDelivery first: a waiter that sees the hooks sees the time.
		k.lastDelivery.Store(time.Now().UnixNano())
		k.deliveries.Add(1)
		k.hooks.Add(int64(bytes.Count(body, []byte(hookMarker))))
	}
	if k.delay > 0 {
		t := time.NewTimer(k.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(k.status)
	_, _ = io.WriteString(w, "ok\n")
}

// waitHooks waits until the sink has received at least n hooks from
// hookproxy; it gives up when deliveries stall for stallTimeout.
func (k *sink) waitHooks(ctx context.Context, n int64) error {
	return waitProgress(ctx, func() int64 { return k.hooks.Load() }, n,
		func() string { return fmt.Sprintf("receiver got %d of %d hooks", k.hooks.Load(), n) })
}

// stallTimeout is how long a wait for deliveries lasts without progress.
var stallTimeout = 20 * time.Second // a variable so that a test can wait less

// errTimeout is returned when a wait did not end in time.
var errTimeout = errors.New("timed out")

// waitProgress waits until count() reaches want, as long as it keeps
// growing: it fails after stallTimeout without progress.
func waitProgress(ctx context.Context, count func() int64, want int64, state func() string) error {
	last, lastChange := count(), time.Now()
	progressing := func() bool {
		c := count()
		if c != last {
			last, lastChange = c, time.Now()
		}
		return c >= want || time.Since(lastChange) > stallTimeout
	}
	if err := waitFor(ctx, time.Hour, progressing, state); err != nil {
		return err
	}
	if last < want {
		return fmt.Errorf("%s, none for %v: %w", state(), stallTimeout, errTimeout)
	}
	return nil
}

// waitFor polls cond until it holds, ctx ends or timeout passes; state
// describes the situation for the error.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool, state func() string) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s after %v: %w", state(), timeout, errTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
