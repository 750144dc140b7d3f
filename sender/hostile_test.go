package sender

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// rawReceiver is a loopback receiver that speaks HTTP by hand, for
// answers net/http's server would never write. answer gets each
// connection once the request (headers and body) has been read from it;
// whatever it leaves, the connection is closed when the test ends.
func rawReceiver(tb testing.TB, answer func(c net.Conn, br *bufio.Reader)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				answer(c, br)
			})
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String() + "/hook"
}

// switchProtocols answers 101 Switching Protocols, then sends nothing
// and waits for the client to close the connection, which it reports on
// closed.
func switchProtocols(closed chan<- struct{}) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hookproxy-test\r\n\r\n")
		_, _ = io.Copy(io.Discard, br) // until the client closes (or the test ends)
		closed <- struct{}{}
	}
}

// TestSwitchingProtocolsEndsTheAttempt: a receiver that answers 101
// Switching Protocols gets the connection, which net/http hands over
// outside the request's context. Reading it would wait for ever, past
// the send timeout and through shutdown; the attempt must end at once,
// closing the connection.
func TestSwitchingProtocolsEndsTheAttempt(t *testing.T) {
	t.Run("delivery", func(t *testing.T) {
		closed := make(chan struct{}, 1)
		target := rawReceiver(t, switchProtocols(closed))
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{Retries: 5}).start()
		h.put(target, `{"n":1}`, jsonHeader())
		recv(t, closed, "the sender to close the switched connection")
		h.settle()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Reason != ReasonStatus || dls[0].LastStatus != http.StatusSwitchingProtocols {
			t.Fatalf("dead letters %+v, want one with reason %s after a 101", dls, ReasonStatus)
		}
	})

	t.Run("gone webhook", func(t *testing.T) {
		closed := make(chan struct{}, 1)
		app := rawReceiver(t, switchProtocols(closed))
		rc := newReceiver(t, failFirst(100, http.StatusGone))
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{GoneWebhook: app})
		notified := make(chan error, 10)
		h.snd.onGoneNotified = func(err error) { notified <- err }
		h.start()
		h.put(rc.URL, `{"n":1}`, jsonHeader())
		recv(t, closed, "the sender to close the switched connection")
		if err := recv(t, notified, "the gone webhook's end"); err == nil || !strings.Contains(err.Error(), "HTTP 101") {
			t.Fatalf("gone webhook: %v, want it given up after a 101", err)
		}
		h.settle()
	})
}

// TestResponseHeaderBound: a receiver whose answer has a header far
// larger than any webhook receiver needs (1 MiB here; net/http would
// take up to 10 MiB per attempt, on every worker at once) fails the
// attempt as a network error instead of being held in memory.
func TestResponseHeaderBound(t *testing.T) {
	target := rawReceiver(t, func(c net.Conn, _ *bufio.Reader) {
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+strings.Repeat(line, 1<<10)+"Content-Length: 0\r\n\r\n")
	})
	clk := newFakeClock(t0)
	st := openStore(t, t.TempDir(), clk)
	obs := &observed{}
	h := newHarness(t, clk, st, obs.options(Options{Retries: 0})).start()
	h.put(target, `{"n":1}`, jsonHeader())
	h.settle()
	dls := deadLetters(t, st)
	if len(dls) != 1 || dls[0].Reason != ReasonRetriesExhausted || dls[0].LastStatus != 0 ||
		!strings.Contains(dls[0].Detail, "exceeded 65536 bytes") {
		t.Fatalf("dead letters %+v, want one given up after a header over the bound", dls)
	}
	if outcomes, _ := obs.get(); len(outcomes) != 1 || outcomes[0] != OutcomeRetryable {
		t.Errorf("outcomes %v, want one %s", outcomes, OutcomeRetryable)
	}
}

// TestGoneWebhooksBounded: a burst of 410s (a receiver whose customer
// deleted every subscription) sends the gone webhooks at most
// Concurrency at a time, not one connection per target at once to the
// app.
func TestGoneWebhooksBounded(t *testing.T) {
	const targets, workers = 6, 2
	rc := newReceiver(t, failFirst(100, http.StatusGone))
	release := make(chan struct{})
	var (
		mu             sync.Mutex
		inFlight, peak int
	)
	app := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
	})
	h, notified, queued := goneBurstHarness(t, app, workers, targets)
	h.start()
	burst410(t, h, rc, app, queued, targets, workers)
	close(release)
	for range targets {
		if err := recv(t, notified, "a gone webhook's end"); err != nil {
			t.Fatalf("gone webhook: %v", err)
		}
	}
	h.settle()
	if n := len(app.got()); n != targets || peak > workers {
		t.Errorf("%d gone webhooks, at most %d at once; want %d, at most %d", n, peak, targets, workers)
	}
}

// TestQueuedGoneWebhooksDroppedAtShutdown: gone webhooks still waiting for
// their turn when shutdown begins are dropped, as their waits between
// tries are; Run returns once the POSTs in progress end, instead of
// sending the queued ones one turn after another.
func TestQueuedGoneWebhooksDroppedAtShutdown(t *testing.T) {
	const targets, workers = 5, 2
	rc := newReceiver(t, failFirst(100, http.StatusGone))
	release := make(chan struct{})
	app := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	h, notified, queued := goneBurstHarness(t, app, workers, targets)
	// Shutdown as run.go does it: the loop's context ends first, the
	// attempts' (which bounds each POST) later.
	ctx, stop := context.WithCancel(context.Background())
	attempts, cut := context.WithCancel(context.Background())
	defer cut()
	ran := make(chan error, 1)
	go func() { ran <- h.snd.Run(ctx, attempts) }()
	burst410(t, h, rc, app, queued, targets, workers)
	stop()
	for range targets - workers {
		if err := recv(t, notified, "a queued gone webhook's end"); !errors.Is(err, errShutdown) {
			t.Fatalf("queued gone webhook at shutdown: %v, want it dropped", err)
		}
	}
	close(release)
	if err := recv(t, ran, "Run to return"); err != nil {
		t.Fatal(err)
	}
	if n := len(app.got()); n != workers {
		t.Errorf("the app got %d gone webhooks, want the %d in progress when shutdown began", n, workers)
	}
}

// goneBurstHarness is a sender of workers workers whose gone webhook is
// app; notified gets the end of each gone webhook (nil: sent), queued a
// value for each one that waits for its turn.
func goneBurstHarness(t *testing.T, app *receiver, workers, targets int) (h *harness, notified chan error, queued chan struct{}) {
	t.Helper()
	clk := newFakeClock(t0)
	st := openStore(t, t.TempDir(), clk)
	h = newHarness(t, clk, st, Options{Concurrency: workers, GoneWebhook: app.URL})
	notified, queued = make(chan error, targets), make(chan struct{}, targets)
	h.snd.onGoneNotified = func(err error) { notified <- err }
	h.snd.onGoneQueued = func() { queued <- struct{}{} }
	return h, notified, queued
}

// burst410 puts a hook for each of targets targets of rc, which answers
// 410, and waits until workers gone webhooks have reached app and the
// others wait for their turn (reported on queued). h must be running.
func burst410(t *testing.T, h *harness, rc, app *receiver, queued chan struct{}, targets, workers int) {
	t.Helper()
	for i := range targets {
		h.put(rc.URL+"/"+strconv.Itoa(i), `{"n":1}`, jsonHeader())
	}
	for range workers {
		waitArrival(t, app)
	}
	for range targets - workers {
		recv(t, queued, "a gone webhook waiting for its turn")
	}
}
