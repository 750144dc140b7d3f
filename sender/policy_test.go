package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"hookproxy/buffer"
	"hookproxy/egress"
)

func TestDueTime(t *testing.T) {
	now := t0.Add(time.Hour)
	old := now.Add(-30 * time.Second)
	size := policy{size: 3, maxWait: time.Minute}
	window := policy{window: 10 * time.Second}
	both := policy{size: 3, window: 10 * time.Second}
	single := policy{}
	for _, tc := range []struct {
		name   string
		st     schedState
		p      policy
		want   time.Time
		wantOK bool
	}{
		{"nothing pending", schedState{}, size, time.Time{}, false},
		{"size reached", schedState{Pending: 3, Oldest: old}, size, now, true},
		{"size not reached", schedState{Pending: 2, Oldest: old}, size, old.Add(time.Minute), true},
		{"window", schedState{Pending: 1, Oldest: old}, window, old.Add(10 * time.Second), true},
		{"window, many hooks", schedState{Pending: 5000, Oldest: old}, window, old.Add(10 * time.Second), true},
		{"both, size first", schedState{Pending: 3, Oldest: old}, both, now, true},
		{"both, window first", schedState{Pending: 1, Oldest: old}, both, old.Add(10 * time.Second), true},
		{"no batching", schedState{Pending: 1, Oldest: old}, single, now, true},
		{"in flight, retry", schedState{Pending: 1, Oldest: old, InFlight: true, NextAttempt: now.Add(time.Second)}, single, now.Add(time.Second), true},
		{"in flight beats size", schedState{Pending: 9, Oldest: old, InFlight: true, NextAttempt: now.Add(time.Second)}, size, now.Add(time.Second), true},
		{"in flight, never tried", schedState{Pending: 1, Oldest: old, InFlight: true}, window, now, true},
		{"held back after store error", schedState{Pending: 1, Oldest: old, NotBefore: now.Add(5 * time.Second)}, single, now.Add(5 * time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := dueTime(tc.st, tc.p, now)
			if ok != tc.wantOK || !got.Equal(tc.want) {
				t.Errorf("dueTime = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	exp := policy{backoff: BackoffExponential, interval: 5 * time.Second, maxInterval: time.Minute}
	fixed := policy{backoff: BackoffFixed, interval: 5 * time.Second, maxInterval: time.Minute}
	huge := policy{backoff: BackoffExponential, interval: time.Second, maxInterval: time.Duration(1<<63 - 1)}
	for _, tc := range []struct {
		name   string
		p      policy
		failed int
		rnd    float64
		want   time.Duration
	}{
		// rnd 0.5 is the middle of the jitter range: the bare schedule.
		{"first", exp, 1, 0.5, 5 * time.Second},
		{"doubles", exp, 2, 0.5, 10 * time.Second},
		{"doubles again", exp, 3, 0.5, 20 * time.Second},
		{"fourth", exp, 4, 0.5, 40 * time.Second},
		// At the cap the range is [0.8 cap, cap]: its middle is 0.9 cap.
		{"capped", exp, 5, 0.5, 54 * time.Second},
		{"capped long after", exp, 1_000_000, 0.5, 54 * time.Second},
		{"jitter low end", exp, 2, 0, 8 * time.Second},
		{"jitter high end", exp, 2, 1, 12 * time.Second},
		// 40s is below the 45s cap, but 1.2 x 40s is not.
		{"jitter never passes the cap", policy{backoff: BackoffExponential, interval: 5 * time.Second, maxInterval: 45 * time.Second}, 4, 1, 45 * time.Second},
		{"capped, low end", exp, 9, 0, 48 * time.Second},
		{"rnd out of range is clamped", exp, 1, 7, 6 * time.Second},
		{"fixed, first", fixed, 1, 0.5, 5 * time.Second},
		{"fixed, no growth", fixed, 9, 0.5, 5 * time.Second},
		{"fixed, no jitter", fixed, 3, 0, 5 * time.Second},
		{"huge cap does not overflow", huge, 200, 0, time.Duration(float64(1<<63-1) * 0.8)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backoff(tc.failed, tc.p, tc.rnd)
			if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("backoff(%d, rnd %v) = %v, want %v", tc.failed, tc.rnd, got, tc.want)
			}
		})
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	const cap = 10 * time.Minute
	p := policy{backoff: BackoffExponential, interval: time.Second, maxInterval: cap}
	rng := rand.New(rand.NewPCG(1, 2)) // a fixed seed: the same draws every run
	for failed := 1; failed <= 20; failed++ {
		base := min(time.Second<<(failed-1), cap)
		lo := time.Duration(float64(base) * 0.8)
		hi := min(time.Duration(float64(base)*1.2), cap)
		var seenLow, seenHigh bool
		for range 1000 {
			d := backoff(failed, p, rng.Float64())
			if d < lo || d > hi {
				t.Fatalf("failure %d: wait %v outside [%v, %v]", failed, d, lo, hi)
			}
			// The draws spread over the range rather than clustering.
			seenLow = seenLow || d < lo+(hi-lo)/10
			seenHigh = seenHigh || d > hi-(hi-lo)/10
		}
		if !seenLow || !seenHigh {
			t.Errorf("failure %d: 1000 draws did not reach both ends of [%v, %v]", failed, lo, hi)
		}
	}
}

func TestNextAttempt(t *testing.T) {
	created := t0
	at := t0.Add(time.Hour)
	p := policy{retries: 3, backoff: BackoffFixed, interval: 5 * time.Second, maxInterval: time.Minute}
	forever := p
	forever.retries = RetryForever
	aged := p
	aged.maxAge = 2 * time.Hour
	agedForever := forever
	agedForever.maxAge = time.Hour
	exp := p
	exp.backoff = BackoffExponential
	ra := func(attempts int, d time.Duration) failedAttempt {
		return failedAttempt{Attempts: attempts, Created: created, At: at, RetryAfter: d, HasRetryAfter: true}
	}
	for _, tc := range []struct {
		name       string
		p          policy
		f          failedAttempt
		want       time.Time
		wantReason string
	}{
		{"retry", p, failedAttempt{Attempts: 1, Created: created, At: at}, at.Add(5 * time.Second), ""},
		{"last retry", p, failedAttempt{Attempts: 3, Created: created, At: at}, at.Add(5 * time.Second), ""},
		{"retries exhausted", p, failedAttempt{Attempts: 4, Created: created, At: at}, time.Time{}, ReasonRetriesExhausted},
		{"no retries", policy{interval: time.Second, maxInterval: time.Second}, failedAttempt{Attempts: 1, At: at}, time.Time{}, ReasonRetriesExhausted},
		{"retry forever", forever, failedAttempt{Attempts: 1_000_000, Created: created, At: at}, at.Add(5 * time.Second), ""},
		{"exponential", exp, failedAttempt{Attempts: 3, Created: created, At: at}, at.Add(20 * time.Second), ""},

		{"younger than max age", aged, failedAttempt{Attempts: 1, Created: at.Add(-2*time.Hour + time.Second), At: at}, at.Add(5 * time.Second), ""},
		{"max age reached", aged, failedAttempt{Attempts: 1, Created: at.Add(-2 * time.Hour), At: at}, time.Time{}, ReasonMaxAge},
		{"max age with retries left", aged, failedAttempt{Attempts: 2, Created: at.Add(-3 * time.Hour), At: at}, time.Time{}, ReasonMaxAge},
		{"max age ends retry forever", agedForever, failedAttempt{Attempts: 5, Created: created, At: at}, time.Time{}, ReasonMaxAge},
		{"no max age", forever, failedAttempt{Attempts: 5, Created: created.Add(-1000 * time.Hour), At: at}, at.Add(5 * time.Second), ""},
		{"count checked before age", aged, failedAttempt{Attempts: 4, Created: created.Add(-3 * time.Hour), At: at}, time.Time{}, ReasonRetriesExhausted},

		{"retry-after longer than the schedule", p, ra(1, 30*time.Second), at.Add(30 * time.Second), ""},
		{"retry-after shorter than the schedule", p, ra(1, time.Second), at.Add(5 * time.Second), ""},
		{"retry-after zero", p, ra(1, 0), at.Add(5 * time.Second), ""},
		{"retry-after past the cap", p, ra(1, 3*time.Hour), at.Add(time.Minute), ""},
		{"retry-after with exponential", exp, ra(2, 15*time.Second), at.Add(15 * time.Second), ""},
		{"retry-after below exponential", exp, ra(3, 15*time.Second), at.Add(20 * time.Second), ""},
		{"retry-after does not save an exhausted batch", p, ra(4, time.Second), time.Time{}, ReasonRetriesExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := nextAttempt(tc.p, tc.f, 0.5)
			if !got.Equal(tc.want) || reason != tc.wantReason {
				t.Errorf("nextAttempt = %v, %q; want %v, %q", got, reason, tc.want, tc.wantReason)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true},
		{"Wed, 02 Jan 2030 03:05:05 GMT", time.Minute, true},          // IMF-fixdate
		{"Wednesday, 02-Jan-30 03:04:35 GMT", 30 * time.Second, true}, // RFC 850
		{"Wed Jan  2 03:14:05 2030", 10 * time.Minute, true},          // asctime
		{"Wed, 02 Jan 2030 03:00:00 GMT", 0, true},                    // in the past
		{"99999999999999999999999", time.Duration(1<<63 - 1), true},   // the cap decides
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestClassify(t *testing.T) {
	blocked := &url.Error{Op: "Post", URL: "http://127.0.0.1/", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &egress.BlockedError{Addr: netip.MustParseAddr("127.0.0.1"), Class: egress.Loopback}}}
	refused := &url.Error{Op: "Post", URL: "ftp://x/", Err: fmt.Errorf("redirect: %w", errRedirect)}
	for _, tc := range []struct {
		status     int
		err        error
		want       outcome
		wantReason string
		resent     bool
	}{
		{200, nil, outcomeDelivered, "", false},
		{204, nil, outcomeDelivered, "", false},
		{0, errors.New("connection refused"), outcomeRetryable, "", false},
		{0, context.DeadlineExceeded, outcomeRetryable, "", false},
		{0, fmt.Errorf("x: %w", errInvalidRequest), outcomePermanent, ReasonInvalid, false},
		{0, blocked, outcomePermanent, ReasonBlocked, false},
		{302, refused, outcomePermanent, ReasonStatus, false},
		{408, nil, outcomeRetryable, "", false},
		{425, nil, outcomeRetryable, "", false},
		{429, nil, outcomeRetryable, "", false},
		{500, nil, outcomeRetryable, "", false},
		{503, nil, outcomeRetryable, "", false},
		{301, nil, outcomePermanent, ReasonStatus, false},
		{302, nil, outcomePermanent, ReasonStatus, false},
		{400, nil, outcomePermanent, ReasonStatus, false},
		{404, nil, outcomePermanent, ReasonStatus, false},
		{410, nil, outcomePermanent, ReasonGone, false},
		// 409 to a key sent for the first time is the receiver's refusal;
		// to one sent before, it may still be processing that one.
		{409, nil, outcomePermanent, ReasonStatus, false},
		{409, nil, outcomeRetryable, "", true},
		{400, nil, outcomePermanent, ReasonStatus, true},
		{410, nil, outcomePermanent, ReasonGone, true},
	} {
		got, reason := classify(tc.status, tc.err, tc.resent)
		if got != tc.want || reason != tc.wantReason {
			t.Errorf("classify(%d, %v, resent %v) = %v, %q; want %v, %q", tc.status, tc.err, tc.resent, got, reason, tc.want, tc.wantReason)
		}
	}
}

func TestNewValidates(t *testing.T) {
	store := &stubStore{}
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "Store"},
		{Options{Store: store, BatchSize: -1}, "BatchSize"},
		{Options{Store: store, BatchTime: -1}, "BatchTime"},
		{Options{Store: store, Retries: -2}, "Retries"},
		{Options{Store: store, Backoff: "linear"}, "Backoff"},
		{Options{Store: store, RetryMaxInterval: -1}, "RetryMaxInterval"},
		{Options{Store: store, RetryInterval: time.Minute, RetryMaxInterval: time.Second}, "RetryMaxInterval"},
		{Options{Store: store, RetryMaxAge: -1}, "RetryMaxAge"},
		{Options{Store: store, BatchMaxBytes: -1}, "BatchMaxBytes"},
		{Options{Store: store, SigningSecrets: []string{"whsec_c2hvcnQ="}}, "SigningSecrets[0]"},
		{Options{Store: store, GoneWebhook: "ftp://app/gone"}, "GoneWebhook"},
		{Options{Store: store, Concurrency: -1}, "Concurrency"},
		{Options{Store: store, OnGiveUp: "drop"}, "OnGiveUp"},
	} {
		_, err := New(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", tc.opts, err, tc.want)
		}
	}
	s, err := New(Options{Store: store, BatchTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.pol.claim != DefaultMaxBatchHooks || s.pol.interval != DefaultRetryInterval || s.timeout != DefaultSendTimeout ||
		s.workers != DefaultConcurrency || s.userAgent != DefaultUserAgent || s.pol.backoff != BackoffExponential ||
		s.pol.maxInterval != DefaultRetryMaxInterval || s.pol.maxAge != 0 || s.pol.maxBytes != 0 || s.signer != nil {
		t.Errorf("defaults not applied: %+v", s)
	}
	// A RetryInterval above the default cap raises the cap with it.
	s, err = New(Options{Store: store, RetryInterval: time.Hour, Retries: RetryForever})
	if err != nil {
		t.Fatal(err)
	}
	if s.pol.maxInterval != time.Hour || s.pol.retries != RetryForever {
		t.Errorf("maxInterval %v, retries %d; want 1h, %d", s.pol.maxInterval, s.pol.retries, RetryForever)
	}
}

func TestOwnClient(t *testing.T) {
	s, err := New(Options{Store: &stubStore{}})
	if err != nil {
		t.Fatal(err)
	}
	lc, ok := s.client.Transport.(locationCheck)
	if !ok {
		t.Fatalf("transport is %T", s.client.Transport)
	}
	tr, ok := lc.rt.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T", lc.rt)
	}
	// The process's proxy settings point at hookproxy itself.
	if tr.Proxy != nil {
		t.Error("the client uses a proxy")
	}
	if tr.TLSClientConfig != nil && tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("TLS verification is off")
	}
	if s.client.CheckRedirect == nil || s.client.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Error("redirects are followed")
	}
}

func TestBuildBatch(t *testing.T) {
	hooks := []buffer.Hook{
		{Body: []byte(`{"a": 1}`)},
		{Body: []byte(" [1, 2]\n")},
		{Body: nil},
		{Body: []byte(`{"broken": `)},
		{Body: []byte("{\"t\": \"caf\xe9\"}")}, // ISO-8859-1, as python sends a str body
		{Body: []byte("{\"t\": \"caf\u00e9\"}")},
		{Body: []byte("caf\xe9 \xa0")},
	}
	got := string(buildBatch(hooks))
	want := `[{"a": 1}, [1, 2]` + "\n" + `,null,"{\"broken\": ",{"t": "café"},{"t": "café"},"café ` + "\u00a0" + `"]`
	if got != want {
		t.Errorf("buildBatch = %s, want %s", got, want)
	}
	if !utf8.ValidString(got) || !json.Valid([]byte(got)) {
		t.Errorf("buildBatch = %q: not a UTF-8 JSON text", got)
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		want   string
	}{
		{404, nil, "HTTP 404 Not Found"},
		{599, nil, "HTTP 599"},
		{0, &url.Error{Op: "Post", URL: "http://h/p?token=x", Err: errors.New("connection refused")}, "connection refused"},
		{0, fmt.Errorf("x: %w", context.DeadlineExceeded), "no response within 15s"},
	} {
		if got := describe(tc.status, tc.err, 15*time.Second); got != tc.want {
			t.Errorf("describe(%d, %v) = %q, want %q", tc.status, tc.err, got, tc.want)
		}
	}
}

func BenchmarkBuildBatch(b *testing.B) {
	body := []byte(`{"hook": {"id": 1, "event": "book.added", "target": "http://receiver.example/t0"}, ` +
		`"data": {"model": "books.book", "pk": 21, "fields": {"title": "A title", "author": 3, "isbn": "978-0-00-000000-0"}}}`)
	hooks := make([]buffer.Hook, 100)
	var size int
	for i := range hooks {
		hooks[i].Body = body
		size += len(body)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		_ = buildBatch(hooks)
	}
	b.ReportMetric(float64(b.N*len(hooks))/b.Elapsed().Seconds(), "hooks/s")
}
