package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// python is Debian's interpreter, where python3-requests, python3-django and
// python3-django-rest-hooks are installed (.ci/run installs them).
const python = "/usr/bin/python3"

// waitLimit bounds every wait on another goroutine or process; reaching
// it is a failure, never the expected path.
const waitLimit = 30 * time.Second

// instance is hookproxy running in-process through run().
type instance struct {
	proxyURL string
	logs     *lockedBuffer
	cancel   context.CancelFunc
	done     chan error
}

// startHookproxy runs hookproxy with the given settings (HOOKPROXY_ is
// added to each name) on a loopback port and a data dir of its own unless
// given, and waits until it listens.
func startHookproxy(tb testing.TB, settings map[string]string) *instance {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	inst := &instance{logs: logs, cancel: cancel, done: make(chan error, 1)}
	exited := make(chan struct{})
	var runErr error
	go func() {
		runErr = run(ctx, nil, testEnviron(tb, settings), io.Discard, logs)
		close(exited)
	}()
	url, ok := waitStarted(logs, exited)
	if !ok {
		cancel()
		select {
		case <-exited:
		case <-time.After(waitLimit):
			tb.Fatalf("hookproxy neither started nor stopped\n%s", logs.String())
		}
		tb.Fatalf("hookproxy did not start: %v\n%s", runErr, logs.String())
	}
	inst.proxyURL = url
	go func() { <-exited; inst.done <- runErr }()
	tb.Cleanup(func() { inst.stop(tb) })
	return inst
}

// testEnviron is the environment of a hookproxy under test: loopback
// ports chosen by the system, JSON logs, a data dir of its own unless
// settings names one, loopback receivers allowed unless settings says,
// and settings (HOOKPROXY_ is added to each name).
func testEnviron(tb testing.TB, settings map[string]string) []string {
	tb.Helper()
	environ := []string{
		"HOOKPROXY_LISTEN=127.0.0.1:0",
		"HOOKPROXY_ADMIN_LISTEN=127.0.0.1:0",
		"HOOKPROXY_LOG_FORMAT=json",
		"HOOKPROXY_LOG_LEVEL=debug",
	}
	if _, ok := settings["DATA_DIR"]; !ok {
		environ = append(environ, "HOOKPROXY_DATA_DIR="+tb.TempDir())
	}
	if _, ok := settings["MEMORY_LIMIT"]; !ok {
		// run sets the process's soft memory limit; the tests share it.
		environ = append(environ, "HOOKPROXY_MEMORY_LIMIT=0")
	}
	if _, ok := settings["ALLOW_PRIVATE_TARGETS"]; !ok {
		// The receivers are on loopback, which the egress guard refuses
		// by default.
		environ = append(environ, "HOOKPROXY_ALLOW_PRIVATE_TARGETS=true")
	}
	for k, v := range settings {
		environ = append(environ, envPrefix+k+"="+v)
	}
	return environ
}

// waitStarted waits for hookproxy's "hookproxy started" log line and
// returns its proxy URL; ok is false when hookproxy exited first or did
// not start within waitLimit.
func waitStarted(logs *lockedBuffer, exited <-chan struct{}) (proxyURL string, ok bool) {
	deadline := time.After(waitLimit)
	for {
		changed := logs.wait() // before the check, so a write in between is not missed
		if addr := logs.field("hookproxy started", "proxy_addr"); addr != "" {
			return "http://" + addr, true
		}
		select {
		case <-exited:
			return "", false
		case <-changed:
		case <-deadline:
			return "", false
		}
	}
}

// stop shuts hookproxy down as SIGTERM does and waits for it.
func (in *instance) stop(tb testing.TB) {
	tb.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			tb.Errorf("hookproxy: %v", err)
		}
	case <-time.After(waitLimit):
		tb.Fatalf("hookproxy did not stop\n%s", in.logs.String())
	}
}

// lockedBuffer collects log output and lets a reader wait for more.
type lockedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// field returns the value of key in the last JSON log line whose message
// is msg.
func (b *lockedBuffer) field(msg, key string) string {
	var v string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != msg {
			continue
		}
		if s, ok := line[key].(string); ok {
			v = s
		}
	}
	return v
}

// received is one request a receiver got.
type received struct {
	Method string
	Path   string
	Host   string
	Header http.Header
	Body   []byte
	At     time.Time // when it arrived
}

// hooks decodes a batch body (a JSON array) into its hook bodies.
func (r received) hooks(tb testing.TB) []json.RawMessage {
	tb.Helper()
	var hs []json.RawMessage
	if err := json.Unmarshal(r.Body, &hs); err != nil {
		tb.Fatalf("batch body is not a JSON array: %v: %s", err, r.Body)
	}
	return hs
}

// receiver is a loopback webhook receiver that records what it gets.
type receiver struct {
	srv *httptest.Server
	// status decides the answer to the n-th request (from 0); nil: 200.
	status func(n int) int

	mu      sync.Mutex
	got     []received
	changed chan struct{}
}

func newReceiver(tb testing.TB, status func(n int) int) *receiver {
	tb.Helper()
	rc := &receiver{status: status}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.got)
		rc.got = append(rc.got, received{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Header: r.Header.Clone(), Body: body, At: time.Now()})
		if rc.changed != nil {
			close(rc.changed)
			rc.changed = nil
		}
		rc.mu.Unlock()
		code := http.StatusOK
		if rc.status != nil {
			code = rc.status(n)
		}
		w.Header().Set("X-Receiver", "yes")
		w.WriteHeader(code)
		_, _ = w.Write([]byte("receiver saw " + r.Method + " " + r.URL.Path))
	}))
	tb.Cleanup(rc.srv.Close)
	return rc
}

// requests returns a copy of what the receiver got so far.
func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// waitFor waits until cond holds for what the receiver got.
func (rc *receiver) waitFor(tb testing.TB, what string, cond func([]received) bool) []received {
	tb.Helper()
	got, ok := rc.await(cond)
	if !ok {
		tb.Fatalf("receiver: timed out waiting for %s; got %d requests", what, len(got))
	}
	return got
}

// await is waitFor that reports a timeout (ok false, with what arrived)
// instead of failing the test.
func (rc *receiver) await(cond func([]received) bool) (got []received, ok bool) {
	deadline := time.After(waitLimit)
	for {
		rc.mu.Lock()
		got := append([]received(nil), rc.got...)
		if cond(got) {
			rc.mu.Unlock()
			return got, true
		}
		if rc.changed == nil {
			rc.changed = make(chan struct{})
		}
		ch := rc.changed
		rc.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return got, false
		}
	}
}

// countHooks waits until the receiver got n hooks in total (batches
// counted by their arrays).
func (rc *receiver) waitHooks(tb testing.TB, n int) []received {
	tb.Helper()
	return rc.waitFor(tb, "hooks", func(got []received) bool {
		total := 0
		for _, r := range got {
			var hs []json.RawMessage
			if json.Unmarshal(r.Body, &hs) == nil {
				total += len(hs)
			}
		}
		return total >= n
	})
}

// clientRequest and clientResponse are what testdata/client.py reads and writes.
type clientRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers,omitempty"`
}

type clientResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// pythonEnv is a clean environment for the app's processes: no proxy
// variables of the machine, no byte-code files written into the tree.
func pythonEnv(extra ...string) []string {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir(), "PYTHONDONTWRITEBYTECODE=1", "NO_PROXY=", "no_proxy="}
	return append(env, extra...)
}

// postWithPython sends reqs through the proxy with python requests on one
// Session, as the app does, and returns the responses.
func postWithPython(tb testing.TB, proxyURL string, reqs []clientRequest, env ...string) []clientResponse {
	tb.Helper()
	in, err := json.Marshal(reqs)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "client.py"), proxyURL)
	cmd.Env = pythonEnv(env...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("client.py: %v\n%s", err, stderr.String())
	}
	var resps []clientResponse
	if err := json.Unmarshal(out, &resps); err != nil {
		tb.Fatalf("client.py output: %v: %s", err, out)
	}
	return resps
}

// hookRequests makes n JSON hook posts to url, numbered from first.
func hookRequests(url string, first, n int) []clientRequest {
	reqs := make([]clientRequest, n)
	for i := range reqs {
		reqs[i] = clientRequest{
			Method:  "POST",
			URL:     url,
			Body:    `{"hook":{"event":"book.added","target":"` + url + `"},"data":{"pk":` + itoa(first+i) + `}}`,
			Headers: map[string]string{"Content-Type": "application/json"},
		}
	}
	return reqs
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// pks returns the data.pk of each hook body, in order.
func pks(tb testing.TB, hooks []json.RawMessage) []int {
	tb.Helper()
	out := make([]int, 0, len(hooks))
	for _, h := range hooks {
		var v struct {
			Data struct {
				PK int `json:"pk"`
			} `json:"data"`
		}
		if err := json.Unmarshal(h, &v); err != nil {
			tb.Fatalf("hook body: %v: %s", err, h)
		}
		out = append(out, v.Data.PK)
	}
	return out
}

// TestMain fences DNS off for the hookproxy run in this process: the
// names tests use as mere labels are never looked up, so a regression
// that sent one of their requests upstream fails instead of leaving the
// machine (/etc/hosts still answers for localhost). It removes the
// binary buildBinary built.
func TestMain(m *testing.M) {
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("the tests resolve no names through DNS")
	}}
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}
