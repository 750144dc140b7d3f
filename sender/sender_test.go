package sender

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/buffer"
)

// checkBatchHeaders checks the headers every batch POST carries and
// returns its batch id.
func checkBatchHeaders(t *testing.T, r received, size string) string {
	t.Helper()
	if r.method != http.MethodPost {
		t.Errorf("method = %s, want POST", r.method)
	}
	for name, want := range map[string]string{
		"Content-Type":           "application/json",
		"User-Agent":             "hookproxy",
		"X-Hookproxy-Batch-Size": size,
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	id := r.header.Get("Idempotency-Key")
	if id == "" || r.header.Get("X-Hookproxy-Batch-Id") != id {
		t.Errorf("Idempotency-Key = %q, X-Hookproxy-Batch-Id = %q: want the same batch id", id, r.header.Get("X-Hookproxy-Batch-Id"))
	}
	return id
}

func TestSizeBatches(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 3, BatchMaxWait: time.Minute}).start()

	for _, b := range bodies(1, 7) {
		h.put(rc.URL+"/hooks", b, jsonHeader())
	}
	state := h.settle()
	got := rc.got()
	if len(got) != 2 {
		t.Fatalf("got %d POSTs before BatchMaxWait, want 2", len(got))
	}
	if want := t0.Add(time.Minute); !state.next.Equal(want) {
		t.Errorf("remainder due at %v, want %v", state.next, want)
	}
	if h.advance(time.Minute - time.Millisecond) {
		t.Error("timer fired before BatchMaxWait")
	}
	if len(rc.got()) != 2 {
		t.Fatal("remainder sent before BatchMaxWait")
	}
	if !h.advance(time.Millisecond) {
		t.Fatal("no timer fired at BatchMaxWait")
	}

	got = rc.got()
	if len(got) != 3 {
		t.Fatalf("got %d POSTs, want 3", len(got))
	}
	ids := map[string]bool{}
	for i, want := range []struct {
		body, size string
	}{
		{array(bodies(1, 3)), "3"},
		{array(bodies(4, 6)), "3"},
		{array(bodies(7, 7)), "1"},
	} {
		if got[i].body != want.body {
			t.Errorf("POST %d body = %s, want %s", i+1, got[i].body, want.body)
		}
		if got[i].path != "/hooks" {
			t.Errorf("POST %d path = %s, want /hooks", i+1, got[i].path)
		}
		ids[checkBatchHeaders(t, got[i], want.size)] = true
	}
	if len(ids) != 3 {
		t.Errorf("batch ids %v: want 3 different", ids)
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks still pending", n)
	}
}

// ackCounter is the real store, counting the acks that also claimed the
// target's next batch.
type ackCounter struct {
	*buffer.Store
	claimed atomic.Int64
}

func (c *ackCounter) Ack(id buffer.TargetID, batchID string, next buffer.NextClaim) (buffer.TargetStatus, error) {
	st, err := c.Store.Ack(id, batchID, next)
	if err == nil && st.InFlight != nil {
		c.claimed.Add(1)
	}
	return st, err
}

// TestBacklogClaimsWithAck: with a backlog, the ack of a batch claims the
// next full one (one write per batch instead of two), and the batches
// still go out in order, whole, each with its own id.
func TestBacklogClaimsWithAck(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		hooks     int
		want      []string // bodies of the POSTs, in order
		ackClaims int64
	}{
		{"size", Options{BatchSize: 3, BatchMaxWait: time.Minute}, 7,
			[]string{array(bodies(1, 3)), array(bodies(4, 6))}, 1},
		{"no batching", Options{}, 3, bodies(1, 3), 2},
		// A time window waits for its own due time: no claim ahead of it.
		{"time", Options{BatchTime: time.Minute}, 3, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			rc := newReceiver(t, nil)
			st := openStore(t, t.TempDir(), clk)
			for _, b := range bodies(1, tc.hooks) {
				putHook(t, st, rc.URL+"/hooks", b, jsonHeader())
			}
			counter := &ackCounter{Store: st}
			opts := tc.opts
			opts.Store = counter
			h := newHarness(t, clk, st, opts).start()
			h.settle()
			got := rc.got()
			var gotBodies []string
			ids := map[string]bool{}
			for _, r := range got {
				gotBodies = append(gotBodies, r.body)
				ids[r.header.Get("Idempotency-Key")] = true
			}
			if !slices.Equal(gotBodies, tc.want) {
				t.Fatalf("POSTs = %v, want %v", gotBodies, tc.want)
			}
			if len(ids) != len(got) {
				t.Errorf("idempotency keys %v: want %d different", ids, len(got))
			}
			if n := counter.claimed.Load(); n != tc.ackClaims {
				t.Errorf("acks that claimed the next batch = %d, want %d", n, tc.ackClaims)
			}
		})
	}
}

// TestBacklogTakesTurns: in time mode, a target with a backlog whose
// windows ended long ago goes behind the other targets already due once
// it has had its turn, as a full batch claimed by the ack does, and
// stays there when more hooks come in for it; with one worker it would
// otherwise hold it until its backlog was gone.
func TestBacklogTakesTurns(t *testing.T) {
	clk := newFakeClock(t0)
	st := openStore(t, t.TempDir(), clk)
	var rc *receiver
	rc = newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/b" {
			// a is waiting for its next turn, behind c.
			hook := &buffer.Hook{Target: rc.URL + "/a", Method: http.MethodPost, Header: jsonHeader(), Body: []byte(`{"late":1}`)}
			if err := st.Put(context.Background(), hook); err != nil {
				t.Error(err)
			}
		}
	})
	for _, b := range bodies(1, 50) {
		putHook(t, st, rc.URL+"/a", b, jsonHeader())
	}
	clk.Advance(time.Second)
	putHook(t, st, rc.URL+"/b", `{"n":1}`, jsonHeader())
	clk.Advance(time.Second)
	putHook(t, st, rc.URL+"/c", `{"n":1}`, jsonHeader())
	// Every window ended a while ago (a restart after an outage, say).
	clk.Advance(time.Hour)
	h := newHarness(t, clk, st, Options{Concurrency: 1, BatchTime: 10 * time.Second, MaxBatchHooks: 5}).start()
	h.settle()

	var got []string
	for _, r := range rc.got() {
		got = append(got, r.path)
	}
	want := []string{"/a", "/b", "/c", "/a", "/a", "/a", "/a", "/a", "/a", "/a", "/a", "/a"}
	if !slices.Equal(got, want) {
		t.Errorf("targets in the order sent = %v, want %v", got, want)
	}
}

// TestBacklogIsNoStall: a target with a backlog whose windows ended long
// ago counts as overdue from the end of its last turn, not from its
// oldest hook's window: while the workers drain backlogs, OldestDue (the
// stall check of /readyz) stays small.
func TestBacklogIsNoStall(t *testing.T) {
	clk := newFakeClock(t0)
	st := openStore(t, t.TempDir(), clk)
	entered := make(chan struct{}, 1)
	rc := newReceiver(t, func(n int, _ http.ResponseWriter, r *http.Request) {
		if n == 3 {
			entered <- struct{}{}
			<-r.Context().Done() // until the sender stops
		}
	})
	for _, b := range bodies(1, 20) {
		putHook(t, st, rc.URL+"/a", b, jsonHeader())
		putHook(t, st, rc.URL+"/b", b, jsonHeader())
	}
	clk.Advance(time.Hour)
	h := newHarness(t, clk, st, Options{Concurrency: 1, BatchTime: 10 * time.Second, MaxBatchHooks: 5}).start()
	// a, b, then a again: b waits from the end of its first turn.
	recv(t, entered, "the third batch")
	clk.Advance(time.Second)
	if d := h.snd.OldestDue(clk.Now()); d != time.Second {
		t.Errorf("OldestDue while both targets take turns = %v, want 1s", d)
	}
}

func TestTimeBatches(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchTime: 10 * time.Second}).start()

	h.put(rc.URL, `{"n":1}`, jsonHeader())
	if state := h.settle(); !state.next.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("window ends at %v, want %v", state.next, t0.Add(10*time.Second))
	}
	h.advance(4 * time.Second)
	h.put(rc.URL, `{"n":2}`, jsonHeader())
	// The second hook does not move the window its target opened.
	if state := h.settle(); !state.next.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("window ends at %v, want %v", state.next, t0.Add(10*time.Second))
	}
	if h.advance(6*time.Second - time.Millisecond) {
		t.Error("timer fired before the window ended")
	}
	if n := len(rc.got()); n != 0 {
		t.Fatalf("got %d POSTs before the window ended, want 0", n)
	}
	if !h.advance(time.Millisecond) {
		t.Fatal("no timer fired when the window ended")
	}
	got := rc.got()
	if len(got) != 1 || got[0].body != array(bodies(1, 2)) {
		t.Fatalf("got %+v, want one POST of %s", got, array(bodies(1, 2)))
	}
	checkBatchHeaders(t, got[0], "2")

	// The next hook opens a new window.
	h.put(rc.URL, `{"n":3}`, jsonHeader())
	if state := h.settle(); !state.next.Equal(t0.Add(20 * time.Second)) {
		t.Errorf("new window ends at %v, want %v", state.next, t0.Add(20*time.Second))
	}
	h.advance(10 * time.Second)
	if got := rc.got(); len(got) != 2 || got[1].body != `[{"n":3}]` {
		t.Fatalf("got %+v, want a second POST of [{\"n\":3}]", got)
	}
}

func TestMixedBatches(t *testing.T) {
	clk := newFakeClock(t0)
	full := newReceiver(t, nil)
	slow := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 3, BatchTime: 10 * time.Second}).start()

	// slow never fills up: its window ends it. full fills up at once.
	h.put(slow.URL, `{"n":1}`, jsonHeader())
	h.put(slow.URL, `{"n":2}`, jsonHeader())
	for _, b := range bodies(1, 4) {
		h.put(full.URL, b, jsonHeader())
	}
	h.settle()
	if got := full.got(); len(got) != 1 || got[0].body != array(bodies(1, 3)) {
		t.Fatalf("full target got %+v, want one POST of %s before the window ended", got, array(bodies(1, 3)))
	}
	if n := len(slow.got()); n != 0 {
		t.Fatalf("slow target got %d POSTs before its window ended", n)
	}
	h.advance(10 * time.Second)
	if got := slow.got(); len(got) != 1 || got[0].body != array(bodies(1, 2)) {
		t.Fatalf("slow target got %+v, want one POST of %s", got, array(bodies(1, 2)))
	}
	if got := full.got(); len(got) != 2 || got[1].body != `[{"n":4}]` {
		t.Fatalf("full target got %+v, want its remainder after the window", got)
	}
}

func TestNoBatching(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{}).start()

	target := rc.URL + "/hook/7?token=abc"
	hooks := []buffer.Hook{
		{Method: http.MethodPost, Body: []byte(`{"hook":1}`),
			Header: http.Header{"Content-Type": {"application/json"}, "User-Agent": {"python-requests/2.31.0"}, "X-Custom": {"one"}}},
		{Method: http.MethodPut, Body: []byte(`not json`), Header: http.Header{"Content-Type": {"text/plain"}}},
		{Method: http.MethodPost, Body: []byte(`{"hook":3}`)},
	}
	for i := range hooks {
		hooks[i].Target = target
		if err := st.Put(context.Background(), &hooks[i]); err != nil {
			t.Fatal(err)
		}
	}
	h.settle()
	got := rc.got()
	if len(got) != len(hooks) {
		t.Fatalf("got %d requests, want %d", len(got), len(hooks))
	}
	ids := map[string]bool{}
	for i, want := range []struct {
		method, body, ua string
		header           map[string]string
	}{
		{"POST", `{"hook":1}`, "python-requests/2.31.0", map[string]string{"Content-Type": "application/json", "X-Custom": "one"}},
		{"PUT", `not json`, "hookproxy", map[string]string{"Content-Type": "text/plain"}},
		{"POST", `{"hook":3}`, "hookproxy", map[string]string{"Content-Type": ""}},
	} {
		r := got[i]
		if r.method != want.method || r.body != want.body || r.path != "/hook/7?token=abc" {
			t.Errorf("request %d = %s %s %q, want %s /hook/7?token=abc %q", i+1, r.method, r.path, r.body, want.method, want.body)
		}
		if ua := r.header.Get("User-Agent"); ua != want.ua {
			t.Errorf("request %d User-Agent = %q, want %q", i+1, ua, want.ua)
		}
		for k, v := range want.header {
			if got := r.header.Get(k); got != v {
				t.Errorf("request %d %s = %q, want %q", i+1, k, got, v)
			}
		}
		id := r.header.Get("Idempotency-Key")
		if id == "" || r.header.Get("X-Hookproxy-Batch-Id") != id {
			t.Errorf("request %d: Idempotency-Key %q, X-Hookproxy-Batch-Id %q", i+1, id, r.header.Get("X-Hookproxy-Batch-Id"))
		}
		if r.header.Get("X-Hookproxy-Batch-Size") != "" {
			t.Errorf("request %d carries X-Hookproxy-Batch-Size", i+1)
		}
		ids[id] = true
	}
	if len(ids) != len(hooks) {
		t.Errorf("ids %v: want one per hook", ids)
	}
}

// observed records what OnAttempt and OnGivenUp report.
type observed struct {
	mu       sync.Mutex
	outcomes []string
	gaveUp   []string
}

func (o *observed) options(opts Options) Options {
	opts.OnAttempt = func(outcome string, _ int, _ time.Duration, _ int) {
		o.mu.Lock()
		o.outcomes = append(o.outcomes, outcome)
		o.mu.Unlock()
	}
	opts.OnGivenUp = func(reason string, _ int) {
		o.mu.Lock()
		o.gaveUp = append(o.gaveUp, reason)
		o.mu.Unlock()
	}
	return opts
}

func (o *observed) get() (outcomes, gaveUp []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.outcomes...), append([]string(nil), o.gaveUp...)
}

func TestRetries(t *testing.T) {
	const interval = 5 * time.Second

	// runFailing sends one hook to rc with Retries retries and walks the
	// clock through every retry, checking none comes early.
	runFailing := func(t *testing.T, rc *receiver, opts Options, attempts int) (*buffer.Store, *observed) {
		t.Helper()
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		obs := &observed{}
		opts.RetryInterval = interval
		opts.Backoff = BackoffFixed
		h := newHarness(t, clk, st, obs.options(opts)).start()
		h.put(rc.URL, `{"n":1}`, jsonHeader())
		h.settle()
		for n := 2; n <= attempts; n++ {
			if h.advance(interval - time.Millisecond) {
				t.Fatalf("timer fired before RetryInterval passed (attempt %d)", n)
			}
			if got := len(rc.got()); got != n-1 {
				t.Fatalf("%d attempts before RetryInterval passed, want %d", got, n-1)
			}
			if !h.advance(time.Millisecond) {
				t.Fatalf("no timer fired for attempt %d", n)
			}
			if got := len(rc.got()); got != n {
				t.Fatalf("%d attempts, want %d", got, n)
			}
		}
		h.advance(time.Hour) // no further attempt
		got := rc.got()
		if len(got) != attempts {
			t.Fatalf("%d attempts, want %d", len(got), attempts)
		}
		for _, r := range got {
			if key := r.header.Get("Idempotency-Key"); key == "" || key != got[0].header.Get("Idempotency-Key") {
				t.Errorf("Idempotency-Key %q, first attempt had %q", key, got[0].header.Get("Idempotency-Key"))
			}
		}
		return st, obs
	}

	t.Run("recovers", func(t *testing.T) {
		rc := newReceiver(t, failFirst(2, http.StatusInternalServerError))
		st, obs := runFailing(t, rc, Options{BatchSize: 1, Retries: 3}, 3)
		if n := pending(t, st); n != 0 {
			t.Errorf("%d hooks pending after delivery", n)
		}
		if dls := deadLetters(t, st); len(dls) != 0 {
			t.Errorf("dead letters %+v, want none", dls)
		}
		outcomes, _ := obs.get()
		if want := []string{"retryable", "retryable", "delivered"}; strings.Join(outcomes, ",") != strings.Join(want, ",") {
			t.Errorf("outcomes %v, want %v", outcomes, want)
		}
	})

	t.Run("exhausted", func(t *testing.T) {
		rc := newReceiver(t, failFirst(100, http.StatusServiceUnavailable))
		st, obs := runFailing(t, rc, Options{BatchSize: 1, Retries: 2}, 3)
		dls := deadLetters(t, st)
		if len(dls) != 1 {
			t.Fatalf("got %d dead letters, want 1", len(dls))
		}
		dl := dls[0]
		if dl.ID != rc.got()[0].header.Get("Idempotency-Key") || dl.Reason != ReasonRetriesExhausted ||
			dl.Detail != "HTTP 503 Service Unavailable" || dl.LastStatus != 503 || dl.Attempts != 3 ||
			len(dl.Hooks) != 1 || string(dl.Hooks[0].Body) != `{"n":1}` {
			t.Errorf("dead letter %+v", dl)
		}
		if n := pending(t, st); n != 0 {
			t.Errorf("%d hooks pending after give-up", n)
		}
		if _, gaveUp := obs.get(); len(gaveUp) != 1 || gaveUp[0] != ReasonRetriesExhausted {
			t.Errorf("OnGivenUp saw %v", gaveUp)
		}
	})

	t.Run("discard", func(t *testing.T) {
		rc := newReceiver(t, failFirst(100, http.StatusInternalServerError))
		st, obs := runFailing(t, rc, Options{BatchSize: 1, Retries: 1, OnGiveUp: GiveUpDiscard}, 2)
		if dls := deadLetters(t, st); len(dls) != 0 {
			t.Errorf("dead letters %+v, want none with discard", dls)
		}
		if n := pending(t, st); n != 0 {
			t.Errorf("%d hooks pending after discard", n)
		}
		if _, gaveUp := obs.get(); len(gaveUp) != 1 {
			t.Errorf("OnGivenUp saw %v", gaveUp)
		}
	})

	t.Run("network error", func(t *testing.T) {
		rc := newReceiver(t, nil)
		url := rc.URL + "/secret/path?token=hidden"
		rc.Close() // connection refused from now on
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{Retries: 0}).start()
		h.put(url, `{"n":1}`, jsonHeader())
		h.settle()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Reason != ReasonRetriesExhausted || dls[0].LastStatus != 0 || dls[0].Detail == "" {
			t.Fatalf("dead letters %+v, want one given up after a network error", dls)
		}
		if strings.Contains(dls[0].Detail, "token") || strings.Contains(dls[0].Detail, "secret") {
			t.Errorf("detail %q repeats the target's path or query", dls[0].Detail)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		t.Cleanup(func() { close(release) })
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{Retries: 0, SendTimeout: 50 * time.Millisecond}).start()
		h.put(rc.URL, `{"n":1}`, jsonHeader())
		h.settle()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Detail != "no response within 50ms" {
			t.Fatalf("dead letters %+v, want one given up after a timeout", dls)
		}
	})
}

func TestPermanentFailures(t *testing.T) {
	t.Run("404", func(t *testing.T) {
		clk := newFakeClock(t0)
		rc := newReceiver(t, failFirst(100, http.StatusNotFound))
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{BatchSize: 2, Retries: 5}).start()
		h.put(rc.URL, `{"n":1}`, jsonHeader())
		h.put(rc.URL, `{"n":2}`, jsonHeader())
		h.settle()
		h.advance(time.Hour)
		if n := len(rc.got()); n != 1 {
			t.Fatalf("%d attempts, want 1: a 404 is not retried", n)
		}
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Reason != ReasonStatus || dls[0].Detail != "HTTP 404 Not Found" ||
			dls[0].Attempts != 1 || len(dls[0].Hooks) != 2 {
			t.Fatalf("dead letters %+v, want one with reason status after one attempt", dls)
		}
	})

	t.Run("redirect", func(t *testing.T) {
		clk := newFakeClock(t0)
		elsewhere := newReceiver(t, nil)
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL, http.StatusFound)
		})
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{BatchSize: 1, Retries: 5}).start()
		h.put(rc.URL, `{"n":1}`, jsonHeader())
		h.settle()
		if n := len(elsewhere.got()); n != 0 {
			t.Fatalf("the redirect was followed (%d requests)", n)
		}
		dls := deadLetters(t, st)
		want := "redirect to " + strings.TrimPrefix(elsewhere.URL, "http://") + " not followed (HTTP 302 Found)"
		if len(dls) != 1 || dls[0].Reason != ReasonStatus || dls[0].Detail != want {
			t.Fatalf("dead letters %+v, want one for the 302", dls)
		}
	})

	t.Run("invalid target", func(t *testing.T) {
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{Retries: 5}).start()
		h.put("ftp://example.invalid/x", `{"n":1}`, jsonHeader())
		h.settle()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Reason != ReasonInvalid {
			t.Fatalf("dead letters %+v, want one with reason %s", dls, ReasonInvalid)
		}
	})
}

func TestSlowTargetDoesNotDelayOthers(t *testing.T) {
	clk := newFakeClock(t0)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	fast := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{}).start()

	h.put(slow.URL, `{"n":1}`, jsonHeader())
	select {
	case <-entered:
	case <-time.After(guard):
		t.Fatal("slow receiver got nothing")
	}
	h.put(slow.URL, `{"n":2}`, jsonHeader()) // waits behind the first
	for _, b := range bodies(1, 3) {
		h.put(fast.URL, b, jsonHeader())
	}
	for i := range 3 {
		if r := waitArrival(t, fast); r.body != bodies(i+1, i+1)[0] {
			t.Errorf("fast target got %s, want %s", r.body, bodies(i+1, i+1)[0])
		}
	}
	h.caughtUp() // the loop has seen the slow target's second hook
	select {
	case <-entered:
		t.Fatal("slow target got a second request while its first was in flight")
	default:
	}
	free()
	h.settle()
	if got := slow.got(); len(got) != 2 || got[1].body != `{"n":2}` {
		t.Errorf("slow target got %+v, want its second hook after the first", got)
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending", n)
	}
}

// TestSlowTargetsLeaveWorkersFree: targets whose last attempt took half
// the send timeout or more get at most half the workers, so as many
// hanging receivers as there are workers do not hold back every other
// target until they time out.
func TestSlowTargetsLeaveWorkersFree(t *testing.T) {
	clk := newFakeClock(t0)
	entered := make(chan string, 4)
	answer, done := make(chan struct{}), make(chan struct{})
	hang := func(name string) *receiver { return hangingReceiver(t, name, entered, answer, done) }
	a, b, fast := hang("a"), hang("b"), newReceiver(t, nil)
	h := twoWorkers(t, clk)
	t.Cleanup(func() { close(done) })

	// Both receivers take 40s of the 1m timeout to fail: each target is
	// slow from then on.
	h.put(a.URL, `{"n":1}`, jsonHeader())
	h.put(b.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "the first attempt")
	recv(t, entered, "the second attempt")
	clk.Advance(40 * time.Second)
	answer <- struct{}{}
	answer <- struct{}{}
	h.settle()

	// Their retries are due together; one worker is left for the rest.
	clk.Advance(5 * time.Second)
	first := recv(t, entered, "a retry of a slow target")
	h.put(fast.URL, `{"n":1}`, jsonHeader())
	waitArrival(t, fast)
	h.caughtUp()
	select {
	case second := <-entered:
		t.Fatalf("slow targets %s and %s were sent to at once, with 2 workers", first, second)
	default:
	}
}

// TestHangingAttemptFreesItsWorker: an attempt at an ordinary target
// that has run half the send timeout gives its worker back to the other
// targets (while fewer than half the workers' worth of such and slow
// attempts run): receivers that start to hang do not hold every worker
// until they time out, on their first attempt either.
func TestHangingAttemptFreesItsWorker(t *testing.T) {
	clk := newFakeClock(t0)
	entered := make(chan string, 4)
	done := make(chan struct{})
	hang := func(name string) *receiver { return hangingReceiver(t, name, entered, nil, done) }
	a, b, c := hang("a"), hang("b"), hang("c")
	fast, later := newReceiver(t, nil), newReceiver(t, nil)
	h := twoWorkers(t, clk)
	t.Cleanup(func() { close(done) })

	h.put(a.URL, `{"n":1}`, jsonHeader())
	h.put(b.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "the first attempt")
	recv(t, entered, "the second attempt")
	h.put(fast.URL, `{"n":1}`, jsonHeader())
	if st := h.caughtUp(); st.busy != 2 || st.queue != 1 {
		t.Fatalf("with both workers on hanging receivers: %d sending, %d waiting; want 2 and the third target", st.busy, st.queue)
	}

	// Half the timeout: one of the two (half of 2 workers) gives its
	// worker back, and the third target is delivered while both hang.
	clk.Advance(30 * time.Second)
	waitArrival(t, fast)

	// The other still holds its worker, and a third hanging receiver
	// takes the one given back: with one overtime attempt already, it
	// keeps it, so the next target waits.
	h.put(c.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "the third hanging attempt")
	clk.Advance(30 * time.Second)
	h.put(later.URL, `{"n":1}`, jsonHeader())
	if st := h.caughtUp(); st.busy != 3 || st.queue != 1 {
		t.Fatalf("with one overtime attempt and two hanging: %d sending, %d waiting; want 3 and the next target", st.busy, st.queue)
	}
}

// TestOvertimeWaitsForASlot: an attempt that has run half the send
// timeout while half the workers' worth of attempts were already in
// overtime gives its worker back as soon as one of those ends, not only
// when it first could have.
func TestOvertimeWaitsForASlot(t *testing.T) {
	clk := newFakeClock(t0)
	entered := make(chan string, 4)
	answerA, done := make(chan struct{}), make(chan struct{})
	a := hangingReceiver(t, "a", entered, answerA, done)
	b := hangingReceiver(t, "b", entered, nil, done)
	c := hangingReceiver(t, "c", entered, nil, done)
	fast, later := newReceiver(t, nil), newReceiver(t, nil)
	h := twoWorkers(t, clk)
	t.Cleanup(func() { close(done) })

	// a starts 15s before b: a is in overtime at 30s (the one slot with
	// 2 workers), which fast, sent on the worker a gave back, shows.
	h.put(a.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "a's attempt")
	clk.Advance(15 * time.Second)
	h.put(b.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "b's attempt")
	clk.Advance(15 * time.Second)
	h.put(fast.URL, `{"n":1}`, jsonHeader())
	waitArrival(t, fast)
	// b has run half the timeout at 45s and finds the slot taken.
	clk.Advance(15 * time.Second)
	waitFor(t, "b waiting for an overtime slot", func() bool {
		h.snd.mu.Lock()
		defer h.snd.mu.Unlock()
		return len(h.snd.ripe) == 1
	})
	// c takes the free worker; later waits.
	h.put(c.URL, `{"n":1}`, jsonHeader())
	recv(t, entered, "c's attempt")
	h.put(later.URL, `{"n":1}`, jsonHeader())
	if st := h.caughtUp(); st.busy != 3 || st.queue != 1 {
		t.Fatalf("a in overtime, b and c on the workers: %d sending, %d waiting; want 3 and later", st.busy, st.queue)
	}
	// a ends: b takes its overtime slot and gives its worker to later.
	answerA <- struct{}{}
	waitArrival(t, later)
}

// TestHangingHostDoesNotHoldUpOthers: many targets on one receiver host
// that starts to hang, due together with a healthy target, hold it back
// for about half the send timeout, not half of it for each worker's
// worth of them: once the host is found slow (an attempt at it has run
// half the send timeout), its other targets wait with the slow ones
// instead of holding a worker each. In Run and in the drain alike, every
// batch is delivered in the end, once, with no attempt counted for the
// turns that waited.
func TestHangingHostDoesNotHoldUpOthers(t *testing.T) {
	for _, drain := range []bool{false, true} {
		t.Run(map[bool]string{false: "run", true: "drain"}[drain], func(t *testing.T) {
			clk := newFakeClock(t0)
			release := make(chan struct{})
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			hang := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			t.Cleanup(free)
			healthy := newReceiver(t, nil)
			st := openStore(t, t.TempDir(), clk)
			// 4 workers, 2 of them for slow and overtime attempts.
			h := newHarness(t, clk, st, Options{
				Concurrency: 4, SendTimeout: time.Minute, Retries: 5, BatchTime: time.Second,
			})
			const n = 12
			for i := range n {
				h.put(hang.URL+"/t"+strconv.Itoa(i), `{"n":1}`, jsonHeader())
			}
			h.put(healthy.URL+"/ok", `{"n":1}`, jsonHeader()) // due last of all
			clk.Advance(time.Second)
			drained := make(chan error, 1)
			if drain {
				ctx, cancel := context.WithTimeout(context.Background(), guard)
				defer cancel()
				go func() { drained <- h.snd.Drain(ctx) }()
			} else {
				h.start()
			}

			// Every worker is taken by a hanging receiver.
			for range 4 {
				waitArrival(t, hang)
			}
			clk.Advance(30 * time.Second) // half the send timeout
			waitArrival(t, healthy)
			if got := len(hang.got()); got != 4 {
				t.Errorf("the hanging host got %d requests before the healthy target's, want 4", got)
			}

			free()
			if drain {
				if err := recv(t, drained, "the drain's end"); err != nil {
					t.Fatalf("Drain: %v", err)
				}
			} else {
				waitFor(t, "every batch delivered", func() bool { return pending(t, st) == 0 })
				h.settle()
			}
			paths := make(map[string]int)
			for _, r := range hang.got() {
				paths[r.path]++
			}
			for i := range n {
				if p := "/t" + strconv.Itoa(i); paths[p] != 1 {
					t.Errorf("%s got %d requests, want 1", p, paths[p])
				}
			}
			if n := pending(t, st); n != 0 {
				t.Errorf("%d hooks pending", n)
			}
			if dls := deadLetters(t, st); len(dls) != 0 {
				t.Errorf("%d dead letters", len(dls))
			}
		})
	}
}

// TestAttemptAtSlowHostTakesNoWorker: an attempt at a target not yet
// found slow, on a receiver host found slow, counts as overtime from its
// start while half the workers' worth of slow and overtime attempts is
// not reached: it leaves every worker to the other targets.
func TestAttemptAtSlowHostTakesNoWorker(t *testing.T) {
	clk := newFakeClock(t0)
	done := make(chan struct{})
	entered := make(chan string, 8)
	host := hangingReceiver(t, "host", entered, nil, done)
	var others []*receiver
	for i := range 4 {
		others = append(others, hangingReceiver(t, "other"+strconv.Itoa(i), entered, nil, done))
	}
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Concurrency: 4, SendTimeout: time.Minute, Retries: 5}).start()
	t.Cleanup(func() { close(done) })

	// a has run half the timeout: overtime, and its host is slow.
	h.put(host.URL+"/a", `{"n":1}`, jsonHeader())
	recv(t, entered, "a's attempt")
	clk.Advance(30 * time.Second)
	waitFor(t, "a in overtime", func() bool {
		h.snd.mu.Lock()
		defer h.snd.mu.Unlock()
		return h.snd.overtime == 1
	})
	// b, on the same host, takes the second such slot at once.
	h.put(host.URL+"/b", `{"n":1}`, jsonHeader())
	recv(t, entered, "b's attempt")
	for _, rc := range others {
		h.put(rc.URL, `{"n":1}`, jsonHeader())
	}
	for range others {
		if name := recv(t, entered, "an attempt at another host"); name == "host" {
			t.Fatalf("the slow host got a third request")
		}
	}
	if st := h.caughtUp(); st.busy != 6 || st.queue != 0 {
		t.Fatalf("two overtime attempts and four on the workers: %d sending, %d waiting; want 6 and none", st.busy, st.queue)
	}
}

// TestReceiverKey: spellings of one receiver's address are one receiver
// for the slow-host mark; another scheme's default port is another.
func TestReceiverKey(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"http://Hooks.Example:80/a", "http://hooks.example/b?x=1"},
		{"https://h/a", "https://H:443/b"},
		{"http://[::1]/a", "http://[::1]:80/b"},
	} {
		if ka, kb := receiverKey(tt.a), receiverKey(tt.b); ka != kb {
			t.Errorf("receiverKey(%s) = %s, receiverKey(%s) = %s: want one receiver", tt.a, ka, tt.b, kb)
		}
	}
	if ka, kb := receiverKey("http://h/a"), receiverKey("https://h/a"); ka == kb {
		t.Errorf("http://h and https://h are both %s: want two receivers (ports 80 and 443)", ka)
	}
}

// TestSlowHostsBound: the slow hosts kept are bounded, the one marked
// longest ago dropped first; a mark made again counts as new.
func TestSlowHostsBound(t *testing.T) {
	h := newSlowHosts(2)
	h.mark("a:80")
	h.mark("b:80")
	h.mark("a:80")
	h.mark("c:80") // drops b, marked before a's second mark
	for host, want := range map[string]bool{"a:80": true, "b:80": false, "c:80": true} {
		if got := h.has(host); got != want {
			t.Errorf("has(%s) = %v, want %v", host, got, want)
		}
	}
	h.unmark("a:80")
	h.unmark("x:80")
	if h.has("a:80") || len(h.at) != 1 || h.order.Len() != 1 {
		t.Errorf("after unmark: %d hosts, %d in order; want c:80 alone", len(h.at), h.order.Len())
	}
}

// TestNoAttemptAfterRunEnds: once Run's context is done, no attempt
// starts, also when a hook comes in at the same moment (Run's select may
// take the wake-up over the context's end). Each round ends Run while a
// due hook wakes it.
func TestNoAttemptAfterRunEnds(t *testing.T) {
	rc := newReceiver(t, nil)
	for round := range 30 {
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		h := newHarness(t, clk, st, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		var once sync.Once
		h.snd.onIdle = func(loopState) {
			once.Do(func() {
				cancel()
				putHook(t, st, rc.URL, `{"n":1}`, jsonHeader())
			})
		}
		if err := h.snd.Run(ctx, context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := len(rc.got()); got != 0 {
			t.Fatalf("round %d: the receiver got %d requests after Run's context ended", round, got)
		}
	}
}

// TestDrainSendsSlowTargetsOnIdleWorkers: in a drain nothing new comes
// in, so once no ordinary target is left, slow targets are not held to
// half the workers: a slow target whose receiver answers again is
// delivered while another hangs, instead of waiting for its attempt to
// end (here, for the drain's deadline).
func TestDrainSendsSlowTargetsOnIdleWorkers(t *testing.T) {
	clk := newFakeClock(t0)
	answerA, answerB, bDelivered := make(chan struct{}), make(chan struct{}), make(chan struct{})
	// a's retry in the drain hangs until b is delivered.
	a := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-answerA
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		select {
		case <-bDelivered:
		case <-r.Context().Done():
		}
	})
	b := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			<-answerB
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		close(bDelivered)
	})
	attempted := make(chan struct{}, 4)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{
		Concurrency: 2, SendTimeout: time.Minute, Retries: 5, RetryInterval: time.Hour,
		OnAttempt: func(string, int, time.Duration, int) { attempted <- struct{}{} },
	}).start()

	// Both first attempts take 40s or more of the 1m timeout: both
	// targets are slow, a's retry due first (and not before the drain).
	h.put(a.URL, `{"n":1}`, jsonHeader())
	h.put(b.URL, `{"n":1}`, jsonHeader())
	waitArrival(t, a)
	waitArrival(t, b)
	clk.Advance(40 * time.Second)
	answerA <- struct{}{}
	recv(t, attempted, "a's first attempt")
	clk.Advance(5 * time.Second)
	answerB <- struct{}{}
	recv(t, attempted, "b's first attempt")
	h.settle()
	h.stop()

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := h.snd.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v (b was not sent on the idle worker while a hung)", err)
	}
	if n := len(b.got()); n != 2 {
		t.Errorf("b got %d POSTs, want 2", n)
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after Drain", n)
	}
}

// TestSlowMarkFollowsTheLastAttempt: an attempt cut by the send timeout
// makes its target slow however little time the clock saw pass; a slow
// target's retries are still sent, one after another, with its time
// waiting counted in OldestDue; and an attempt answered at once makes it
// fast again.
func TestSlowMarkFollowsTheLastAttempt(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 3 {
			<-r.Context().Done() // past the send timeout
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	st := openStore(t, t.TempDir(), clk)
	// The send timeout is real time: each attempt must reach the
	// receiver within it, and the last one be answered. 100 ms failed
	// when the test got a few percent of a core ("no request arrived":
	// the first attempt timed out before its request was read); a second
	// is far above what a loopback request takes, and the timeouts of
	// the first three attempts still make the target slow.
	h := newHarness(t, clk, st, Options{Concurrency: 2, SendTimeout: time.Second, Retries: 5}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	waitArrival(t, rc)
	h.settle()
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 {
		t.Fatalf("targets %v, %v; want one", targets, err)
	}
	slow := func() bool {
		h.snd.mu.Lock()
		defer h.snd.mu.Unlock()
		tg := h.snd.targets[targets[0].ID]
		return tg != nil && tg.slow
	}
	if !slow() {
		t.Fatalf("a target whose attempt timed out is not slow")
	}
	if d := h.snd.OldestDue(clk.Now().Add(2 * time.Hour)); d <= 0 {
		t.Errorf("OldestDue with a slow target due = %v, want its time waiting", d)
	}

	// Its retries as a slow target (at most one at once with two
	// workers) time out too, and are sent each in its turn.
	for range 2 {
		clk.Advance(time.Hour)
		waitArrival(t, rc)
		h.settle()
		if !slow() {
			t.Fatalf("a slow target whose attempt timed out again is not slow")
		}
	}
	clk.Advance(time.Hour)
	waitArrival(t, rc)
	h.settle()
	if slow() {
		t.Fatalf("a target whose last attempt was answered at once is still slow")
	}
}

// TestSlowTargetsKeepTheirTurn: a slow target waits apart, but in due
// order with the others: with one worker, whichever of a slow target's
// retry and an ordinary target's batch is due first is sent first.
func TestSlowTargetsKeepTheirTurn(t *testing.T) {
	for _, tt := range []struct {
		name  string
		retry time.Duration // the slow target's retry: due at 50s + retry
		first string        // the ordinary batch is due at 60s
	}{
		{"slow retry due first", 5 * time.Second, "slow"},
		{"ordinary batch due first", 15 * time.Second, "ordinary"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			order := make(chan string, 4)
			answer := make(chan struct{})
			slow := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					<-answer
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				order <- "slow"
			})
			ordinary := newReceiver(t, func(int, http.ResponseWriter, *http.Request) { order <- "ordinary" })
			st := openStore(t, t.TempDir(), clk)
			h := newHarness(t, clk, st, Options{
				Concurrency: 1, SendTimeout: time.Minute, Retries: 5, BatchTime: 10 * time.Second,
				RetryInterval: tt.retry, Backoff: BackoffFixed,
			}).start()

			// The first attempt takes 40s of the 1m timeout: slow.
			h.put(slow.URL, `{"n":1}`, jsonHeader())
			clk.Advance(10 * time.Second)
			waitArrival(t, slow)
			clk.Advance(40 * time.Second)
			answer <- struct{}{}
			h.settle()
			h.put(ordinary.URL, `{"n":1}`, jsonHeader())
			h.advance(15 * time.Second) // both are due now
			if got := recv(t, order, "the first batch sent"); got != tt.first {
				t.Fatalf("first sent: %s, want %s", got, tt.first)
			}
			recv(t, order, "the second batch sent")
		})
	}
}

func TestRestartResendsSameBatch(t *testing.T) {
	t.Run("claimed, never sent", func(t *testing.T) {
		clk := newFakeClock(t0)
		rc := newReceiver(t, nil)
		dir := t.TempDir()
		st := openStore(t, dir, clk)
		putHook(t, st, rc.URL, `{"n":1}`, jsonHeader())
		putHook(t, st, rc.URL, `{"n":2}`, jsonHeader())
		b := claimOnly(t, st)
		putHook(t, st, rc.URL, `{"n":3}`, jsonHeader()) // after the claim: not in the batch
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		st = openStore(t, dir, clk)
		// Size and window far away: only the batch in flight is due.
		h := newHarness(t, clk, st, Options{BatchSize: 10, BatchMaxWait: time.Hour}).start()
		h.settle()
		got := rc.got()
		if len(got) != 1 {
			t.Fatalf("got %d POSTs after restart, want 1", len(got))
		}
		if id := checkBatchHeaders(t, got[0], "2"); id != b.ID {
			t.Errorf("batch id %s after restart, want %s", id, b.ID)
		}
		if got[0].body != array(bodies(1, 2)) {
			t.Errorf("body %s, want %s", got[0].body, array(bodies(1, 2)))
		}
		if n := pending(t, st); n != 1 {
			t.Errorf("%d hooks pending, want the one captured after the claim", n)
		}
	})

	t.Run("attempts continue", func(t *testing.T) {
		clk := newFakeClock(t0)
		rc := newReceiver(t, failFirst(100, http.StatusInternalServerError))
		dir := t.TempDir()
		opts := Options{Retries: 1, RetryInterval: 5 * time.Second}
		attemptThenStop(t, clk, dir, opts, rc.URL)

		clk.Advance(time.Second)
		st := openStore(t, dir, clk)
		h := newHarness(t, clk, st, opts).start()
		if state := h.settle(); !state.next.Equal(t0.Add(5 * time.Second)) {
			t.Errorf("after restart the retry is due at %v, want %v", state.next, t0.Add(5*time.Second))
		}
		if n := len(rc.got()); n != 1 {
			t.Fatalf("%d attempts before the recorded next attempt, want 1", n)
		}
		h.advance(4 * time.Second)
		got := rc.got()
		if len(got) != 2 || !sameKey(got[1], got[0]) {
			t.Fatalf("got %d attempts; want 2 with the same Idempotency-Key", len(got))
		}
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Attempts != 2 || dls[0].Reason != ReasonRetriesExhausted {
			t.Fatalf("dead letters %+v, want one after 2 attempts (1 + 1 retry)", dls)
		}
	})
}

func TestDrain(t *testing.T) {
	clk := newFakeClock(t0)
	a := newReceiver(t, nil)
	b := newReceiver(t, nil)
	c := newReceiver(t, failFirst(1, http.StatusInternalServerError))
	d := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 10, BatchMaxWait: time.Hour, Retries: 3}).start()

	// Partial batches, their wait far from over.
	for _, body := range bodies(1, 3) {
		h.put(a.URL, body, jsonHeader())
	}
	for _, body := range bodies(1, 2) {
		h.put(b.URL, body, jsonHeader())
	}
	// A full batch that failed and waits for its retry.
	for _, body := range bodies(1, 10) {
		h.put(c.URL, body, jsonHeader())
	}
	h.settle()
	if n := len(a.got()) + len(b.got()); n != 0 {
		t.Fatalf("%d partial batches sent before the drain", n)
	}
	if n := len(c.got()); n != 1 {
		t.Fatalf("%d attempts to c before the drain, want 1", n)
	}
	h.stop()
	// Hooks that arrive while Run is stopped are drained too, batch by
	// batch.
	for _, body := range bodies(1, 25) {
		h.put(d.URL, body, jsonHeader())
	}

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := h.snd.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	for _, tc := range []struct {
		name   string
		rc     *receiver
		bodies []string
	}{
		{"a", a, []string{array(bodies(1, 3))}},
		{"b", b, []string{array(bodies(1, 2))}},
		{"c", c, []string{array(bodies(1, 10)), array(bodies(1, 10))}},
		{"d", d, []string{array(bodies(1, 10)), array(bodies(11, 20)), array(bodies(21, 25))}},
	} {
		got := tc.rc.got()
		if len(got) != len(tc.bodies) {
			t.Errorf("%s got %d POSTs, want %d", tc.name, len(got), len(tc.bodies))
			continue
		}
		for i := range got {
			if got[i].body != tc.bodies[i] {
				t.Errorf("%s POST %d = %s, want %s", tc.name, i+1, got[i].body, tc.bodies[i])
			}
		}
	}
	if got := c.got(); len(got) != 2 || !sameKey(got[0], got[1]) {
		t.Error("the drained retry has a new batch id")
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after Drain", n)
	}
}

func TestDrainLeavesFailuresOnDisk(t *testing.T) {
	clk := newFakeClock(t0)
	bad := newReceiver(t, failFirst(100, http.StatusBadGateway))
	good := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 2, Retries: 10})
	for _, body := range bodies(1, 3) {
		h.put(bad.URL, body, jsonHeader())
		h.put(good.URL, body, jsonHeader())
	}
	// Drain without a Run before it: it loads the targets itself.
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	err := h.snd.Drain(ctx)
	if !errors.Is(err, ErrUndelivered) {
		t.Fatalf("Drain = %v, want ErrUndelivered", err)
	}
	if n := len(bad.got()); n != 1 {
		t.Errorf("%d attempts to the failing receiver, want 1 per drain", n)
	}
	if n := len(good.got()); n != 2 {
		t.Errorf("%d POSTs to the good receiver, want 2", n)
	}
	if n := pending(t, st); n != 3 {
		t.Errorf("%d hooks pending, want the failing target's 3 left on disk", n)
	}
	// The failed target is back in the schedule, at its retry time.
	if d := h.snd.OldestDue(clk.Now().Add(DefaultRetryInterval + time.Second)); d != time.Second {
		t.Errorf("OldestDue = %v, want 1s past the retry", d)
	}
}

// TestDrainSetsAsideAGivenUpTarget: a target whose attempt fails in the
// drain is set aside with its later batches also when that failure ends
// the batch (its last retry, or no retries at all): the drain does not go
// on sending the target's backlog to a receiver that is down, each batch
// then dead-lettered, but leaves it on disk for the next start.
func TestDrainSetsAsideAGivenUpTarget(t *testing.T) {
	clk := newFakeClock(t0)
	down := newReceiver(t, failFirst(100, http.StatusServiceUnavailable))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 1})
	for _, body := range bodies(1, 3) {
		h.put(down.URL, body, jsonHeader())
	}
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if err := h.snd.Drain(ctx); !errors.Is(err, ErrUndelivered) {
		t.Errorf("Drain = %v, want ErrUndelivered", err)
	}
	if n := len(down.got()); n != 1 {
		t.Errorf("%d attempts to the failing receiver in the drain, want 1", n)
	}
	if n := len(deadLetters(t, st)); n != 1 {
		t.Errorf("%d dead letters, want the one batch that failed", n)
	}
	if n := pending(t, st); n != 2 {
		t.Errorf("%d hooks pending, want the 2 after the failed batch left on disk", n)
	}
}

func TestRunAndDrainExclusive(t *testing.T) {
	clk := newFakeClock(t0)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{}).start()
	h.settle()
	// Bounded, so that a second Run that did start ends the test.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := h.snd.Run(ctx, ctx); !errors.Is(err, ErrBusy) {
		t.Errorf("second Run = %v, want ErrBusy", err)
	}
	// Drain waits for Run, which does not end here: whatever its
	// context allows, Drain ends with that context's error.
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.snd.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain during Run = %v, want it to wait for Run until its context ends", err)
	}
}

// stubStore is a Store that records claims and has nothing to give.
type stubStore struct{ claims atomic.Int64 }

func (s *stubStore) Targets() ([]buffer.TargetStatus, error) { return nil, nil }
func (s *stubStore) Claim(buffer.TargetID, int, int64) (*buffer.Batch, error) {
	s.claims.Add(1)
	return nil, buffer.ErrNoHooks
}
func (s *stubStore) RecordAttempt(buffer.TargetID, string, buffer.Failure) error { return nil }
func (s *stubStore) Ack(buffer.TargetID, string, buffer.NextClaim) (buffer.TargetStatus, error) {
	return buffer.TargetStatus{}, nil
}
func (s *stubStore) Discard(buffer.TargetID, string, buffer.NextClaim) (buffer.TargetStatus, error) {
	return buffer.TargetStatus{}, nil
}
func (s *stubStore) GiveUp(buffer.TargetID, string, string, buffer.Failure, buffer.NextClaim) (buffer.TargetStatus, error) {
	return buffer.TargetStatus{}, nil
}
func (s *stubStore) GiveUpGone(buffer.TargetID, string, string, buffer.Failure) (buffer.TargetStatus, error) {
	return buffer.TargetStatus{}, nil
}
func (s *stubStore) DiscardGone(buffer.TargetID, string) (buffer.TargetStatus, error) {
	return buffer.TargetStatus{}, nil
}

func TestSchedulerScale(t *testing.T) {
	const n = 100_000
	clk := newFakeClock(t0)
	stub := &stubStore{}
	h := newHarness(t, clk, nil, Options{Store: stub, BatchTime: time.Hour}).start()
	h.settle()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	start := time.Now()
	for i := range n {
		h.snd.Notify(buffer.TargetStatus{
			ID: buffer.TargetID(i + 1), URL: "http://receiver.example/t" + strconv.Itoa(i),
			Pending: 1, Oldest: t0, Version: 1,
		})
	}
	elapsed := time.Since(start)
	state := h.settle()

	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("%d notifications in %v; heap grew %d bytes (%d per target)",
		n, elapsed, int64(after.HeapAlloc)-int64(before.HeapAlloc), (int64(after.HeapAlloc)-int64(before.HeapAlloc))/n)
	h.snd.mu.Lock()
	scheduled := len(h.snd.queue)
	h.snd.mu.Unlock()
	if scheduled != n {
		t.Errorf("%d targets scheduled, want %d", scheduled, n)
	}
	if !state.next.Equal(t0.Add(time.Hour)) {
		t.Errorf("timer armed for %v, want %v", state.next, t0.Add(time.Hour))
	}
	if g := runtime.NumGoroutine(); g > goroutines {
		t.Errorf("goroutines grew from %d to %d", goroutines, g)
	}
	if c := stub.claims.Load(); c != 0 {
		t.Errorf("%d claims while nothing is due", c)
	}
	if d := h.snd.OldestDue(t0.Add(time.Hour - time.Second)); d != 0 {
		t.Errorf("OldestDue before the due time = %v, want 0", d)
	}
	if d := h.snd.OldestDue(t0.Add(time.Hour + time.Minute)); d != time.Minute {
		t.Errorf("OldestDue = %v, want 1m", d)
	}
	runtime.KeepAlive(h)
}

func TestDrainCancelledKeepsTargetsScheduled(t *testing.T) {
	clk := newFakeClock(t0)
	entered := make(chan struct{}, 1)
	rc := newReceiver(t, func(n int, _ http.ResponseWriter, r *http.Request) {
		if n == 1 {
			entered <- struct{}{}
			<-r.Context().Done()
		}
	})
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 3})
	h.put(rc.URL, `{"n":1}`, jsonHeader())

	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- h.snd.Drain(ctx) }()
	select {
	case <-entered:
	case <-time.After(guard):
		t.Fatal("Drain sent nothing")
	}
	cancel()
	select {
	case err := <-drained:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain = %v, want context.Canceled", err)
		}
	case <-time.After(guard):
		t.Fatal("Drain did not return after its context ended")
	}
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 || targets[0].InFlight == nil || targets[0].InFlight.Attempts != 0 {
		t.Fatalf("Targets = %+v, %v: want the batch in flight with the cut attempt not counted", targets, err)
	}

	// The next Run picks the batch up at once.
	h.start()
	h.settle()
	got := rc.got()
	if len(got) != 2 || !sameKey(got[1], got[0]) {
		t.Fatalf("got %d requests, want the same batch sent again by Run", len(got))
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending", n)
	}
}

func TestStaleStatusKeepsRetryInterval(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(1, http.StatusInternalServerError))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 3}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 {
		t.Fatalf("Targets = %v, %v", targets, err)
	}
	// A status that claims the batch may go at once (it cannot, from
	// the store; this stands for any status the sender misreads).
	h.snd.Notify(buffer.TargetStatus{
		ID: targets[0].ID, Pending: 1, Oldest: t0, Version: targets[0].Version + 1000,
		InFlight: &buffer.Batch{ID: "stale"},
	})
	if state := h.settle(); !state.next.Equal(t0.Add(DefaultRetryInterval)) {
		t.Errorf("retry due at %v, want %v", state.next, t0.Add(DefaultRetryInterval))
	}
	if n := len(rc.got()); n != 1 {
		t.Fatalf("%d attempts before RetryInterval passed, want 1", n)
	}
	h.advance(DefaultRetryInterval)
	if n := len(rc.got()); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
}
