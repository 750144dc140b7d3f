package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestCapturingBytesBound: while one capture holds most of
// MaxCapturingBytes with its body half sent, a second one waits with its
// body unread, and is stored once the first is.
func TestCapturingBytesBound(t *testing.T) {
	const size = 60 << 10
	store := openStore(t)
	waits := make(chan struct{}, 4)
	reserved := make(chan int64, 4)
	tp := newTestProxy(t, Options{
		Store:             store,
		MaxBodyBytes:      64 << 10,
		MaxCapturingBytes: 100 << 10,
		OnCaptureWait:     func() { waits <- struct{}{} },
	})
	tp.onReserve = func(n int64) { reserved <- n }
	tp.serve(t, nil)

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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodPost, "http://receiver.example/", nil)
			r.ContentLength = tt.length
			if tt.encoding != "" {
				r.Header.Set("Content-Encoding", tt.encoding)
			}
			if got := p.capturingBytes(r); got != tt.want {
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
