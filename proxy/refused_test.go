package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hookproxy/buffer"
)

// refusals records what a proxy reports through OnRefuse and OnForward.
type refusals struct {
	mu       sync.Mutex
	reasons  []string
	forwards int
	// refused, when set, is signalled after each refusal.
	refused chan struct{}
}

func (r *refusals) refuse(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
	if r.refused != nil {
		r.refused <- struct{}{}
	}
}

func (r *refusals) forward() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forwards++
}

func (r *refusals) get() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reasons), r.forwards
}

// hangingStore holds every Put until its context ends.
type hangingStore struct{ putting chan struct{} }

func (s *hangingStore) Put(ctx context.Context, _ *buffer.Hook) error {
	s.putting <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

// TestRefusalsAreReported: every hook answered without being kept is
// reported once, with its reason, and a hook sent straight on because
// the store failed is reported as forwarded; a kept hook is neither.
// django-rest-hooks never sends a hook again, so each refusal is a hook
// lost, and an operator can only count them through these.
func TestRefusalsAreReported(t *testing.T) {
	rc := newReceiver(t, nil, false)
	hook := "POST " + rc.URL + "/t0 HTTP/1.1\r\nHost: " + strings.TrimPrefix(rc.URL, "http://") + "\r\nContent-Type: application/json\r\n"
	for _, tt := range []struct {
		name    string
		opts    Options
		request string
		status  int
		reason  string // "": none
		forward bool
	}{
		{name: "kept", request: hook + "Content-Length: 2\r\n\r\n{}", status: http.StatusAccepted},
		{name: "too large", opts: Options{MaxBodyBytes: 4},
			request: hook + "Content-Length: 9\r\n\r\n{\"n\":123}", status: http.StatusRequestEntityTooLarge, reason: RefusedTooLarge},
		{name: "URL too long",
			request: strings.Replace(hook, "/t0", "/t0?pad="+strings.Repeat("a", MaxTargetURL), 1) + "Content-Length: 2\r\n\r\n{}",
			status:  http.StatusRequestURITooLong, reason: RefusedURLTooLong},
		{name: "unsupported encoding",
			request: hook + "Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", status: http.StatusUnsupportedMediaType, reason: RefusedEncoding},
		{name: "fragment", request: strings.Replace(hook, "/t0", "/t0#x", 1) + "Content-Length: 2\r\n\r\n{}",
			status: http.StatusBadRequest, reason: RefusedBadRequest},
		{name: "HTTP/1.0 without Content-Length", request: strings.Replace(hook, "HTTP/1.1", "HTTP/1.0", 1) + "\r\n{}",
			status: http.StatusLengthRequired, reason: RefusedBadRequest},
		{name: "broken chunks", request: hook + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
			status: http.StatusBadRequest, reason: RefusedBadRequest},
		{name: "invalid JSON", opts: Options{RequireValidJSON: true},
			request: hook + "Content-Length: 2\r\n\r\n{\"", status: http.StatusBadRequest, reason: RefusedInvalidJSON},
		{name: "pending quota", opts: Options{Store: &fakeStore{err: fmt.Errorf("put: %w", buffer.ErrQuota)}},
			request: hook + "Content-Length: 2\r\n\r\n{}", status: http.StatusInsufficientStorage, reason: RefusedPendingFull},
		{name: "store error, reject", opts: Options{Store: &fakeStore{err: errors.New("disk on fire")}, OnStoreError: OnStoreErrorReject},
			request: hook + "Content-Length: 2\r\n\r\n{}", status: http.StatusServiceUnavailable, reason: RefusedStoreError},
		{name: "store error, forward", opts: Options{Store: &fakeStore{err: errors.New("disk on fire")}},
			request: hook + "Content-Length: 2\r\n\r\n{}", status: http.StatusTeapot, forward: true}, // the receiver's answer
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got refusals
			opts := tt.opts
			if opts.Store == nil {
				opts.Store = &fakeStore{}
			}
			opts.OnRefuse, opts.OnForward = got.refuse, got.forward
			tp := startProxy(t, opts)
			resp, _ := dialRaw(t, tp.Addr).send(t, http.MethodPost, tt.request)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			var want []string
			if tt.reason != "" {
				want = []string{tt.reason}
			}
			if reasons, forwards := got.get(); !slices.Equal(reasons, want) || (forwards == 1) != tt.forward || forwards > 1 {
				t.Errorf("refusals %q and %d forwards, want %q and forwarded %v", reasons, forwards, want, tt.forward)
			}
		})
	}

	t.Run("app hangs up while the hook is stored", func(t *testing.T) {
		got := refusals{refused: make(chan struct{}, 1)}
		store := &hangingStore{putting: make(chan struct{}, 1)}
		tp := startProxy(t, Options{Store: store, OnRefuse: got.refuse, OnForward: got.forward})
		c := dialRaw(t, tp.Addr)
		if _, err := c.Write([]byte(hook + "Content-Length: 2\r\n\r\n{}")); err != nil {
			t.Fatal(err)
		}
		<-store.putting
		_ = c.Close()
		select {
		case <-got.refused:
		case <-time.After(testTimeout):
			t.Fatal("no refusal reported after the app hung up")
		}
		if reasons, forwards := got.get(); !slices.Equal(reasons, []string{RefusedClientGone}) || forwards != 0 {
			t.Fatalf("refusals %q and %d forwards, want [client-gone] alone", reasons, forwards)
		}
	})

	if !slices.Contains(RefusalReasons, RefusedClientGone) || len(RefusalReasons) != 8 {
		t.Errorf("RefusalReasons %q does not list every reason", RefusalReasons)
	}
}
