package sender

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"hookproxy/buffer"
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

func TestRetryDelay(t *testing.T) {
	p := policy{retries: 2, interval: 5 * time.Second}
	for failed, want := range []bool{true, true, true, false, false} {
		if failed == 0 {
			continue
		}
		d, ok := retryDelay(failed, p)
		if ok != want || (ok && d != 5*time.Second) {
			t.Errorf("retryDelay(%d) = %v, %v; want %v", failed, d, ok, want)
		}
	}
	if _, ok := retryDelay(1, policy{}); ok {
		t.Error("Retries 0 retried")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		want   outcome
	}{
		{200, nil, outcomeDelivered},
		{204, nil, outcomeDelivered},
		{0, errors.New("connection refused"), outcomeRetryable},
		{0, context.DeadlineExceeded, outcomeRetryable},
		{0, fmt.Errorf("x: %w", errInvalidRequest), outcomePermanent},
		{408, nil, outcomeRetryable},
		{429, nil, outcomeRetryable},
		{500, nil, outcomeRetryable},
		{503, nil, outcomeRetryable},
		{301, nil, outcomePermanent},
		{302, nil, outcomePermanent},
		{400, nil, outcomePermanent},
		{404, nil, outcomePermanent},
		{410, nil, outcomePermanent},
	} {
		if got := classify(tc.status, tc.err); got != tc.want {
			t.Errorf("classify(%d, %v) = %v, want %v", tc.status, tc.err, got, tc.want)
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
		{Options{Store: store, Retries: -1}, "Retries"},
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
		s.workers != DefaultConcurrency || s.userAgent != DefaultUserAgent {
		t.Errorf("defaults not applied: %+v", s)
	}
}

func TestOwnClient(t *testing.T) {
	s, err := New(Options{Store: &stubStore{}})
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := s.client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T", s.client.Transport)
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
	}
	got := string(buildBatch(hooks))
	want := `[{"a": 1}, [1, 2]` + "\n" + `,null,"{\"broken\": "]`
	if got != want {
		t.Errorf("buildBatch = %s, want %s", got, want)
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
