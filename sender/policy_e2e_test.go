package sender

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/buffer"
	"hookproxy/egress"
)

// These tests run the sender against loopback receivers on a fake clock,
// one delivery-policy rule each.

// TestRetryAfter: a receiver answering 503 and 429 with Retry-After gets
// its next attempt when it asked, never earlier than the schedule and
// never later than RetryMaxInterval, in both of the header's forms.
func TestRetryAfter(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		switch n {
		case 1: // seconds, longer than the 5s schedule: honoured
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2: // an HTTP date 2m ahead: capped at RetryMaxInterval
			w.Header().Set("Retry-After", clk.Now().Add(2*time.Minute).Format(http.TimeFormat))
			w.WriteHeader(http.StatusServiceUnavailable)
		case 3: // 1s, shorter than the 20s schedule: the schedule wins
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 5, RetryInterval: 5 * time.Second, RetryMaxInterval: time.Minute}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()

	at := t0
	for i, wait := range []time.Duration{30 * time.Second, time.Minute, 20 * time.Second} {
		attempt := i + 2
		if state := h.settle(); !state.next.Equal(at.Add(wait)) {
			t.Fatalf("attempt %d due at %v, want %v", attempt, state.next, at.Add(wait))
		}
		if h.advance(wait - time.Millisecond) {
			t.Fatalf("timer fired before attempt %d was due", attempt)
		}
		if n := len(rc.got()); n != attempt-1 {
			t.Fatalf("%d attempts before attempt %d was due", n, attempt)
		}
		if !h.advance(time.Millisecond) {
			t.Fatalf("no timer fired for attempt %d", attempt)
		}
		if n := len(rc.got()); n != attempt {
			t.Fatalf("%d attempts, want %d", n, attempt)
		}
		at = clk.Now()
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after the 4th attempt succeeded", n)
	}
}

// TestConflictOnARetry: a 409 to a batch's first attempt dead-letters
// it, as any 4xx; a 409 to a retry, whose Idempotency-Key the receiver
// has seen (it may still be processing that attempt), is retried under
// the same key until the receiver answers 2xx.
func TestConflictOnARetry(t *testing.T) {
	clk := newFakeClock(t0)
	answers := []int{http.StatusServiceUnavailable, http.StatusConflict, http.StatusConflict, http.StatusOK}
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(answers[min(n, len(answers))-1])
	})
	first := newReceiver(t, failFirst(1, http.StatusConflict))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 5, RetryInterval: 5 * time.Second, Backoff: BackoffFixed}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.put(first.URL, `{"n":2}`, jsonHeader())
	h.settle()
	for range len(answers) - 1 {
		if !h.advance(5 * time.Second) {
			t.Fatalf("no retry after %d attempts", len(rc.got()))
		}
	}
	got := rc.got()
	if len(got) != len(answers) {
		t.Fatalf("%d attempts, want %d", len(got), len(answers))
	}
	for _, r := range got {
		if k := r.header.Get("Idempotency-Key"); k != got[0].header.Get("Idempotency-Key") || k == "" {
			t.Fatalf("Idempotency-Key %q, want the first attempt's %q on every attempt", k, got[0].header.Get("Idempotency-Key"))
		}
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after the receiver answered 200", n)
	}
	dls := deadLetters(t, st)
	if len(dls) != 1 || dls[0].Target != first.URL || dls[0].Reason != ReasonStatus || dls[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, want the one answered 409 on its first attempt, after that attempt", dls)
	}
}

// TestConflictAfterRestart: a batch found in flight at start may have
// gone out under its key before the restart, by an attempt a crash or the
// end of a drain cut short and never recorded. A 409 to its first
// recorded attempt is the receiver still processing that one: the batch is
// retried, not dead-lettered.
func TestConflictAfterRestart(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(1, http.StatusConflict))
	dir := t.TempDir()
	st := openStore(t, dir, clk)
	putHook(t, st, rc.URL, `{"n":1}`, jsonHeader())
	b := claimOnly(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir, clk)
	h := newHarness(t, clk, st, Options{Retries: 5, RetryInterval: 5 * time.Second, Backoff: BackoffFixed}).start()
	h.settle()
	if !h.advance(5 * time.Second) {
		t.Fatalf("no retry after %d attempts", len(rc.got()))
	}
	got := rc.got()
	if len(got) != 2 || !sameKey(got[1], got[0]) || got[0].header.Get("Idempotency-Key") != b.ID {
		t.Fatalf("%d attempts, want 2 under the batch's key %s", len(got), b.ID)
	}
	if dls := deadLetters(t, st); len(dls) != 0 {
		t.Fatalf("dead letters %+v, want none: the 409 came to a batch that may have gone out before", dls)
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after the receiver answered 200", n)
	}
}

// TestConflictAfterResend: net/http sends a request with an
// Idempotency-Key again by itself when a kept-alive connection closes
// after the request went out whole, before any answer (a receiver's
// worker killed mid-request, a load balancer's cut). A 409 to that second
// copy is the receiver still processing the first, as on a retry: the
// batch is retried, not dead-lettered although it is its first attempt.
func TestConflictAfterResend(t *testing.T) {
	clk := newFakeClock(t0)
	var n atomic.Int32
	var keys []string
	var mu sync.Mutex
	url := rawReceiver(t, func(c net.Conn, br *bufio.Reader) {
		defer c.Close()
		for {
			switch n.Add(1) {
			case 2: // the second hook, on the reused connection: no answer
				return
			case 3: // net/http's own second copy of it
				_, _ = io.WriteString(c, "HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
			default:
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			mu.Lock()
			keys = append(keys, req.Header.Get("Idempotency-Key"))
			mu.Unlock()
		}
	})
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 5, RetryInterval: 5 * time.Second, Backoff: BackoffFixed}).start()
	h.put(url, `{"n":1}`, jsonHeader())
	h.settle()
	h.put(url, `{"n":2}`, jsonHeader())
	h.settle()
	if got := n.Load(); got != 3 {
		t.Fatalf("the receiver read %d requests, want 3 (the second sent twice by net/http)", got)
	}
	if dls := deadLetters(t, st); len(dls) != 0 {
		t.Fatalf("dead letters %+v: a 409 to net/http's own resend was taken for a refusal", dls)
	}
	if !h.advance(5 * time.Second) {
		t.Fatal("no retry after the 409 to a resent request")
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending after the receiver answered 200", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 || keys[0] != keys[1] {
		t.Errorf("Idempotency-Keys after the first request %q, want the resent one's on the retry", keys)
	}
}

// TestExponentialBackoff: with the default backoff the waits double from
// RetryInterval (the harness draws the middle of the jitter range).
func TestExponentialBackoff(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(100, http.StatusInternalServerError))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: 3, RetryInterval: 5 * time.Second}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	for i, wait := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second} {
		if h.advance(wait - time.Millisecond) {
			t.Fatalf("retry %d came before %v", i+1, wait)
		}
		if !h.advance(time.Millisecond) {
			t.Fatalf("retry %d did not come after %v", i+1, wait)
		}
	}
	h.advance(time.Hour)
	if n := len(rc.got()); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
	if dls := deadLetters(t, st); len(dls) != 1 || dls[0].Reason != ReasonRetriesExhausted || dls[0].Attempts != 4 {
		t.Fatalf("dead letters %+v, want one after 4 attempts", dls)
	}
}

// TestRetryForeverUntilMaxAge: RetryForever keeps trying, and the age
// limit ends it whatever the count.
func TestRetryForeverUntilMaxAge(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(1000, http.StatusBadGateway))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{Retries: RetryForever, Backoff: BackoffFixed,
		RetryInterval: 10 * time.Second, RetryMaxAge: 10 * time.Minute}).start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	h.settle()
	// Attempts at 0s, 10s, ... 600s: the one at 600s finds the batch 10m
	// old and gives up.
	for range 60 {
		if !h.advance(10 * time.Second) {
			t.Fatalf("retry did not come after %d attempts", len(rc.got()))
		}
	}
	h.advance(time.Hour)
	if n := len(rc.got()); n != 61 {
		t.Fatalf("%d attempts, want 61", n)
	}
	dls := deadLetters(t, st)
	if len(dls) != 1 || dls[0].Reason != ReasonMaxAge || dls[0].Attempts != 61 || dls[0].LastStatus != 502 ||
		!strings.Contains(dls[0].Detail, "10m0s old") {
		t.Fatalf("dead letters %+v, want one with reason %s after 61 attempts", dls, ReasonMaxAge)
	}
}

// TestTooLargeBatchSaysHowToPass: a 413 to a batch of several hooks
// dead-letters it with a detail that names the settings under which its
// hooks may pass; a 413 to a hook sent alone says nothing of batches.
func TestTooLargeBatchSaysHowToPass(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(100, http.StatusRequestEntityTooLarge))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 2})
	h.put(rc.URL+"/two", `{"n":1}`, jsonHeader())
	h.put(rc.URL+"/two", `{"n":2}`, jsonHeader())
	h.put(rc.URL+"/one", `{"n":3}`, jsonHeader())
	h.start()
	h.settle()
	h.advance(time.Hour) // the lone hook's BatchMaxWait
	details := map[string]string{}
	for _, dl := range deadLetters(t, st) {
		details[strings.TrimPrefix(dl.Target, rc.URL)] = dl.Detail
	}
	if d := details["/two"]; !strings.Contains(d, "HTTP 413") || !strings.Contains(d, "batch of 2 hooks") || !strings.Contains(d, "HOOKPROXY_BATCH_MAX_BYTES") {
		t.Errorf("detail of the 2-hook batch %q, want the 413 and the settings that make smaller batches", d)
	}
	if d := details["/one"]; !strings.Contains(d, "HTTP 413") || strings.Contains(d, "BATCH") {
		t.Errorf("detail of the lone hook %q, want the 413 alone", d)
	}
}

// TestBatchMaxBytes: a batch stops before the hook that would take it
// past BatchMaxBytes; a bigger hook goes alone.
func TestBatchMaxBytes(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{BatchSize: 5, BatchMaxBytes: 20})
	big := `{"n":4,"pad":"` + strings.Repeat("x", 20) + `"}`
	all := []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, big, `{"n":5}`} // 7 bytes each, but big
	for _, b := range all {
		h.put(rc.URL, b, jsonHeader())
	}
	h.start()
	h.settle()
	sent := func() []string {
		var got []string
		for _, r := range rc.got() {
			got = append(got, r.body)
		}
		return got
	}
	// The five made a full batch by size: the byte limit splits it, and
	// every part goes out now, not only the first.
	want := []string{array(all[0:2]), array(all[2:3]), array(all[3:4]), array(all[4:5])}
	if got := sent(); !slices.Equal(got, want) {
		t.Fatalf("batches\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A later hook below size is a remainder again: it waits.
	h.put(rc.URL, `{"n":6}`, jsonHeader())
	h.settle()
	if got := sent(); len(got) != len(want) {
		t.Fatalf("a lone hook below size went out at once: %d batches", len(got))
	}
	h.advance(DefaultBatchMaxWait)
	want = append(want, array([]string{`{"n":6}`}))
	if got := sent(); !slices.Equal(got, want) {
		t.Fatalf("batches\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBatchMaxBytesWindow: in mixed mode, a batch due by size and split
// by bytes goes out whole now, not its remainder at the end of the window,
// also when its first part is given up (dead-lettered or discarded)
// rather than delivered.
func TestBatchMaxBytesWindow(t *testing.T) {
	for _, tc := range []struct {
		name, onGiveUp string
		respond        func(int, http.ResponseWriter, *http.Request)
	}{
		{"delivered", "", nil},
		{"dead-lettered", GiveUpDeadLetter, failFirst(1, http.StatusBadRequest)},
		{"discarded", GiveUpDiscard, failFirst(1, http.StatusBadRequest)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			rc := newReceiver(t, tc.respond)
			st := openStore(t, t.TempDir(), clk)
			h := newHarness(t, clk, st, Options{BatchSize: 4, BatchTime: time.Hour, BatchMaxBytes: 14, OnGiveUp: tc.onGiveUp}) // two 7-byte hooks a batch
			all := bodies(1, 4)
			for _, b := range all {
				h.put(rc.URL, b, jsonHeader())
			}
			h.start()
			h.settle()
			var got []string
			for _, r := range rc.got() {
				got = append(got, r.body)
			}
			if want := []string{array(all[0:2]), array(all[2:4])}; !slices.Equal(got, want) {
				t.Fatalf("batches\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	// redirector answers every request with code to location.
	redirector := func(t *testing.T, code int, location func() string) *receiver {
		return newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Location", location())
			w.WriteHeader(code)
		})
	}
	run := func(t *testing.T, target string, opts Options) *buffer.Store {
		t.Helper()
		clk := newFakeClock(t0)
		st := openStore(t, t.TempDir(), clk)
		opts.Retries = 5
		h := newHarness(t, clk, st, opts).start()
		h.put(target, `{"n":1}`, jsonHeader())
		h.settle()
		return st
	}
	wantDead := func(t *testing.T, st *buffer.Store, reason, detail string) {
		t.Helper()
		dls := deadLetters(t, st)
		if len(dls) != 1 || dls[0].Reason != reason || !strings.Contains(dls[0].Detail, detail) || dls[0].Attempts != 1 {
			t.Fatalf("dead letters %+v, want one with reason %s and %q in its detail after 1 attempt", dls, reason, detail)
		}
	}

	t.Run("307 followed", func(t *testing.T) {
		final := newReceiver(t, nil)
		rc := redirector(t, http.StatusTemporaryRedirect, func() string { return final.URL + "/moved" })
		st := run(t, rc.URL, Options{FollowRedirects: true})
		got := final.got()
		if len(got) != 1 || got[0].method != http.MethodPost || got[0].body != `{"n":1}` || got[0].path != "/moved" ||
			!sameKey(got[0], rc.got()[0]) {
			t.Fatalf("the redirect's target got %+v, want the same POST with the same Idempotency-Key", got)
		}
		if n := pending(t, st); n != 0 || len(deadLetters(t, st)) != 0 {
			t.Errorf("%d pending, dead letters %+v: want it delivered", n, deadLetters(t, st))
		}
	})

	t.Run("409 from a hop followed is no resend", func(t *testing.T) {
		// Two requests went out whole in the attempt, each answered: the
		// hop's 409 is to the first copy it saw.
		final := newReceiver(t, failFirst(1, http.StatusConflict))
		rc := redirector(t, http.StatusTemporaryRedirect, func() string { return final.URL + "/moved" })
		st := run(t, rc.URL, Options{FollowRedirects: true})
		wantDead(t, st, ReasonStatus, "HTTP 409 Conflict")
	})

	t.Run("no Referer on a hop", func(t *testing.T) {
		// The target URL may hold a secret (a token in its path or query):
		// net/http would hand it to the next hop as Referer.
		final := newReceiver(t, nil)
		rc := redirector(t, http.StatusTemporaryRedirect, func() string { return final.URL + "/moved" })
		run(t, rc.URL+"/in?token=s3cret", Options{FollowRedirects: true})
		got := final.got()
		if len(got) != 1 {
			t.Fatalf("the redirect's target got %d requests, want 1", len(got))
		}
		if ref := got[0].header.Get("Referer"); ref != "" {
			t.Errorf("the redirect's target got Referer %q, want none", ref)
		}
	})

	// net/http reads a redirect's Location before it asks the redirect
	// policy, and fails the request when it does not parse: that must
	// not pass for a network error (retried, the Location logged).
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("Location that is not a URL, follow %v", follow), func(t *testing.T) {
			rc := redirector(t, http.StatusMovedPermanently, func() string { return "http://[::1/x?token=s3cret" })
			st := run(t, rc.URL, Options{FollowRedirects: follow})
			wantDead(t, st, ReasonStatus, "redirect to a Location that is not a URL (HTTP 301 Moved Permanently): not followed")
			dl := deadLetters(t, st)[0]
			if dl.LastStatus != http.StatusMovedPermanently || strings.Contains(dl.Detail, "s3cret") {
				t.Errorf("dead letter with status %d and detail %q, want 301 and no Location", dl.LastStatus, dl.Detail)
			}
		})
	}

	t.Run("302 not followed by default", func(t *testing.T) {
		final := newReceiver(t, nil)
		rc := redirector(t, http.StatusFound, func() string { return final.URL })
		st := run(t, rc.URL, Options{})
		if n := len(final.got()); n != 0 {
			t.Fatalf("the redirect was followed (%d requests)", n)
		}
		wantDead(t, st, ReasonStatus, "redirect to "+strings.TrimPrefix(final.URL, "http://")+" not followed (HTTP 302 Found)")
	})

	t.Run("302 would turn the POST into a GET", func(t *testing.T) {
		final := newReceiver(t, nil)
		rc := redirector(t, http.StatusFound, func() string { return final.URL })
		st := run(t, rc.URL, Options{FollowRedirects: true})
		if n := len(final.got()); n != 0 {
			t.Fatalf("the redirect was followed (%d requests)", n)
		}
		wantDead(t, st, ReasonStatus, "a 302 would turn the POST into a GET")
	})

	t.Run("not to other schemes", func(t *testing.T) {
		rc := redirector(t, http.StatusTemporaryRedirect, func() string { return "ftp://127.0.0.1/x" })
		st := run(t, rc.URL, Options{FollowRedirects: true})
		wantDead(t, st, ReasonStatus, `redirect to a "ftp" URL: not followed`)
	})

	t.Run("at most MaxRedirects hops", func(t *testing.T) {
		var rc *receiver
		rc = redirector(t, http.StatusPermanentRedirect, func() string { return rc.URL })
		st := run(t, rc.URL, Options{FollowRedirects: true})
		if n := len(rc.got()); n != MaxRedirects+1 {
			t.Errorf("%d requests, want the first and %d hops", n, MaxRedirects)
		}
		wantDead(t, st, ReasonStatus, "after 5 redirects: not followed")
	})

	t.Run("every hop goes through the guard", func(t *testing.T) {
		// 127.0.0.2 is loopback too, but the guard lets 127.0.0.1 alone
		// through.
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatalf("no 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo): %v", err)
		}
		final := &receiver{arrived: make(chan received, 10)}
		final.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			final.mu.Lock()
			final.reqs = append(final.reqs, received{})
			final.mu.Unlock()
		}))
		final.Listener.Close()
		final.Listener = ln
		final.Start()
		t.Cleanup(final.Close)
		rc := redirector(t, http.StatusTemporaryRedirect, func() string { return final.URL })
		guard := &egress.Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
		st := run(t, rc.URL, Options{FollowRedirects: true, Guard: guard})
		if n := len(rc.got()); n != 1 {
			t.Errorf("first hop got %d requests, want 1", n)
		}
		if n := len(final.got()); n != 0 {
			t.Fatalf("the blocked hop got %d requests", n)
		}
		wantDead(t, st, ReasonBlocked, "blocked: 127.0.0.2 is loopback")
	})
}

// TestBlocked: a target the guard refuses is dead-lettered at once with
// reason blocked; not one request reaches it.
func TestBlocked(t *testing.T) {
	clk := newFakeClock(t0)
	var accepted atomic.Int32
	rc := newReceiver(t, nil)
	rc.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	st := openStore(t, t.TempDir(), clk)
	obs := &observed{}
	// The zero guard: public addresses only.
	h := newHarness(t, clk, st, obs.options(Options{Retries: 5, Guard: &egress.Guard{}})).start()
	h.put(rc.URL+"/hook?token=secret", `{"n":1}`, jsonHeader())
	h.settle()
	h.advance(time.Hour)
	if n := len(rc.got()); n != 0 || accepted.Load() != 0 {
		t.Fatalf("the receiver got %d requests on %d connections, want none", n, accepted.Load())
	}
	dls := deadLetters(t, st)
	if len(dls) != 1 || dls[0].Reason != ReasonBlocked || dls[0].Attempts != 1 || dls[0].LastStatus != 0 ||
		!strings.Contains(dls[0].Detail, "blocked: 127.0.0.1 is loopback") || strings.Contains(dls[0].Detail, "secret") {
		t.Fatalf("dead letters %+v, want one with reason %s after 1 attempt", dls, ReasonBlocked)
	}
	if outcomes, gaveUp := obs.get(); !slices.Equal(outcomes, []string{OutcomePermanent}) || !slices.Equal(gaveUp, []string{ReasonBlocked}) {
		t.Errorf("outcomes %v, given up %v", outcomes, gaveUp)
	}
}

// TestOwnClientGuard: the sender's own client, with no Guard given,
// refuses loopback at dial time.
func TestOwnClientGuard(t *testing.T) {
	rc := newReceiver(t, nil)
	s, err := New(Options{Store: &stubStore{}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Get(rc.URL)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, egress.ErrBlocked) {
		t.Fatalf("Get(loopback) = %v, want ErrBlocked", err)
	}
	if n := len(rc.got()); n != 0 {
		t.Errorf("the receiver got %d requests", n)
	}
}

func TestGone(t *testing.T) {
	clk := newFakeClock(t0)
	var rcGone atomic.Bool
	rcGone.Store(true)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if rcGone.Load() {
			w.WriteHeader(http.StatusGone)
		}
	})
	app := newReceiver(t, failFirst(2, http.StatusServiceUnavailable))
	st := openStore(t, t.TempDir(), clk)
	obs := &observed{}
	h := newHarness(t, clk, st, obs.options(Options{BatchSize: 2, BatchTime: time.Hour, Retries: 5,
		GoneWebhook: app.URL + "/gone", SigningSecrets: []string{specSecret}}))
	notified := make(chan error, 10)
	h.snd.onGoneNotified = func(err error) { notified <- err }
	h.snd.goneWaits = []time.Duration{0, 0, 0} // fire at once on the fake clock
	target := rc.URL + "/subscription/7"
	for _, b := range bodies(1, 5) {
		h.put(target, b, jsonHeader())
	}
	h.start()
	h.settle()

	// The first batch got the 410; the rest was dead-lettered without a
	// send, also the remainder whose window was far from over.
	if got := rc.got(); len(got) != 1 || got[0].body != array(bodies(1, 2)) {
		t.Fatalf("receiver got %+v, want only the first batch", got)
	}
	dls := deadLetters(t, st)
	if len(dls) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dls))
	}
	for i, dl := range dls {
		if dl.Reason != ReasonGone || dl.Target != target {
			t.Errorf("dead letter %d: reason %q target %q", i, dl.Reason, dl.Target)
		}
	}
	if dls[0].Attempts != 1 || dls[0].LastStatus != 410 || dls[0].Detail != "HTTP 410 Gone" || len(dls[0].Hooks) != 2 {
		t.Errorf("first dead letter %+v, want the batch that got the 410", dls[0])
	}
	for _, dl := range dls[1:] {
		if dl.Attempts != 0 || !dl.LastAttempt.IsZero() || !strings.Contains(dl.Detail, "marked gone") {
			t.Errorf("dead letter %+v, want one given up without an attempt", dl)
		}
	}
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 || !targets[0].Gone {
		t.Fatalf("Targets = %+v, %v: want the target marked gone", targets, err)
	}

	// The gone webhook: two 503s, then delivered.
	select {
	case err := <-notified:
		if err != nil {
			t.Fatalf("gone webhook: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("gone webhook not sent")
	}
	calls := app.got()
	if len(calls) != 3 {
		t.Fatalf("gone webhook got %d requests, want 3 (two 503s, then 200)", len(calls))
	}
	var notice struct {
		Target  string   `json:"target"`
		HookIDs []string `json:"hook_ids"`
	}
	if err := json.Unmarshal([]byte(calls[2].body), &notice); err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{dls[0].Hooks[0].ID, dls[0].Hooks[1].ID}
	if calls[2].method != http.MethodPost || calls[2].path != "/gone" || calls[2].header.Get("Content-Type") != "application/json" ||
		notice.Target != target || !slices.Equal(notice.HookIDs, wantIDs) {
		t.Errorf("gone webhook got %s %s %s, want target %s and hook ids %v", calls[2].method, calls[2].path, calls[2].body, target, wantIDs)
	}
	// Signed as a delivery is, with one id on every attempt.
	for i, c := range calls {
		key := c.header.Get("Idempotency-Key")
		if err := verifyStandardWebhook(specSecret, c.header, []byte(c.body)); err != nil || len(key) != 26 ||
			c.header.Get("Webhook-Id") != key || key != calls[0].header.Get("Idempotency-Key") {
			t.Errorf("gone webhook attempt %d: signature %v, Idempotency-Key %q, webhook-id %q; want signed, one id on every attempt",
				i+1, err, key, c.header.Get("Webhook-Id"))
		}
	}

	// Later hooks are dead-lettered without a send, at once.
	h.put(target, `{"n":6}`, jsonHeader())
	h.settle()
	if n := len(rc.got()); n != 1 {
		t.Fatalf("a hook was sent to the gone target (%d requests)", n)
	}
	if dls := deadLetters(t, st); len(dls) != 4 || dls[3].Reason != ReasonGone || string(dls[3].Hooks[0].Body) != `{"n":6}` {
		t.Fatalf("dead letters %+v, want the later hook dead-lettered as gone", dls)
	}

	// An operator clears the mark (as the admin API does: SetGone, then
	// the new status to the sender): delivery resumes.
	rcGone.Store(false)
	cleared, err := st.SetGone(targets[0].ID, false)
	if err != nil {
		t.Fatal(err)
	}
	h.snd.Notify(cleared)
	h.put(target, `{"n":7}`, jsonHeader())
	h.put(target, `{"n":8}`, jsonHeader())
	h.settle()
	if got := rc.got(); len(got) != 2 || got[1].body != array(bodies(7, 8)) {
		t.Fatalf("receiver got %+v, want the hooks after the clear delivered", got)
	}
	if n := pending(t, st); n != 0 {
		t.Errorf("%d hooks pending", n)
	}
	if _, gaveUp := obs.get(); len(gaveUp) != 4 {
		t.Errorf("OnGivenUp saw %v, want 4 x gone", gaveUp)
	}
}

// TestGoneWebhookGivesUp: a gone webhook that keeps failing is tried a
// few times and dropped; the dead letter is the record.
func TestGoneWebhookGivesUp(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, failFirst(100, http.StatusGone))
	app := newReceiver(t, failFirst(100, http.StatusInternalServerError))
	st := openStore(t, t.TempDir(), clk)
	h := newHarness(t, clk, st, Options{GoneWebhook: app.URL})
	notified := make(chan error, 10)
	h.snd.onGoneNotified = func(err error) { notified <- err }
	h.snd.goneWaits = []time.Duration{0, 0}
	h.start()
	h.put(rc.URL, `{"n":1}`, jsonHeader())
	select {
	case err := <-notified:
		if err == nil || !strings.Contains(err.Error(), "HTTP 500") {
			t.Fatalf("gone webhook: %v, want it given up after HTTP 500s", err)
		}
	case <-time.After(guard):
		t.Fatal("gone webhook neither sent nor given up")
	}
	if n := len(app.got()); n != 3 {
		t.Errorf("%d gone webhook attempts, want 3", n)
	}
	h.settle()
	if dls := deadLetters(t, st); len(dls) != 1 || dls[0].Reason != ReasonGone {
		t.Errorf("dead letters %+v, want one with reason gone", dls)
	}
}

// TestGoneAtStart: a target found marked gone at start is not sent to.
func TestGoneAtStart(t *testing.T) {
	clk := newFakeClock(t0)
	rc := newReceiver(t, nil)
	st := openStore(t, t.TempDir(), clk)
	putHook(t, st, rc.URL, `{"n":1}`, jsonHeader())
	targets, err := st.Targets()
	if err != nil || len(targets) != 1 {
		t.Fatalf("Targets = %v, %v", targets, err)
	}
	if _, err := st.SetGone(targets[0].ID, true); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, clk, st, Options{}).start()
	h.settle()
	if n := len(rc.got()); n != 0 {
		t.Fatalf("%d requests to a target marked gone", n)
	}
	if dls := deadLetters(t, st); len(dls) != 1 || dls[0].Reason != ReasonGone || dls[0].Attempts != 0 {
		t.Fatalf("dead letters %+v, want one given up as gone without an attempt", dls)
	}
}

// verifyStandardWebhook checks a delivery's Standard Webhooks signature
// with secret, written from the specification
// (https://www.standardwebhooks.com), independently of the sender's
// signing code: the signed content is "{webhook-id}.{webhook-timestamp}.
// {body}", the key is the base64 after "whsec_", the MAC HMAC-SHA256, and
// webhook-signature a space-separated list of "v1,<base64 MAC>"; one
// match is enough.
func verifyStandardWebhook(secret string, header http.Header, body []byte) error {
	id, ts, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// The Standard Webhooks specification's published example.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestVerifierMatchesSpecExample(t *testing.T) {
	h := http.Header{}
	h.Set("webhook-id", specID)
	h.Set("webhook-timestamp", strconv.Itoa(specTimestamp))
	h.Set("webhook-signature", specSignature)
	if err := verifyStandardWebhook(specSecret, h, []byte(specBody)); err != nil {
		t.Fatalf("the test's verifier rejects the specification's example: %v", err)
	}
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
	if verifyStandardWebhook(specSecret, h, []byte(specBody)) == nil {
		t.Fatal("the test's verifier accepts a wrong signature")
	}

	// And the sender signs the example as the specification does.
	key, err := ParseSigningSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	got := http.Header{}
	(&signer{keys: [][]byte{key}}).sign(got, specID, time.Unix(specTimestamp, 0), []byte(specBody))
	if got.Get("webhook-signature") != specSignature || got.Get("webhook-timestamp") != strconv.Itoa(specTimestamp) {
		t.Errorf("signed the example as %v, want %s", got, specSignature)
	}
}

func TestParseSigningSecret(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{specSecret, ""},
		{strings.TrimPrefix(specSecret, "whsec_"), ""}, // the prefix is optional
		{"whsec_", "empty"},
		{"whsec_not base64!", "base64"},
		{"whsec_c2hvcnQ=", "holds 5 bytes, want at least 24"},
	} {
		_, err := ParseSigningSecret(tc.in)
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("ParseSigningSecret(%q) = %v, want %q", tc.in, err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(tc.in, "whsec_")) && tc.in != "whsec_" {
			t.Errorf("error %q repeats the secret", err)
		}
	}
}

func TestSignatures(t *testing.T) {
	const rotated = "whsec_" + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // 32 bytes 0..31
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"batches", Options{BatchSize: 2}},
		{"single hooks", Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			rc := newReceiver(t, failFirst(1, http.StatusInternalServerError))
			st := openStore(t, t.TempDir(), clk)
			tc.opts.Retries, tc.opts.RetryInterval = 1, 5*time.Second
			tc.opts.SigningSecrets = []string{specSecret, rotated}
			h := newHarness(t, clk, st, tc.opts).start()
			h.put(rc.URL, `{"n":1}`, jsonHeader())
			h.put(rc.URL, `{"n":2}`, jsonHeader())
			h.settle()
			h.advance(5 * time.Second)
			h.settle()
			got := rc.got()
			if len(got) < 2 {
				t.Fatalf("%d requests, want a failed one and its retry", len(got))
			}
			first, retry := got[0], got[1]
			for i, r := range []received{first, retry} {
				for _, secret := range []string{specSecret, rotated} {
					if err := verifyStandardWebhook(secret, r.header, []byte(r.body)); err != nil {
						t.Errorf("request %d, secret %s...: %v", i+1, secret[:10], err)
					}
				}
				if err := verifyStandardWebhook("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 24)), r.header, []byte(r.body)); err == nil {
					t.Errorf("request %d verifies with a secret it was not signed with", i+1)
				}
				if n := len(strings.Fields(r.header.Get("webhook-signature"))); n != 2 {
					t.Errorf("request %d has %d signatures, want one per secret", i+1, n)
				}
				if id := r.header.Get("webhook-id"); id != r.header.Get("Idempotency-Key") {
					t.Errorf("request %d: webhook-id %q, want the batch id %q", i+1, id, r.header.Get("Idempotency-Key"))
				}
			}
			// The id stays, the timestamp is the attempt's.
			if first.header.Get("webhook-id") != retry.header.Get("webhook-id") {
				t.Error("the retry has another webhook-id")
			}
			for i, want := range []time.Time{t0, t0.Add(5 * time.Second)} {
				if ts := got[i].header.Get("webhook-timestamp"); ts != strconv.FormatInt(want.Unix(), 10) {
					t.Errorf("request %d webhook-timestamp %s, want %d", i+1, ts, want.Unix())
				}
			}
			// A tampered body fails.
			if verifyStandardWebhook(specSecret, first.header, []byte(first.body+" ")) == nil {
				t.Error("a changed body verifies")
			}
		})
	}
}

// TestGoneWebhookAtShutdown: a 410 that answers an attempt finishing after
// scheduling stopped (at shutdown) still gets its gone webhook sent.
func TestGoneWebhookAtShutdown(t *testing.T) {
	clk := newFakeClock(t0)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusGone)
	})
	app := newReceiver(t, nil)
	h, notified := goneHarness(t, clk, rc, app)
	stopScheduling, done := runAtShutdown(t, h)
	recv(t, arrived, "the attempt")
	stopScheduling() // shutdown begins while the receiver holds the attempt
	close(release)
	if err := recv(t, done, "Run's return"); err != nil {
		t.Fatal(err)
	}
	if err := goneEnded(t, notified, "Run"); err != nil {
		t.Fatalf("gone webhook: %v", err)
	}
	if got := app.got(); len(got) != 1 {
		t.Fatalf("the app got %d gone webhooks, want 1", len(got))
	}
}

// TestGoneWebhookWaitsEndAtShutdown: a gone webhook waiting to try again
// when scheduling stops is given up at once; it does not hold Run, and
// the drain behind it, until the attempts' deadline.
func TestGoneWebhookWaitsEndAtShutdown(t *testing.T) {
	rc, app := goneAndDown(t)
	h, notified := goneHarness(t, newFakeClock(t0), rc, app)
	stopScheduling, done := runAtShutdown(t, h)
	recv(t, rc.arrived, "the attempt")
	recv(t, app.arrived, "the gone webhook") // the first try failed; the next waits on the fake clock
	stopScheduling()
	if err := recv(t, done, "Run's return (does it wait for the gone webhook's next try?)"); err != nil {
		t.Fatal(err)
	}
	if err := goneEnded(t, notified, "Run"); err == nil {
		t.Fatal("gone webhook reported sent; its receiver answers 503")
	}
	if got := app.got(); len(got) != 1 {
		t.Fatalf("the app got %d gone webhooks, want the one try before shutdown", len(got))
	}
}

// TestGoneWebhookInDrain: a 410 met by the drain gets one try of the gone
// webhook, without waits, so the drain ends when its work does.
func TestGoneWebhookInDrain(t *testing.T) {
	rc, app := goneAndDown(t)
	h, notified := goneHarness(t, newFakeClock(t0), rc, app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.snd.Drain(ctx) }()
	if err := recv(t, done, "Drain's return (does it wait for the gone webhook's next try?)"); err != nil {
		t.Fatal(err)
	}
	if err := goneEnded(t, notified, "Drain"); err == nil {
		t.Fatal("gone webhook reported sent; its receiver answers 503")
	}
	if got := app.got(); len(got) != 1 {
		t.Fatalf("the app got %d gone webhooks, want 1", len(got))
	}
	if got := rc.got(); len(got) != 1 {
		t.Fatalf("the receiver got %d requests, want 1", len(got))
	}
}

// TestGoneWebhookCutByDrainDeadline: a gone webhook's try that the
// drain's deadline cuts is reported as cut by shutdown, not as a receiver
// that gave no answer within the send timeout (which had not passed).
func TestGoneWebhookCutByDrainDeadline(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	hang := make(chan struct{})
	app := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { <-hang })
	defer close(hang)
	h, notified := goneHarness(t, newFakeClock(t0), rc, app)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.snd.Drain(ctx) }()
	recv(t, app.arrived, "the gone webhook")
	cancel() // the drain's deadline
	_ = recv(t, done, "Drain's return")
	err := goneEnded(t, notified, "Drain")
	if err == nil || !strings.Contains(err.Error(), "shutdown") || strings.Contains(err.Error(), "no response within") {
		t.Errorf("gone webhook cut by the drain's deadline: %v, want it said cut short by shutdown", err)
	}
}

// goneAndDown starts a target that answers 410 and an app whose gone
// webhook answers 503.
func goneAndDown(t *testing.T) (rc, app *receiver) {
	rc = newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	app = newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	return rc, app
}

// goneHarness is a sender whose gone webhook is app's /gone, with one
// hook for rc; notified gets the end of every gone webhook.
func goneHarness(t *testing.T, clk *fakeClock, rc, app *receiver) (*harness, chan error) {
	h := newHarness(t, clk, openStore(t, t.TempDir(), clk), Options{GoneWebhook: app.URL + "/gone"})
	notified := make(chan error, 10)
	h.snd.onGoneNotified = func(err error) { notified <- err }
	h.put(rc.URL+"/subscription", `{"n":1}`, jsonHeader())
	return h, notified
}

// goneEnded returns how the gone webhook ended, which it must have by
// the time what returned.
func goneEnded(t *testing.T, notified chan error, what string) error {
	t.Helper()
	select {
	case err := <-notified:
		return err
	default:
		t.Fatalf("%s returned before the gone webhook was sent or given up", what)
		return nil
	}
}

// runAtShutdown runs h's sender as serve does, with its scheduling and its
// attempts under separate contexts; stopScheduling begins the shutdown,
// and done gets Run's return. The attempts are cut at the end of the test.
func runAtShutdown(t *testing.T, h *harness) (stopScheduling func(), done chan error) {
	sched, stopScheduling := context.WithCancel(context.Background())
	attempts, cutAttempts := context.WithCancel(context.Background())
	t.Cleanup(func() { stopScheduling(); cutAttempts() })
	done = make(chan error, 1)
	go func() { done <- h.snd.Run(sched, attempts) }()
	return stopScheduling, done
}
