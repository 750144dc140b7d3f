package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"hookproxy/buffer"
)

const hookBody = `{"hook": {"id": 1, "event": "book.added", "target": "http://receiver.example/t0"}, "data": {"pk": 21}}`

// postJSON sends a webhook POST the way the app does.
func postJSON(tb testing.TB, c *http.Client, target, contentType, body string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", contentType)
	return do(tb, c, req)
}

func do(tb testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	tb.Helper()
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return resp, body
}

// assertJSONError checks a JSON error answer.
func assertJSONError(tb testing.TB, resp *http.Response, body []byte, status int) {
	tb.Helper()
	if resp.StatusCode != status {
		tb.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		tb.Errorf("body %s is not a JSON error: %v", body, err)
	}
}

func assertAccepted(tb testing.TB, resp *http.Response, body []byte) string {
	tb.Helper()
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("status = %d, want 202 (body %s)", resp.StatusCode, body)
	}
	id := resp.Header.Get(HookIDHeader)
	if id == "" {
		tb.Fatalf("no %s header", HookIDHeader)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	if want := `{"hook_id":"` + id + `","status":"accepted"}`; string(body) != want {
		tb.Errorf("body = %s, want %s", body, want)
	}
	return id
}

func TestCaptureStoresHookAndAnswers202(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, false)
	var captured []string
	var mu sync.Mutex
	tp := startProxy(t, Options{Store: store, OnCapture: func(h *buffer.Hook, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if d <= 0 {
			t.Errorf("OnCapture duration = %v, want > 0", d)
		}
		captured = append(captured, h.ID)
	}})
	// The proxy URL carries credentials so the client sends Proxy-Authorization.
	proxyURL := *tp.URL
	proxyURL.User = url.UserPassword("app", "s3cret")
	tr := &http.Transport{Proxy: http.ProxyURL(&proxyURL)}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}

	target := rc.URL + "/hooks/t0?token=querysecret"
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(hookBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Te", "trailers")
	resp, body := do(t, client, req)
	id := assertAccepted(t, resp, body)

	rc.assertUntouched(t)
	hooks := storedHooks(t, store)
	if len(hooks) != 1 {
		t.Fatalf("stored %d hooks, want 1", len(hooks))
	}
	h := hooks[0]
	if h.ID != id {
		t.Errorf("stored id %q, answered %q", h.ID, id)
	}
	if h.Target != target {
		t.Errorf("Target = %q, want %q", h.Target, target)
	}
	if h.Method != http.MethodPost {
		t.Errorf("Method = %q, want POST", h.Method)
	}
	if string(h.Body) != hookBody {
		t.Errorf("Body = %q, want %q", h.Body, hookBody)
	}
	if got := h.Header.Get("X-Custom"); got != "kept" {
		t.Errorf("X-Custom = %q, want kept", got)
	}
	if got := h.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
	for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Te", "Proxy-Authorization", "Content-Length"} {
		if v, ok := h.Header[k]; ok {
			t.Errorf("stored hook has hop-by-hop header %s: %q", k, v)
		}
	}
	mu.Lock()
	if !slices.Equal(captured, []string{id}) {
		t.Errorf("OnCapture saw %v, want [%s]", captured, id)
	}
	mu.Unlock()

	logs := tp.logs.String()
	for _, want := range []string{`"msg":"hook captured"`, `"hook_id":"` + id + `"`, `"target":"` + rc.Listener.Addr().String() + `"`, `"duration":`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	for _, secret := range []string{"querysecret", "book.added", "s3cret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log leaks %q:\n%s", secret, logs)
		}
	}
}

// TestCapturePythonRequestsWire replays the bytes python requests sends,
// headers and body in separate writes, with every hop-by-hop header.
func TestCapturePythonRequestsWire(t *testing.T) {
	store := openStore(t)
	tp := startProxy(t, Options{Store: store})
	c := dialRaw(t, tp.Addr)
	head := "POST http://receiver.example/t0 HTTP/1.1\r\n" +
		"Host: receiver.example\r\n" +
		"User-Agent: python-requests/2.31.0\r\n" +
		"Accept-Encoding: gzip, deflate\r\n" +
		"Accept: */*\r\n" +
		"Connection: keep-alive, X-Named\r\n" +
		"X-Named: hop\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Proxy-Authorization: Basic YXBwOnMzY3JldA==\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"TE: trailers\r\n" +
		"Trailer: X-Late\r\n" +
		"Upgrade: nothing\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(hookBody)) + "\r\n\r\n"
	resp, body := c.send(t, http.MethodPost, head, hookBody)
	assertAccepted(t, resp, body)

	hooks := storedHooks(t, store)
	if len(hooks) != 1 {
		t.Fatalf("stored %d hooks, want 1", len(hooks))
	}
	var keys []string
	for k := range hooks[0].Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"Accept", "Accept-Encoding", "Content-Type", "User-Agent"}; !slices.Equal(keys, want) {
		t.Errorf("stored headers %v, want %v", keys, want)
	}
	if got, want := hooks[0].Target, "http://receiver.example/t0"; got != want {
		t.Errorf("Target = %q, want %q", got, want)
	}
}

func TestCaptureContentTypes(t *testing.T) {
	tests := []struct {
		contentType string
		captured    bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON;charset=UTF-8", true},
		{"application/vnd.api+json", true},
		{"application/problem+json; charset=utf-8", true},
		{"application/json; charset", true},                      // malformed parameter, media type still JSON
		{"application/json; charset=utf-8; charset=UTF-8", true}, // a repeated parameter too
		{"application/json ; charset=utf-8", true},
		{"text/plain", false},
		{"application/jsonx", false},
		{"application/x-www-form-urlencoded", false},
		{"", false},
		{"not a media type/", false},
	}
	store := &fakeStore{}
	tr := &recordingTransport{}
	tp := startProxy(t, Options{Store: store, Transport: tr})
	client := tp.client(t)
	for _, tt := range tests {
		t.Run(tt.contentType, func(t *testing.T) {
			resp, _ := postJSON(t, client, "http://hooks.example.com/in", tt.contentType, hookBody)
			want := statusPassedThrough
			if tt.captured {
				want = http.StatusAccepted
			}
			if resp.StatusCode != want {
				t.Errorf("Content-Type %q: status %d, want %d", tt.contentType, resp.StatusCode, want)
			}
		})
	}
}

func TestCaptureHosts(t *testing.T) {
	tests := []struct {
		patterns []string
		url      string
		captured bool
	}{
		{nil, "http://anything.test/x", true},
		{[]string{"*"}, "http://anything.test/x", true},
		{[]string{"hooks.example.com"}, "http://hooks.example.com/x", true},
		{[]string{"hooks.example.com"}, "http://HOOKS.Example.com:8080/x", true},
		{[]string{"hooks.example.com"}, "http://other.example.com/x", false},
		{[]string{"*.example.com"}, "http://a.b.example.com/x", true},
		{[]string{"*.example.com"}, "http://example.com/x", false},
		{[]string{"*.example.com"}, "http://badexample.com/x", false},
		{[]string{"example.org", "*.example.com"}, "http://example.org/x", true},
		{[]string{"127.0.0.1"}, "http://127.0.0.1:9/x", true},
		{[]string{"::1"}, "http://[::1]:9/x", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.patterns, " ", tt.url), func(t *testing.T) {
			tp := startProxy(t, Options{Store: &fakeStore{}, CaptureHosts: tt.patterns, Transport: &recordingTransport{}})
			resp, _ := postJSON(t, tp.client(t), tt.url, "application/json", hookBody)
			want := statusPassedThrough
			if tt.captured {
				want = http.StatusAccepted
			}
			if resp.StatusCode != want {
				t.Errorf("status %d, want %d", resp.StatusCode, want)
			}
		})
	}
}

func TestCaptureMethods(t *testing.T) {
	tests := []struct {
		methods  []string
		method   string
		captured bool
	}{
		{nil, http.MethodPost, true},
		{nil, http.MethodPut, false},
		{nil, http.MethodGet, false},
		{[]string{"post", "Put"}, http.MethodPut, true},
		{[]string{"post", "Put"}, http.MethodPatch, false},
		{[]string{"PATCH"}, http.MethodPost, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.methods, " ", tt.method), func(t *testing.T) {
			store := &fakeStore{}
			tr := &recordingTransport{}
			tp := startProxy(t, Options{Store: store, CaptureMethods: tt.methods, Transport: tr})
			req, _ := http.NewRequest(tt.method, "http://hooks.example.com/x", strings.NewReader(hookBody))
			req.Header.Set("Content-Type", "application/json")
			resp, _ := do(t, tp.client(t), req)
			want, wantPuts, wantForwarded := statusPassedThrough, 0, 1
			if tt.captured {
				want, wantPuts, wantForwarded = http.StatusAccepted, 1, 0
			}
			if resp.StatusCode != want {
				t.Errorf("status %d, want %d", resp.StatusCode, want)
			}
			if got := store.putCount(); got != wantPuts {
				t.Errorf("Put called %d times, want %d", got, wantPuts)
			}
			if got := tr.count(); got != wantForwarded {
				t.Errorf("forwarded %d requests, want %d", got, wantForwarded)
			}
		})
	}
}

func TestPassThrough(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, false)
	var passed []string
	var mu sync.Mutex
	tp := startProxy(t, Options{Store: store, OnPassThrough: func(r *http.Request) {
		mu.Lock()
		passed = append(passed, r.Method)
		mu.Unlock()
	}})
	client := tp.client(t)

	tests := []struct {
		name, method, path, contentType, body string
	}{
		{"get", http.MethodGet, "/books/?page=2&q=a%20b", "", ""},
		{"text post", http.MethodPost, "/plain?x=1", "text/plain", "just text, not a hook"},
		{"form post", http.MethodPost, "/form", "application/x-www-form-urlencoded", "a=1&b=2"},
		{"json put", http.MethodPut, "/put", "application/json", hookBody},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, rc.URL+tt.path, body)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			req.Header.Set("X-End-To-End", "v"+strconv.Itoa(i))
			resp, got := do(t, client, req)
			if resp.StatusCode != http.StatusTeapot {
				t.Errorf("status %d, want the receiver's 418", resp.StatusCode)
			}
			if want := "receiver says hi to " + tt.method; string(got) != want {
				t.Errorf("body %q, want %q", got, want)
			}
			if resp.Header.Get("X-Receiver") != "yes" {
				t.Errorf("response lacks the receiver's X-Receiver header: %v", resp.Header)
			}
			if resp.Header.Get(HookIDHeader) != "" {
				t.Errorf("pass-through response has %s", HookIDHeader)
			}
			reqs := rc.requests()
			if len(reqs) != i+1 {
				t.Fatalf("receiver got %d requests, want %d", len(reqs), i+1)
			}
			r := reqs[i]
			if r.Method != tt.method || r.URI != tt.path || string(r.Body) != tt.body {
				t.Errorf("receiver got %s %s %q, want %s %s %q", r.Method, r.URI, r.Body, tt.method, tt.path, tt.body)
			}
			if got := r.Header.Get("X-End-To-End"); got != "v"+strconv.Itoa(i) {
				t.Errorf("receiver got X-End-To-End %q", got)
			}
		})
	}
	if st := store.Stats(); st.PendingHooks != 0 {
		t.Errorf("store holds %d hooks, want 0", st.PendingHooks)
	}
	mu.Lock()
	if want := []string{"GET", "POST", "POST", "PUT"}; !slices.Equal(passed, want) {
		t.Errorf("OnPassThrough saw %v, want %v", passed, want)
	}
	mu.Unlock()
}

// TestPathEscapesKept: a path that holds a byte a URL cannot hold as it
// is (python's urllib sends "|", "^" and raw UTF-8 so) keeps the app's
// own escapes: passed through, captured as a hook (the URL the sender
// delivers to), and inside an intercepted tunnel. net/http rebuilt such
// a path from its decoded form: "/a%2Fb|c" went on as "/a/b%7Cc".
func TestPathEscapesKept(t *testing.T) {
	for _, tt := range []struct{ sent, want string }{
		{"/files/a%2Fb|c?x=1|2", "/files/a%2Fb%7Cc?x=1|2"},
		{"/a%3Bb^c/caf\xc3\xa9", "/a%3Bb%5Ec/caf%C3%A9"},
		{"/k%2f(1)[2]{3}", "/k%2f(1)[2]%7B3%7D"},
		{"/plain|pipe", "/plain%7Cpipe"},
	} {
		t.Run(tt.sent, func(t *testing.T) {
			rc := newReceiver(t, nil, false)
			store := openStore(t)
			tp := startProxy(t, Options{Store: store})
			c := dialRaw(t, tp.Addr)
			host := strings.TrimPrefix(rc.URL, "http://")
			resp, body := c.send(t, http.MethodGet, "GET http://"+host+tt.sent+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
			if resp.StatusCode != http.StatusTeapot {
				t.Fatalf("pass-through: %d %s, want the receiver's 418", resp.StatusCode, body)
			}
			if reqs := rc.requests(); len(reqs) != 1 || reqs[0].URI != tt.want {
				t.Errorf("receiver got %+v, want one request for %s", reqs, tt.want)
			}
			resp, body = c.send(t, http.MethodPost, post(host, "http://"+host+tt.sent))
			assertAccepted(t, resp, body)
			hooks := storedHooks(t, store)
			if want := "http://" + host + tt.want; len(hooks) != 1 || hooks[0].Target != want {
				t.Fatalf("stored hooks for %q, want one for %s", targets(hooks), want)
			}
			if u, err := url.Parse(hooks[0].Target); err != nil || u.RequestURI() != tt.want {
				t.Errorf("the hook's URL %s goes out as %q (%v), want %s", hooks[0].Target, u.RequestURI(), err, tt.want)
			}
		})
	}
	t.Run("in a tunnel", func(t *testing.T) {
		ca := newCA(t)
		store := openStore(t)
		tp := startProxy(t, Options{Store: store, TLSConfig: ca.TLSConfig})
		c := intercepted(t, tp, ca, "hooks.example:443")
		resp, body := c.send(t, http.MethodPost, post("hooks.example", "/files/a%2Fb|c?x=1"))
		assertAccepted(t, resp, body)
		if hooks := storedHooks(t, store); len(hooks) != 1 || hooks[0].Target != "https://hooks.example/files/a%2Fb%7Cc?x=1" {
			t.Errorf("stored hooks for %q, want one for https://hooks.example/files/a%%2Fb%%7Cc?x=1", targets(hooks))
		}
	})
}

// targets lists the target URLs of hooks.
func targets(hooks []buffer.Hook) []string {
	urls := make([]string, len(hooks))
	for i := range hooks {
		urls[i] = hooks[i].Target
	}
	return urls
}

// TestPassThroughAddsNoHeaders: a request without a User-Agent reaches the
// receiver without one, and a response without a Content-Type reaches the
// app without one (net/http would add both).
func TestPassThroughAddsNoHeaders(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, false)
	up := newRawHTTPServer(t, func(c net.Conn, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>")
	})
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := dialRaw(t, tp.Addr)

	u, _ := url.Parse(rc.URL)
	resp, _ := c.send(t, http.MethodGet, "GET "+rc.URL+"/p HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: */*\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if reqs := rc.requests(); len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	} else if v, ok := reqs[0].Header["User-Agent"]; ok {
		t.Errorf("receiver got User-Agent %q, which the client never sent", v)
	}

	addr := up.Addr().String()
	resp, body := c.send(t, http.MethodGet, "GET http://"+addr+"/x HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: app/1\r\n\r\n")
	if string(body) != "<html>hi</html>" {
		t.Fatalf("body %q", body)
	}
	if v, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("client got Content-Type %q, which the receiver never sent", v)
	}
}

func TestPassThroughDropsHopByHopHeaders(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=1")
		w.Header().Set("X-Resp-End", "1")
		_, _ = io.WriteString(w, "ok")
	}, false)
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := dialRaw(t, tp.Addr)
	u, _ := url.Parse(rc.URL)
	resp, body := c.send(t, http.MethodPost,
		"POST "+rc.URL+"/p HTTP/1.1\r\n"+
			"Host: "+u.Host+"\r\n"+
			"Connection: keep-alive, X-Named\r\n"+
			"X-Named: hop\r\n"+
			"Proxy-Connection: keep-alive\r\n"+
			"Proxy-Authorization: Basic YXBwOnMzY3JldA==\r\n"+
			"Keep-Alive: timeout=5\r\n"+
			"TE: trailers\r\n"+
			"Upgrade: nothing\r\n"+
			"X-End: kept\r\n"+
			"Content-Type: text/plain\r\n"+
			"Content-Length: 5\r\n\r\n", "hello")
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, body)
	}
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	for _, k := range []string{"X-Named", "Proxy-Connection", "Proxy-Authorization", "Keep-Alive", "Te", "Upgrade"} {
		if v, ok := reqs[0].Header[k]; ok {
			t.Errorf("receiver got hop-by-hop header %s: %q", k, v)
		}
	}
	if c := reqs[0].Header.Get("Connection"); c != "" && !strings.EqualFold(c, "keep-alive") {
		t.Errorf("receiver got Connection %q", c)
	}
	if reqs[0].Header.Get("X-End") != "kept" || string(reqs[0].Body) != "hello" {
		t.Errorf("receiver got header %v body %q", reqs[0].Header, reqs[0].Body)
	}
	for _, k := range []string{"X-Resp-Hop", "Keep-Alive", "Connection"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("client got hop-by-hop header %s: %q", k, v)
		}
	}
	if resp.Header.Get("X-Resp-End") != "1" {
		t.Errorf("client lacks the end-to-end response header: %v", resp.Header)
	}
}

func TestBodyLimit(t *testing.T) {
	const limit = 64
	tests := []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"at limit", limit, false, http.StatusAccepted},
		{"at limit chunked", limit, true, http.StatusAccepted},
		{"over limit", limit + 1, false, http.StatusRequestEntityTooLarge},
		{"over limit chunked", limit + 1, true, http.StatusRequestEntityTooLarge},
		{"far over limit chunked", 1 << 20, true, http.StatusRequestEntityTooLarge},
	}
	store := openStore(t)
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: store, MaxBodyBytes: limit})
	client := tp.client(t)
	accepted := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `"` + strings.Repeat("x", tt.size-2) + `"`
			var r io.Reader = strings.NewReader(body)
			if tt.chunked {
				r = io.MultiReader(r) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, rc.URL+"/big", r)
			req.Header.Set("Content-Type", "application/json")
			resp, got := do(t, client, req)
			if tt.status == http.StatusAccepted {
				assertAccepted(t, resp, got)
				accepted++
				return
			}
			assertJSONError(t, resp, got, tt.status)
		})
	}
	if n := len(storedHooks(t, store)); n != accepted {
		t.Errorf("stored %d hooks, want %d", n, accepted)
	}
	rc.assertUntouched(t)
}

// TestBodyLimitAnswersBeforeBody checks that a Content-Length over the
// limit is refused from the headers alone: the body is never sent.
func TestBodyLimitAnswersBeforeBody(t *testing.T) {
	store := openStore(t)
	tp := startProxy(t, Options{Store: store})
	c := dialRaw(t, tp.Addr)
	resp, body := c.send(t, http.MethodPost,
		"POST http://receiver.example/t0 HTTP/1.1\r\nHost: receiver.example\r\n"+
			"Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
	assertJSONError(t, resp, body, http.StatusRequestEntityTooLarge)
	if !resp.Close {
		t.Errorf("413 with an unread 10 MiB body must close the connection")
	}
	if st := store.Stats(); st.PendingHooks != 0 {
		t.Errorf("store holds %d hooks, want 0", st.PendingHooks)
	}
}

// TestRefusedRequests: a request that is not a proxy request, and a hook
// whose absolute URL could never be delivered as it is (no host, another
// scheme, credentials in it, a fragment, a port no one can listen on), get a 400 that says why,
// nothing is stored, and the connection stays good.
func TestRefusedRequests(t *testing.T) {
	for _, tt := range []struct{ name, requestLine, says string }{
		{"not a proxy request", "POST /t0 HTTP/1.1", "proxy"},
		{"hook without a host", "POST http://user:s3cretpw@/t0?token=SECRETQ HTTP/1.1", "no host"},
		{"hook to another scheme", "POST ftp://receiver.example/t0?token=SECRETQ HTTP/1.1", "not http or https"},
		{"hook with credentials", "POST http://user:s3cretpw@receiver.example/t0 HTTP/1.1", "credentials"},
		{"hook with a fragment", "POST http://receiver.example/t0#SECRETQ HTTP/1.1", "fragment"},
		{"hook to port 0", "POST http://receiver.example:0/t0?token=SECRETQ HTTP/1.1", "port"},
		{"hook to a port past 65535", "POST http://receiver.example:99999/t0?token=SECRETQ HTTP/1.1", "port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := &fakeStore{}
			tp := startProxy(t, Options{Store: store})
			c := dialRaw(t, tp.Addr)
			resp, body := c.send(t, http.MethodPost,
				tt.requestLine+"\r\nHost: receiver.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
			assertJSONError(t, resp, body, http.StatusBadRequest)
			if !strings.Contains(string(body), tt.says) {
				t.Errorf("body %s does not say %q", body, tt.says)
			}
			if store.putCount() != 0 {
				t.Errorf("Put called for a refused request")
			}
			if logs := tp.logs.String(); strings.Contains(logs, "s3cretpw") || strings.Contains(logs, "SECRETQ") {
				t.Errorf("credentials or query logged:\n%s", logs)
			}
			resp, body = c.send(t, http.MethodPost,
				"POST http://receiver.example/t0 HTTP/1.1\r\nHost: receiver.example\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
			assertAccepted(t, resp, body)
		})
	}
}

// TestPortBounds: a hook to the lowest or the highest port there is is
// taken, as its URL can be dialled.
func TestPortBounds(t *testing.T) {
	for _, port := range []string{"1", "65535"} {
		store := &fakeStore{}
		tp := startProxy(t, Options{Store: store})
		c := dialRaw(t, tp.Addr)
		resp, body := c.send(t, http.MethodPost, "POST http://receiver.example:"+port+"/t0 HTTP/1.1\r\n"+
			"Host: receiver.example:"+port+"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		assertAccepted(t, resp, body)
		if store.putCount() != 1 {
			t.Errorf("port %s: %d hooks stored, want 1", port, store.putCount())
		}
	}
}

func TestRequireValidJSON(t *testing.T) {
	tests := []struct {
		name    string
		require bool
		body    string
		status  int
	}{
		{"valid", true, hookBody, http.StatusAccepted},
		{"invalid", true, `{"hook": `, http.StatusBadRequest},
		{"empty", true, "", http.StatusBadRequest},
		// JSON in ISO-8859-1 (python's str body): batches re-encode it.
		{"latin-1", true, "{\"t\": \"caf\xe9\"}", http.StatusAccepted},
		{"utf-8", true, "{\"t\": \"caf\u00e9 \u2603\"}", http.StatusAccepted},
		{"invalid not required", false, `{"hook": `, http.StatusAccepted},
		{"latin-1 not required", false, "{\"t\": \"caf\xe9\"}", http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &fakeStore{}
			tp := startProxy(t, Options{Store: store, RequireValidJSON: tt.require, Transport: &recordingTransport{}})
			resp, body := postJSON(t, tp.client(t), "http://receiver.example/t0", "application/json", tt.body)
			if tt.status == http.StatusAccepted {
				assertAccepted(t, resp, body)
				return
			}
			assertJSONError(t, resp, body, tt.status)
			if store.putCount() != 0 {
				t.Errorf("Put called for an invalid body")
			}
		})
	}
}

func TestStoreErrorForward(t *testing.T) {
	tests := []struct {
		name string
		mode string
		err  error
	}{
		{"default mode", "", errors.New("disk on fire")},
		{"forward", OnStoreErrorForward, errors.New("disk on fire")},
		{"closed store", OnStoreErrorForward, fmt.Errorf("put: %w", buffer.ErrClosed)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Receiver", "real")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, "stored by receiver")
			}, false)
			tp := startProxy(t, Options{Store: &fakeStore{err: tt.err}, OnStoreError: tt.mode})
			req, _ := http.NewRequest(http.MethodPost, rc.URL+"/hooks?x=1", strings.NewReader(hookBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Custom", "kept")
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "dropped")
			resp, body := do(t, tp.client(t), req)
			if resp.StatusCode != http.StatusCreated || string(body) != "stored by receiver" || resp.Header.Get("X-Receiver") != "real" {
				t.Errorf("got %d %q %v, want the receiver's real answer", resp.StatusCode, body, resp.Header)
			}
			if resp.Header.Get(HookIDHeader) != "" {
				t.Errorf("forwarded hook answered with a hook id")
			}
			reqs := rc.requests()
			if len(reqs) != 1 {
				t.Fatalf("receiver got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.URI != "/hooks?x=1" || string(r.Body) != hookBody {
				t.Errorf("receiver got %s %s %q", r.Method, r.URI, r.Body)
			}
			if r.Header.Get("X-Custom") != "kept" || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Hop") != "" {
				t.Errorf("receiver got headers %v", r.Header)
			}
			if !strings.Contains(tp.logs.String(), "store unavailable") {
				t.Errorf("store error not logged:\n%s", tp.logs.String())
			}
		})
	}
}

// TestStoreErrorForwardTransport: a hook forwarded because the store
// failed goes through ForwardTransport (the egress guard, in hookproxy),
// and pass-through keeps Transport.
func TestStoreErrorForwardTransport(t *testing.T) {
	rc := newReceiver(t, nil, false)
	refuse := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("dial: refused by the egress guard")
	})
	tp := startProxy(t, Options{Store: &fakeStore{err: errors.New("disk on fire")}, ForwardTransport: refuse})
	client := tp.client(t)
	resp, body := postJSON(t, client, rc.URL+"/hooks", "application/json", hookBody)
	assertJSONError(t, resp, body, http.StatusBadGateway)
	if !strings.Contains(string(body), "egress guard") {
		t.Errorf("body %s does not say why", body)
	}
	rc.assertUntouched(t)
	resp, _ = do(t, client, mustRequest(t, http.MethodGet, rc.URL+"/page", nil))
	if resp.StatusCode != http.StatusTeapot || len(rc.requests()) != 1 {
		t.Errorf("pass-through GET: %d, receiver got %d requests; want its answer, through Transport", resp.StatusCode, len(rc.requests()))
	}
}

// TestHookURLTooLong: a hook URL over MaxTargetURL gets 414, not a store
// error (a target URL is part of the store's keys).
func TestHookURLTooLong(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: store})
	long := rc.URL + "/hooks?pad=" + strings.Repeat("a", MaxTargetURL)
	resp, body := postJSON(t, tp.client(t), long, "application/json", hookBody)
	assertJSONError(t, resp, body, http.StatusRequestURITooLong)
	rc.assertUntouched(t)
	resp, body = postJSON(t, tp.client(t), rc.URL+"/hooks?pad="+strings.Repeat("a", 1000), "application/json", hookBody)
	assertAccepted(t, resp, body)
}

func TestStoreErrorReject(t *testing.T) {
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: &fakeStore{err: errors.New("disk on fire")}, OnStoreError: OnStoreErrorReject})
	resp, body := postJSON(t, tp.client(t), rc.URL+"/hooks", "application/json", hookBody)
	assertJSONError(t, resp, body, http.StatusServiceUnavailable)
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want 5", got)
	}
	rc.assertUntouched(t)
}

func TestStoreQuota(t *testing.T) {
	for _, mode := range []string{OnStoreErrorForward, OnStoreErrorReject} {
		t.Run(mode, func(t *testing.T) {
			rc := newReceiver(t, nil, false)
			store := &fakeStore{err: fmt.Errorf("put hook: %w", buffer.ErrQuota)}
			tp := startProxy(t, Options{Store: store, OnStoreError: mode})
			resp, body := postJSON(t, tp.client(t), rc.URL+"/hooks", "application/json", hookBody)
			assertJSONError(t, resp, body, http.StatusInsufficientStorage)
			rc.assertUntouched(t)
		})
	}
}

// TestStoreQuotaReal drives the real store past its pending-bytes quota.
func TestStoreQuotaReal(t *testing.T) {
	store, err := buffer.Open(buffer.Options{Dir: t.TempDir(), MaxPendingBytes: int64(len(hookBody))})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: store})
	client := tp.client(t)
	resp, body := postJSON(t, client, rc.URL+"/hooks", "application/json", hookBody)
	assertAccepted(t, resp, body)
	resp, body = postJSON(t, client, rc.URL+"/hooks", "application/json", hookBody)
	assertJSONError(t, resp, body, http.StatusInsufficientStorage)
	rc.assertUntouched(t)
}

func TestUpstreamErrorIs502(t *testing.T) {
	tp := startProxy(t, Options{Store: &fakeStore{}})
	resp, body := do(t, tp.client(t), mustRequest(t, http.MethodGet, "http://"+closedAddr(t)+"/x?token=querysecret", nil))
	assertJSONError(t, resp, body, http.StatusBadGateway)
	if strings.Contains(string(body), "querysecret") || strings.Contains(tp.logs.String(), "querysecret") {
		t.Errorf("query string leaked: body %s, logs %s", body, tp.logs.String())
	}
}

// TestTruncatedUpstreamBody checks that a response cut off upstream is
// not handed to the client as a complete one.
func TestTruncatedUpstreamBody(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "partial")
		http.NewResponseController(w).Flush() // chunked: no Content-Length
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.Close()
		}
	}, false)
	tp := startProxy(t, Options{Store: &fakeStore{}})
	resp, err := tp.client(t).Get(rc.URL + "/stream")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read a truncated body %q without error", body)
	}
}

func TestConnectTunnel(t *testing.T) {
	rc := newReceiver(t, nil, true)
	var passed []string
	var mu sync.Mutex
	store := &fakeStore{}
	tp := startProxy(t, Options{Store: store, OnPassThrough: func(r *http.Request) {
		mu.Lock()
		passed = append(passed, r.Method)
		mu.Unlock()
	}})
	tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), TLSClientConfig: rc.tlsConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testTimeout}

	resp, body := postJSON(t, client, rc.URL+"/tls-hook", "application/json", hookBody)
	if resp.StatusCode != http.StatusTeapot || string(body) != "receiver says hi to POST" {
		t.Errorf("through the tunnel: %d %q, want the receiver's answer", resp.StatusCode, body)
	}
	resp, _ = do(t, client, mustRequest(t, http.MethodGet, rc.URL+"/again", nil))
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("second request through the tunnel: %d", resp.StatusCode)
	}
	reqs := rc.requests()
	if len(reqs) != 2 || string(reqs[0].Body) != hookBody {
		t.Errorf("receiver got %+v", reqs)
	}
	if rc.conns.Load() != 1 || tp.listener.accepts.Load() != 1 {
		t.Errorf("tunnel not reused: receiver conns %d, proxy accepts %d", rc.conns.Load(), tp.listener.accepts.Load())
	}
	if store.putCount() != 0 {
		t.Errorf("a tunnelled request was captured")
	}
	mu.Lock()
	if !slices.Equal(passed, []string{http.MethodConnect}) {
		t.Errorf("OnPassThrough saw %v, want [CONNECT]", passed)
	}
	mu.Unlock()
}

func TestConnectBytesPassThrough(t *testing.T) {
	echo := newEchoServer(t)
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := connect(t, tp.Addr, echo.Addr().String())
	for i := range 3 {
		c.echo(t, fmt.Sprintf("ping %d \x00\xff\r\n\r\n", i))
	}
	big := strings.Repeat("0123456789abcdef", 1<<14)
	c.echo(t, big)
}

// TestConnectDialErrorIs502: the 502 for a CONNECT whose target cannot be
// dialled is a JSON error, and the connection is not closed without
// Connection: close.
func TestConnectDialErrorIs502(t *testing.T) {
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := dialRaw(t, tp.Addr)
	resp, body := c.send(t, http.MethodConnect, "CONNECT "+closedAddr(t)+" HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q body %q, want a JSON error", ct, body)
	}
	if !resp.Close {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.br.Peek(1); err == io.EOF {
			t.Errorf("connection closed after a 502 that did not say Connection: close")
		}
	}
}

// TestShutdownClosesTunnel holds a tunnel open across Shutdown: Shutdown
// must close it, and nothing may keep running afterwards.
func TestShutdownClosesTunnel(t *testing.T) {
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	echo := newEchoServer(t)
	tp := startProxy(t, Options{Store: &fakeStore{}})
	c := connect(t, tp.Addr, echo.Addr().String())
	c.echo(t, "hello")

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := tp.wait(t); err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
	buf := make([]byte, 1)
	if n, err := c.br.Read(buf); err == nil {
		t.Fatalf("tunnel still open after Shutdown: read %q", buf[:n])
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("tunnel still open after Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", tp.Addr, time.Second); err == nil {
		t.Errorf("proxy still accepts connections after Shutdown")
	}
}

// TestShutdownWaitsForInFlight checks that a capture in progress finishes
// with its 202 when Shutdown starts.
func TestShutdownWaitsForInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	store := &blockingStore{entered: entered, release: release}
	tp := startProxy(t, Options{Store: store})
	client := tp.client(t)
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "http://receiver.example/t0", strings.NewReader(hookBody))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	recv(t, entered, "the capture")
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		shut <- tp.Shutdown(ctx)
	}()
	// Shutdown closes the listener before it waits for requests in
	// progress: once it is closed, Shutdown is waiting for the capture.
	recv(t, tp.listener.closed, "the listener's close")
	close(release)
	if r := recv(t, done, "the answer"); r.err != nil || r.status != http.StatusAccepted {
		t.Errorf("in-flight capture: %d %v, want 202", r.status, r.err)
	}
	if err := recv(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// blockingStore holds Put until release is closed.
type blockingStore struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *blockingStore) Put(ctx context.Context, h *buffer.Hook) error {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	h.ID = "blocked-1"
	return nil
}

func TestIdleTimeoutClosesTunnel(t *testing.T) {
	echo := newEchoServer(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: 100 * time.Millisecond})
	c := connect(t, tp.Addr, echo.Addr().String())
	c.echo(t, "hello")
	// The read blocks until the proxy gives up on the idle tunnel; the
	// test deadline set by dialRaw only guards against a hang.
	buf := make([]byte, 1)
	_, err := c.br.Read(buf)
	if ne, ok := err.(net.Error); err == nil || (ok && ne.Timeout()) {
		t.Fatalf("idle tunnel not closed by the proxy: %v", err)
	}
}

// TestIdleTimeoutSparesBusyTunnel keeps a tunnel busy for several idle
// timeouts, uploading only (the proxy never writes to the client): the
// deadline must move with what the proxy reads.
func TestIdleTimeoutSparesBusyTunnel(t *testing.T) {
	const idle = 400 * time.Millisecond
	sink := newTCPServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		n := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "END\n" {
				_, _ = io.WriteString(c, "got "+strconv.Itoa(n)+"\n")
				return
			}
			n++
		}
	})
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: idle})
	c := connect(t, tp.Addr, sink.Addr().String())
	start := time.Now()
	n := 0
	for ; time.Since(start) < 3*idle; n++ {
		if _, err := io.WriteString(c, "upload "+strconv.Itoa(n)+"\n"); err != nil {
			t.Fatalf("write %d after %v: %v", n, time.Since(start), err)
		}
	}
	if _, err := io.WriteString(c, "END\n"); err != nil {
		t.Fatalf("write END: %v", err)
	}
	line, err := c.br.ReadString('\n')
	if want := "got " + strconv.Itoa(n) + "\n"; err != nil || line != want {
		t.Fatalf("busy tunnel: got %q, %v; want %q", line, err, want)
	}
}

// tunnelRelays counts goproxy's tunnel relay goroutines still running.
func tunnelRelays() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "goproxy.copyAndClose(")
}

// TestIdleTimeoutClosesHalfClosedTunnel: after the app half-closes a
// relayed tunnel, a receiver that keeps its side open and silent does not
// hold the tunnel (or, after Shutdown, its relay goroutine) for ever.
func TestIdleTimeoutClosesHalfClosedTunnel(t *testing.T) {
	const idle = 200 * time.Millisecond
	hold := make(chan struct{})
	srv := newTCPServer(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // up to the app's FIN
		<-hold                        // then silent, its side open
	})
	defer close(hold)
	tp := startProxy(t, Options{Store: &fakeStore{}, IdleTimeout: idle})
	c := connect(t, tp.Addr, srv.Addr().String())
	if _, err := io.WriteString(c, "request\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := c.br.Read(make([]byte, 1)); err == nil {
		t.Fatal("read a byte from a silent receiver")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("tunnel still open %v after its last byte (IdleTimeout %v)", testTimeout, idle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for deadline := time.Now().Add(testTimeout); tunnelRelays() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnel relay goroutine(s) still running after Shutdown", tunnelRelays())
		}
	}
}

// TestIdleTimeoutClosesStalledInterceptedTunnel: an app that stops
// reading an intercepted tunnel while a response streams to it does not
// hold the tunnel (and the upstream request) for ever.
func TestIdleTimeoutClosesStalledInterceptedTunnel(t *testing.T) {
	const idle = handshakeIdle
	ended := make(chan error, 1)
	chunk := make([]byte, 64<<10)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for {
			if _, err := w.Write(chunk); err != nil {
				ended <- err
				return
			}
			http.NewResponseController(w).Flush()
		}
	}, true)
	ca := newCA(t)
	tp := startProxy(t, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, UpstreamTLSConfig: rc.tlsConfig(), IdleTimeout: idle})
	u, _ := url.Parse(rc.URL)
	raw := connect(t, tp.Addr, u.Host)
	tc := trusting(ca.Certificate())
	tc.ServerName = u.Hostname()
	conn := tls.Client(raw.Conn, tc)
	if _, err := io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: "+u.Host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The app reads nothing from here on.
	select {
	case <-ended: // the proxy gave up on the app, and the upstream request ended
	case <-time.After(testTimeout):
		t.Fatalf("intercepted tunnel with a stalled app still streaming %v later (IdleTimeout %v)", testTimeout, idle)
	}
}

func TestKeepAlive(t *testing.T) {
	store := openStore(t)
	rc := newReceiver(t, nil, false)
	tp := startProxy(t, Options{Store: store})
	client := tp.client(t)
	for i := range 4 {
		resp, body := postJSON(t, client, rc.URL+"/hooks/"+strconv.Itoa(i), "application/json", hookBody)
		assertAccepted(t, resp, body)
		resp, _ = do(t, client, mustRequest(t, http.MethodGet, rc.URL+"/get", nil))
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("GET status %d", resp.StatusCode)
		}
		resp, _ = postJSON(t, client, rc.URL+"/text", "text/plain", "plain")
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("text POST status %d", resp.StatusCode)
		}
	}
	if n := tp.listener.accepts.Load(); n != 1 {
		t.Errorf("client opened %d connections to the proxy, want 1", n)
	}
	if n := rc.conns.Load(); n != 1 {
		t.Errorf("proxy opened %d connections to the receiver, want 1", n)
	}
	if n := len(storedHooks(t, store)); n != 4 {
		t.Errorf("stored %d hooks, want 4", n)
	}
}

// TestKeepAlivePythonStyle sends several hook POSTs on one raw
// connection, headers and body in separate writes, as urllib3 does.
func TestKeepAlivePythonStyle(t *testing.T) {
	store := openStore(t)
	tp := startProxy(t, Options{Store: store})
	c := dialRaw(t, tp.Addr)
	for i := range 5 {
		body := `{"n": ` + strconv.Itoa(i) + `}`
		resp, got := c.send(t, http.MethodPost,
			"POST http://receiver.example/t0 HTTP/1.1\r\nHost: receiver.example\r\n"+
				"Connection: keep-alive\r\nContent-Type: application/json\r\n"+
				"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n", body)
		assertAccepted(t, resp, got)
		if resp.Close {
			t.Fatalf("request %d: proxy asked to close a kept-alive connection", i)
		}
	}
	hooks := storedHooks(t, store)
	if len(hooks) != 5 {
		t.Fatalf("stored %d hooks, want 5", len(hooks))
	}
	for i, h := range hooks {
		if want := `{"n": ` + strconv.Itoa(i) + `}`; string(h.Body) != want {
			t.Errorf("hook %d body %q, want %q (arrival order)", i, h.Body, want)
		}
	}
	if n := tp.listener.accepts.Load(); n != 1 {
		t.Errorf("proxy accepted %d connections, want 1", n)
	}
}

func TestNewValidation(t *testing.T) {
	store := &fakeStore{}
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Store: store}, true},
		{"everything", Options{Store: store, CaptureMethods: []string{"post", "PUT"}, CaptureHosts: []string{"*", "a.example", "*.b.example", "10.0.0.1", "[::1]"},
			MaxBodyBytes: 10, RequireValidJSON: true, OnStoreError: "reject", IdleTimeout: time.Second, Transport: &recordingTransport{}}, true},
		{"no store", Options{}, false},
		{"bad fallback", Options{Store: store, OnStoreError: "drop"}, false},
		{"negative body limit", Options{Store: store, MaxBodyBytes: -1}, false},
		{"negative idle", Options{Store: store, IdleTimeout: -time.Second}, false},
		{"empty method", Options{Store: store, CaptureMethods: []string{""}}, false},
		{"method with space", Options{Store: store, CaptureMethods: []string{"PO ST"}}, false},
		{"connect method", Options{Store: store, CaptureMethods: []string{"connect"}}, false},
		{"empty host", Options{Store: store, CaptureHosts: []string{""}}, false},
		{"host with port", Options{Store: store, CaptureHosts: []string{"example.com:443"}}, false},
		{"host with scheme", Options{Store: store, CaptureHosts: []string{"https://example.com"}}, false},
		{"inner wildcard", Options{Store: store, CaptureHosts: []string{"a.*.example.com"}}, false},
		{"bare wildcard suffix", Options{Store: store, CaptureHosts: []string{"*."}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok = %v", err, tt.ok)
			}
			if err == nil {
				if err := p.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown of an unserved proxy: %v", err)
				}
			}
		})
	}
}

func TestHostMatcher(t *testing.T) {
	tests := []struct {
		patterns []string
		host     string
		want     bool
	}{
		{nil, "x.test", true},
		{[]string{"example.com"}, "example.com", true},
		{[]string{"example.com"}, "EXAMPLE.com.", true},
		{[]string{"Example.COM"}, "example.com", true},
		{[]string{"example.com"}, "www.example.com", false},
		{[]string{"*.example.com"}, "www.example.com", true},
		{[]string{"*.example.com"}, "a.b.example.com", true},
		{[]string{"*.example.com"}, "example.com", false},
		{[]string{"*.example.com"}, "notexample.com", false},
		{[]string{"*"}, "anything", true},
		{[]string{"::1"}, "::1", true},
		{[]string{"[::1]"}, "::1", true},
	}
	for _, tt := range tests {
		m, err := parseHostPatterns("capture host", tt.patterns)
		if err != nil {
			t.Fatalf("parse %v: %v", tt.patterns, err)
		}
		if got := m.match(tt.host); got != tt.want {
			t.Errorf("%v match %q = %v, want %v", tt.patterns, tt.host, got, tt.want)
		}
	}
}

func TestHookHeader(t *testing.T) {
	in := http.Header{
		"Connection":          {"keep-alive, X-A", "X-B"},
		"X-A":                 {"1"},
		"X-B":                 {"2"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authorization": {"Basic x"},
		"Proxy-Authenticate":  {"Basic"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-T"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Content-Length":      {"12"},
		"Expect":              {"100-continue"},
		"Content-Type":        {"application/json"},
		"Authorization":       {"Bearer end-to-end"},
		"X-Multi":             {"1", "2"},
	}
	got := hookHeader(in)
	want := http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {"Bearer end-to-end"},
		"X-Multi":       {"1", "2"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("hookHeader = %v, want %v", got, want)
	}
	if len(in) != 16 {
		t.Errorf("hookHeader modified its input")
	}
	if h := hookHeader(http.Header{"Connection": {"close"}}); h != nil {
		t.Errorf("hookHeader of hop-by-hop only = %v, want nil", h)
	}
}

func mustRequest(tb testing.TB, method, target string, body []byte) *http.Request {
	tb.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, target, r)
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	return req
}
