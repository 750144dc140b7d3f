package sender

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"hookproxy/buffer"
	"hookproxy/egress"
)

// TestMain fails the package when a test leaves a goroutine behind, and
// fences DNS off: a target name a test means as a label is never looked
// up, so no delivery can leave the machine. /etc/hosts still answers for
// localhost.
func TestMain(m *testing.M) {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("the sender tests resolve no names through DNS")
	}}
	goleak.VerifyTestMain(m)
}

// guard bounds every wait in these tests; it only ever fires when a test
// is failing.
const guard = 10 * time.Second

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a Clock that moves only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clk      *fakeClock
	c        chan time.Time
	deadline time.Time
	active   bool
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clk: c, c: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock by d and fires the timers that are due; it
// returns how many fired.
func (c *fakeClock) Advance(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	fired := 0
	for _, t := range c.timers {
		if t.active && !t.deadline.After(c.now) {
			t.fireLocked()
			fired++
		}
	}
	return fired
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.active = false
	t.drainLocked()
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := t.active
	t.drainLocked()
	t.deadline = t.clk.now.Add(d)
	t.active = true
	if d <= 0 {
		t.fireLocked()
	}
	return was
}

func (t *fakeTimer) fireLocked() {
	t.active = false
	select {
	case t.c <- t.clk.now:
	default:
	}
}

func (t *fakeTimer) drainLocked() {
	select {
	case <-t.c:
	default:
	}
}

// received is one request as a receiver saw it.
type received struct {
	method string
	path   string // with the query
	header http.Header
	body   string
}

// receiver is a loopback webhook receiver that records every request.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
	// arrived gets a value for every request, once it is recorded.
	arrived chan received
}

// newReceiver starts a receiver; respond (nil: 200) answers the n-th
// request, counting from 1.
func newReceiver(tb testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	tb.Helper()
	rc := &receiver{arrived: make(chan received, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got := received{method: r.Method, path: r.URL.RequestURI(), header: r.Header.Clone(), body: string(body)}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, got)
		n := len(rc.reqs)
		rc.mu.Unlock()
		rc.arrived <- got
		if respond != nil {
			respond(n, w, r)
		}
	}))
	tb.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

// failFirst answers the first k requests with status and the rest 200.
func failFirst(k, status int) func(int, http.ResponseWriter, *http.Request) {
	return func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= k {
			w.WriteHeader(status)
		}
	}
}

// openStore opens a real Badger store in dir whose clock is clk.
func openStore(tb testing.TB, dir string, clk *fakeClock) *buffer.Store {
	tb.Helper()
	st, err := buffer.Open(buffer.Options{Dir: dir, Now: clk.Now, GCInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// claimOnly claims a batch of up to 10 hooks of the store's only target,
// as a sender's turn would before it sends.
func claimOnly(tb testing.TB, st *buffer.Store) *buffer.Batch {
	tb.Helper()
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 {
		tb.Fatalf("Targets = %v, %v", targets, err)
	}
	b, err := st.Claim(targets[0].ID, 10, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// harness runs a Sender under test and follows its loop.
type harness struct {
	tb    testing.TB
	clk   *fakeClock
	store *buffer.Store // nil when the Store is a stub
	snd   *Sender

	mu      sync.Mutex
	last    loopState
	seen    bool // the loop reported at least once
	reports chan struct{}

	cancel context.CancelFunc
	done   chan error
}

// attemptThenStop starts a sender with opts on a store in dir, captures
// one hook for url, lets its first attempt run, then stops the sender and
// closes the store: what a restart finds.
func attemptThenStop(tb testing.TB, clk *fakeClock, dir string, opts Options, url string) {
	tb.Helper()
	st := openStore(tb, dir, clk)
	h := newHarness(tb, clk, st, opts).start()
	h.put(url, `{"n":1}`, jsonHeader())
	h.settle()
	h.stop()
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
}

// newHarness builds a Sender on opts (Clock is set to clk; Store to st
// unless opts has one) and wires the store's notifications to it.
func newHarness(tb testing.TB, clk *fakeClock, st *buffer.Store, opts Options) *harness {
	tb.Helper()
	opts.Clock = clk
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Store == nil {
		opts.Store = st
	}
	if opts.Guard == nil {
		// The receivers are on loopback, which the zero guard refuses.
		opts.Guard = &egress.Guard{AllowPrivate: true}
	}
	snd, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	// The middle of the jitter range: exponential waits are exactly
	// RetryInterval, 2x, 4x... (below the cap) unless a test draws others.
	snd.rand = func() float64 { return 0.5 }
	h := &harness{tb: tb, clk: clk, store: st, snd: snd, reports: make(chan struct{}, 1)}
	snd.onIdle = h.report
	if st != nil {
		st.SetNotify(snd.Notify)
	}
	return h
}

// start runs the sender's loop until stop (or the end of the test).
func (h *harness) start() *harness {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.snd.Run(ctx, ctx) }()
	h.tb.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.tb.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.tb.Errorf("Run: %v", err)
		}
	case <-time.After(guard):
		h.tb.Fatal("Run did not return")
	}
}

func (h *harness) report(st loopState) {
	h.mu.Lock()
	h.last, h.seen = st, true
	h.mu.Unlock()
	select {
	case h.reports <- struct{}{}:
	default:
	}
}

// settle waits until the loop has seen every change made so far, has no
// batch being sent, and waits; it returns that state.
func (h *harness) settle() loopState {
	h.tb.Helper()
	return h.settleAt(time.Time{})
}

// settleAt is settle for a loop that must also have woken at or after
// now (after its timer fired).
func (h *harness) settleAt(now time.Time) loopState {
	h.tb.Helper()
	return h.await(now, false)
}

// caughtUp waits until the loop has seen every change made so far; it may
// still be sending.
func (h *harness) caughtUp() loopState {
	h.tb.Helper()
	return h.await(time.Time{}, true)
}

func (h *harness) await(now time.Time, busyOK bool) loopState {
	h.tb.Helper()
	h.snd.mu.Lock()
	want := h.snd.epoch
	h.snd.mu.Unlock()
	deadline := time.NewTimer(guard)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		st, seen := h.last, h.seen
		h.mu.Unlock()
		if seen && st.epoch >= want && (busyOK || st.busy == 0) && !st.now.Before(now) {
			return st
		}
		select {
		case <-h.reports:
		case <-deadline.C:
			h.tb.Fatalf("sender did not settle: last state %+v, want epoch %d at %v", st, want, now)
		}
	}
}

// advance moves the clock and, when that fired the loop's timer, waits
// for the loop to settle; it reports whether the timer fired.
func (h *harness) advance(d time.Duration) bool {
	h.tb.Helper()
	if h.clk.Advance(d) == 0 {
		return false
	}
	h.settleAt(h.clk.Now())
	return true
}

// put captures a hook as the proxy would.
func (h *harness) put(target, body string, header http.Header) {
	h.tb.Helper()
	putHook(h.tb, h.store, target, body, header)
}

func putHook(tb testing.TB, st *buffer.Store, target, body string, header http.Header) {
	tb.Helper()
	err := st.Put(context.Background(), &buffer.Hook{Target: target, Method: http.MethodPost, Header: header, Body: []byte(body)})
	if err != nil {
		tb.Fatal(err)
	}
}

// jsonHeader is what django-rest-hooks sends.
func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "User-Agent": {"python-requests/2.31.0"}}
}

// bodies returns n hook bodies {"n":1}...
func bodies(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, `{"n":`+strconv.Itoa(i)+`}`)
	}
	return out
}

func array(bodies []string) string { return "[" + strings.Join(bodies, ",") + "]" }

// pending returns how many hooks the store still holds.
func pending(tb testing.TB, st *buffer.Store) int {
	tb.Helper()
	return st.Stats().PendingHooks
}

// deadLetters lists every dead letter with its hooks.
func deadLetters(tb testing.TB, st *buffer.Store) []buffer.DeadLetter {
	tb.Helper()
	dls, err := st.ListDeadLetters(buffer.DeadLetterFilter{}, true)
	if err != nil {
		tb.Fatal(err)
	}
	return dls
}

// waitArrival waits for the next request of rc.
// twoWorkers starts a sender with 2 workers (one of them for slow and
// overtime attempts), a send timeout of 1m and 5 retries, on a new store.
func twoWorkers(tb testing.TB, clk *fakeClock) *harness {
	st := openStore(tb, tb.TempDir(), clk)
	return newHarness(tb, clk, st, Options{Concurrency: 2, SendTimeout: time.Minute, Retries: 5}).start()
}

// hangingReceiver is a receiver that reports each request's arrival on
// entered with name, then answers 503 once answer gives it a turn (nil:
// never), done closes or the request ends.
func hangingReceiver(tb testing.TB, name string, entered chan<- string, answer, done <-chan struct{}) *receiver {
	return newReceiver(tb, func(_ int, w http.ResponseWriter, r *http.Request) {
		entered <- name
		select {
		case <-answer:
		case <-done:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
}

// waitFor polls cond until it holds, for at most guard.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitArrival(tb testing.TB, rc *receiver) received {
	tb.Helper()
	select {
	case r := <-rc.arrived:
		return r
	case <-time.After(guard):
		tb.Fatal("no request arrived")
		return received{}
	}
}

// sameKey reports whether a and b carry the same Idempotency-Key, and a
// real one (a batch id of 26 characters): two missing keys are not the
// same batch.
func sameKey(a, b received) bool {
	k := a.header.Get("Idempotency-Key")
	return len(k) == 26 && k == b.header.Get("Idempotency-Key")
}

// recv receives from ch, failing the test when nothing comes within guard.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
