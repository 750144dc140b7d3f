package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/buffer"
)

// boundedProxy serves a proxy onto store with the body limit and
// MaxCapturingBytes given; waits gets a value each time a capture waits
// for room, reserved the bytes each capture takes.
func boundedProxy(t *testing.T, store Store, maxBody, bound int64) (tp *testProxy, waits chan struct{}, reserved chan int64) {
	t.Helper()
	waits = make(chan struct{}, 4)
	reserved = make(chan int64, 4)
	tp = newTestProxy(t, Options{
		Store:             store,
		MaxBodyBytes:      maxBody,
		MaxCapturingBytes: bound,
		OnCaptureWait:     func() { waits <- struct{}{} },
	})
	tp.onReserve = func(n int64) { reserved <- n }
	tp.serve(t, nil)
	return tp, waits, reserved
}

// TestCapturingBytesBound: while one capture holds most of
// MaxCapturingBytes with its body half sent, a second one waits with its
// body unread, and is stored once the first is.
func TestCapturingBytesBound(t *testing.T) {
	const size = 60 << 10
	store := openStore(t)
	tp, waits, reserved := boundedProxy(t, store, 64<<10, 100<<10)

	body := func(c byte) string { return `"` + strings.Repeat(string(c), size-2) + `"` }
	head := func(path string) string {
		return fmt.Sprintf("POST http://receiver.example/%s HTTP/1.1\r\nHost: receiver.example\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, size)
	}

	first := dialRaw(t, tp.Addr)
	a := body('a')
	if _, err := first.Write([]byte(head("a") + a[:1000])); err != nil {
		t.Fatalf("write: %v", err)
	}
	if n := recv(t, reserved, "the first capture's reservation"); n != size {
		t.Fatalf("first capture reserved %d bytes, want its Content-Length %d", n, size)
	}

	type answer struct {
		resp *http.Response
		body []byte
	}
	second := dialRaw(t, tp.Addr)
	answered := make(chan answer, 1)
	go func() {
		var ans answer
		ans.resp, ans.body = second.send(t, http.MethodPost, head("b"), body('b'))
		answered <- ans
	}()
	recv(t, waits, "the second capture to wait")
	select {
	case ans := <-answered:
		t.Fatalf("second capture answered %d while the first held the bound", ans.resp.StatusCode)
	default:
	}
	if n := len(storedHooks(t, store)); n != 0 {
		t.Fatalf("stored %d hooks while the first body was half sent, want 0", n)
	}

	resp, got := first.send(t, http.MethodPost, a[1000:])
	assertAccepted(t, resp, got)
	if n := recv(t, reserved, "the second capture's reservation"); n != size {
		t.Fatalf("second capture reserved %d bytes, want %d", n, size)
	}
	ans := recv(t, answered, "the second capture's answer")
	assertAccepted(t, ans.resp, ans.body)
	hooks := storedHooks(t, store)
	if len(hooks) != 2 {
		t.Fatalf("stored %d hooks, want 2", len(hooks))
	}
	for _, h := range hooks {
		if len(h.Body) != size {
			t.Errorf("hook for %s has %d body bytes, want %d", h.Target, len(h.Body), size)
		}
	}
}

// TestCapturingBytes: a capture counts at its Content-Length, and at the
// body limit when its decoded size is not known before it is read.
func TestCapturingBytes(t *testing.T) {
	const limit = 1 << 20
	p, err := New(Options{Store: &fakeStore{}, MaxBodyBytes: limit, MaxCapturingBytes: limit})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tests := []struct {
		name     string
		length   int64
		encoding string
		want     int64
	}{
		{"content length", 1000, "", 1000},
		{"empty", 0, "", 0},
		{"identity", 1000, "identity", 1000},
		{"chunked", -1, "", limit},
		{"gzip", 1000, "gzip", limit},
		{"over the limit: refused unread", limit + 1, "", 0},
		{"gzip over the limit: read, it may decode to less", limit + 1, "gzip", limit},
		{"gzip past the wire bound: refused unread", limit + limit/16 + 1024 + 1, "gzip", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodPost, "http://receiver.example/", nil)
			r.ContentLength = tt.length
			if tt.encoding != "" {
				r.Header.Set("Content-Encoding", tt.encoding)
			}
			if got := p.capturingBytes(r, contentCodings(r.Header)); got != tt.want {
				t.Errorf("capturingBytes = %d, want %d", got, tt.want)
			}
		})
	}
	for _, bound := range []int64{-1, limit - 1} {
		if _, err := New(Options{Store: &fakeStore{}, MaxBodyBytes: limit, MaxCapturingBytes: bound}); err == nil {
			t.Errorf("New accepted MaxCapturingBytes %d with MaxBodyBytes %d", bound, limit)
		}
	}
}

// TestCapturingBoundsEncodedBodyOverLimit: a gzip body whose
// Content-Length is over MaxBodyBytes is still read (what it decodes to
// may fit), so it counts against MaxCapturingBytes and waits for room
// like any other; before, it was taken for one refused unread and read
// past the bound.
func TestCapturingBoundsEncodedBodyOverLimit(t *testing.T) {
	const limit = 64 << 10
	store := openStore(t)
	tp, waits, reserved := boundedProxy(t, store, limit, limit)

	// Stored deflate blocks: the wire is a little larger than the body.
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.NoCompression)
	_, _ = io.WriteString(w, `"`+strings.Repeat("g", limit-12)+`"`)
	_ = w.Close()
	if gz.Len() <= limit {
		t.Fatalf("gzip body of %d bytes, want more than %d", gz.Len(), limit)
	}

	const size = limit / 2
	first := dialRaw(t, tp.Addr)
	a := `"` + strings.Repeat("a", size-2) + `"`
	if _, err := fmt.Fprintf(first, "POST http://receiver.example/a HTTP/1.1\r\nHost: receiver.example\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", size, a[:100]); err != nil {
		t.Fatalf("write: %v", err)
	}
	recv(t, reserved, "the first capture's reservation")

	second := dialRaw(t, tp.Addr)
	answered := make(chan *http.Response, 1)
	go func() {
		resp, _ := second.send(t, http.MethodPost, fmt.Sprintf("POST http://receiver.example/gz HTTP/1.1\r\nHost: receiver.example\r\n"+
			"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", gz.Len()), gz.String())
		answered <- resp
	}()
	select {
	case <-waits:
	case resp := <-answered:
		t.Fatalf("gzip hook of %d wire bytes answered %d while the bound was held, want it to wait", gz.Len(), resp.StatusCode)
	case <-time.After(testTimeout):
		t.Fatal("gzip hook neither waited nor was answered")
	}

	resp, got := first.send(t, http.MethodPost, a[100:])
	assertAccepted(t, resp, got)
	if n := recv(t, reserved, "the gzip capture's reservation"); n != limit {
		t.Errorf("gzip capture reserved %d bytes, want the body limit %d", n, limit)
	}
	if resp := recv(t, answered, "the gzip capture's answer"); resp.StatusCode != http.StatusAccepted {
		t.Errorf("gzip capture answered %d, want 202", resp.StatusCode)
	}
}

// putFunc is a Store whose Put is the function.
type putFunc func(ctx context.Context, h *buffer.Hook) error

func (f putFunc) Put(ctx context.Context, h *buffer.Hook) error { return f(ctx, h) }

// TestCapturingBoundIsFreeAfterEveryAnswer: captures that end in every
// answer there is (202, each refusal, a forward on a store error, an app
// that hangs up, a panic in the store) give back what they took under
// MaxCapturingBytes: afterwards the whole bound is free, and a hook of
// MaxBodyBytes is captured without a wait.
func TestCapturingBoundIsFreeAfterEveryAnswer(t *testing.T) {
	const limit = 4 << 10
	var ids atomic.Int64
	store := putFunc(func(ctx context.Context, h *buffer.Hook) error {
		switch {
		case strings.HasSuffix(h.Target, "/quota"):
			return buffer.ErrQuota
		case strings.HasSuffix(h.Target, "/fail"):
			return errors.New("disk on fire")
		case strings.HasSuffix(h.Target, "/panic"):
			panic("store bug")
		case strings.HasSuffix(h.Target, "/hang"):
			<-ctx.Done()
			return ctx.Err()
		}
		h.ID = fmt.Sprintf("H%d", ids.Add(1))
		return nil
	})
	var waited atomic.Int64
	tp := newTestProxy(t, Options{
		Store:             store,
		MaxBodyBytes:      limit,
		MaxCapturingBytes: limit,
		RequireValidJSON:  true,
		OnCaptureWait:     func() { waited.Add(1) },
		ForwardTransport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return jsonResponse(r, http.StatusOK, []byte(`{}`)), nil
		}),
		// The panic's stack goes to the server's error log.
		Logger: slog.New(slog.DiscardHandler),
	})
	tp.serve(t, nil)

	hook := `{"pad": "` + strings.Repeat("x", 1000) + `"}`
	var gz, big bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = io.WriteString(w, hook)
	_ = w.Close()
	w = gzip.NewWriter(&big)
	_, _ = io.WriteString(w, `"`+strings.Repeat("y", 2*limit)+`"`)
	_ = w.Close()
	head := func(url, extra string) string {
		return "POST " + url + " HTTP/1.1\r\nHost: receiver.example\r\nContent-Type: application/json\r\n" + extra + "\r\n"
	}
	length := func(body string) string { return fmt.Sprintf("Content-Length: %d\r\n", len(body)) }
	chunked := "Transfer-Encoding: chunked\r\n"
	for _, tt := range []struct {
		name   string
		parts  []string
		status int // 0: no answer, the connection ends
		hangUp bool
	}{
		{"captured", []string{head("http://receiver.example/ok", length(hook)), hook}, http.StatusAccepted, false},
		{"chunked", []string{head("http://receiver.example/ok", chunked), fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(hook), hook)}, http.StatusAccepted, false},
		{"gzip", []string{head("http://receiver.example/ok", "Content-Encoding: gzip\r\n"+length(gz.String())), gz.String()}, http.StatusAccepted, false},
		{"413 from its length", []string{head("http://receiver.example/ok", "Content-Length: 5000\r\n"), strings.Repeat("z", 5000)}, http.StatusRequestEntityTooLarge, false},
		{"413 chunked", []string{head("http://receiver.example/ok", chunked), fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 5000, strings.Repeat("z", 5000))}, http.StatusRequestEntityTooLarge, false},
		{"413 decoded", []string{head("http://receiver.example/ok", "Content-Encoding: gzip\r\n"+length(big.String())), big.String()}, http.StatusRequestEntityTooLarge, false},
		{"415", []string{head("http://receiver.example/ok", "Content-Encoding: br\r\n"+length(hook)), hook}, http.StatusUnsupportedMediaType, false},
		{"400 broken chunked", []string{head("http://receiver.example/ok", chunked), "zz\r\n"}, http.StatusBadRequest, false},
		{"400 not JSON", []string{head("http://receiver.example/ok", "Content-Length: 5\r\n"), "{nope"}, http.StatusBadRequest, false},
		{"400 credentials", []string{head("http://u:p@receiver.example/ok", length(hook)), hook}, http.StatusBadRequest, false},
		{"414", []string{head("http://receiver.example/"+strings.Repeat("u", MaxTargetURL), length(hook)), hook}, http.StatusRequestURITooLong, false},
		{"507", []string{head("http://receiver.example/quota", length(hook)), hook}, http.StatusInsufficientStorage, false},
		{"forwarded on a store error", []string{head("http://receiver.example/fail", length(hook)), hook}, http.StatusOK, false},
		{"panic in the store", []string{head("http://receiver.example/panic", length(hook)), hook}, 0, false},
		{"app hangs up while stored", []string{head("http://receiver.example/hang", length(hook)), hook}, 0, true},
		{"body cut short", []string{head("http://receiver.example/ok", length(hook)), hook[:100]}, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				c := dialRaw(t, tp.Addr)
				for _, p := range tt.parts {
					if _, err := io.WriteString(c, p); err != nil {
						t.Fatalf("write: %v", err)
					}
				}
				if tt.hangUp {
					// Half-closed, as a hang-up reads to Go's server; the
					// rest of its answer, or the close, says the capture
					// has ended.
					if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
						t.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, c.br); err != nil {
						t.Fatalf("wait for the capture to end: %v", err)
					}
					_ = c.Close()
				} else {
					resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodPost})
					switch {
					case tt.status == 0 && err == nil:
						t.Fatalf("answered %d, want the connection to end", resp.StatusCode)
					case tt.status != 0 && err != nil:
						t.Fatalf("read response: %v", err)
					case tt.status != 0 && resp.StatusCode != tt.status:
						t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
					}
					_ = c.Close()
				}
				// A capture gives its bytes back before it answers or its
				// connection closes (a store's panic unwinds through it).
				deadline := time.Now().Add(testTimeout)
				for !tp.capturing.TryAcquire(limit) {
					if time.Now().After(deadline) {
						t.Fatalf("the bound of %d bytes is not free after the capture ended: a reservation leaked", limit)
					}
					time.Sleep(time.Millisecond)
				}
				tp.capturing.Release(limit)
			}
		})
	}
	if n := waited.Load(); n != 0 {
		t.Fatalf("%d captures waited: one at a time, none should have", n)
	}
	body := `"` + strings.Repeat("m", limit-2) + `"`
	resp, got := dialRaw(t, tp.Addr).send(t, http.MethodPost, head("http://receiver.example/ok", length(body)), body)
	assertAccepted(t, resp, got)
}
