package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"hookproxy/buffer"
)

// t0 is the fixed start of every test clock.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable time source shared by the store and the server.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// openStore opens a real Badger store in a temporary directory.
func openStore(tb testing.TB, clk *clock) *buffer.Store {
	tb.Helper()
	return openStoreWith(tb, buffer.Options{Now: clk.Now})
}

// openStoreWith is openStore with opts (Dir and GCInterval are set here).
func openStoreWith(tb testing.TB, opts buffer.Options) *buffer.Store {
	tb.Helper()
	opts.Dir, opts.GCInterval = tb.TempDir(), -1
	st, err := buffer.Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Error(err)
		}
	})
	return st
}

// put captures one hook per body for target and returns their ids.
func put(tb testing.TB, st *buffer.Store, target string, bodies ...string) []string {
	tb.Helper()
	ids := make([]string, len(bodies))
	for i, b := range bodies {
		h := &buffer.Hook{Target: target, Method: "POST", Body: []byte(b),
			Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Token s3cret"}}}
		if err := st.Put(context.Background(), h); err != nil {
			tb.Fatal(err)
		}
		ids[i] = h.ID
	}
	return ids
}

// targetOf returns the id of target's record.
func targetOf(tb testing.TB, st *buffer.Store, target string) buffer.TargetID {
	tb.Helper()
	sts, err := st.Targets()
	if err != nil {
		tb.Fatal(err)
	}
	for _, s := range sts {
		if s.URL == target {
			return s.ID
		}
	}
	tb.Fatalf("no target %s", target)
	return 0
}

// fail claims target's next batch of at most n hooks and records a failed
// attempt with status, the next one due after retry.
func fail(tb testing.TB, st *buffer.Store, clk *clock, target string, n, status int, retry time.Duration) *buffer.Batch {
	tb.Helper()
	id := targetOf(tb, st, target)
	b, err := st.Claim(id, n, 0)
	if err != nil {
		tb.Fatal(err)
	}
	now := clk.Now()
	if err := st.RecordAttempt(id, b.ID, buffer.Failure{At: now, Status: status, Error: http.StatusText(status), Next: now.Add(retry)}); err != nil {
		tb.Fatal(err)
	}
	return b
}

// kill claims target's next batch of at most n hooks and gives it up with
// reason after an attempt that got status; it returns the dead letter id.
func kill(tb testing.TB, st *buffer.Store, clk *clock, target string, n int, reason string, status int) string {
	tb.Helper()
	id := targetOf(tb, st, target)
	b, err := st.Claim(id, n, 0)
	if err != nil {
		tb.Fatal(err)
	}
	f := buffer.Failure{At: clk.Now(), Status: status, Error: "HTTP " + http.StatusText(status)}
	if _, err := st.GiveUp(id, b.ID, reason, f, buffer.NextClaim{}); err != nil {
		tb.Fatal(err)
	}
	return b.ID
}

// serve runs an admin server for opts on a loopback listener.
func serve(tb testing.TB, opts Options) (*Server, string) {
	tb.Helper()
	srv, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	tb.Cleanup(ts.Close)
	return srv, ts.URL
}

// progress is a Progress whose answer the test sets.
type progress struct {
	mu      sync.Mutex
	overdue time.Duration
	asked   time.Time
}

func (p *progress) OldestDue(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = now
	return p.overdue
}

func (p *progress) set(d time.Duration) {
	p.mu.Lock()
	p.overdue = d
	p.mu.Unlock()
}
