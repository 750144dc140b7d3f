package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestRestartDeliversAcknowledgedHooks: hooks acknowledged before a stop,
// including a batch in flight at the time, are delivered after a restart
// on the same data dir, the in-flight batch under the same id.
func TestRestartDeliversAcknowledgedHooks(t *testing.T) {
	var healthy atomic.Bool
	rc := newReceiver(t, func(int) int {
		if healthy.Load() {
			return 200
		}
		return 503
	})
	dir := t.TempDir()
	settings := map[string]string{
		"DATA_DIR": dir, "BATCH_SIZE": "3", "BATCH_MAX_WAIT": "1s",
		"RETRIES": "1000", "RETRY_INTERVAL": "1s", "DRAIN_TIMEOUT": "0",
	}
	hp := startHookproxy(t, settings)
	url := rc.srv.URL + "/restart"
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(url, 0, 5)))
	first := rc.waitFor(t, "a failed attempt", func(g []received) bool { return len(g) >= 1 })
	inflightID := first[0].Header.Get("Idempotency-Key")
	if len(inflightID) != 26 {
		t.Fatalf("the failed attempt has Idempotency-Key %q, want a batch id", inflightID)
	}
	hp.stop(t)
	before := len(rc.requests())

	healthy.Store(true)
	hp = startHookproxy(t, settings)
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(url, 5, 2)))
	// At least 7: a repeat (allowed, at least once) then fails the
	// comparison below with what arrived, instead of a timeout.
	got := rc.waitFor(t, "all 7 hooks delivered", func(g []received) bool {
		return len(delivered(t, g[before:])) >= 7
	})
	after := got[before:]
	if after[0].Header.Get("Idempotency-Key") != inflightID {
		t.Fatalf("first batch after restart has id %s, want the in-flight batch %s", after[0].Header.Get("Idempotency-Key"), inflightID)
	}
	if p := delivered(t, after); !slices.Equal(p, seq(0, 7)) {
		t.Fatalf("delivered after restart: %v, want 0..6 in order", p)
	}
}

// delivered returns the pks of the batches in got, in order (got holds
// only successful deliveries when the receiver was healthy throughout).
func delivered(tb testing.TB, got []received) []int {
	tb.Helper()
	return allPKs(tb, got)
}

// binDir holds the binary buildBinary built; TestMain removes it.
var binDir string

// buildBinary builds hookproxy once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "hookproxy-bin")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "hookproxy")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: out}
	}
	return bin, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + ": " + string(e.out) }

// process is hookproxy running as a subprocess of the built binary.
type process struct {
	cmd      *exec.Cmd
	logs     *lockedBuffer
	proxyURL string
	exited   chan struct{}
	err      error
}

func startProcess(tb testing.TB, settings map[string]string) *process {
	tb.Helper()
	bin, err := buildBinary()
	if err != nil {
		tb.Fatalf("build: %v", err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, testEnviron(tb, settings)...)
	p := &process{cmd: cmd, logs: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	url, ok := waitStarted(p.logs, p.exited)
	if !ok {
		_ = cmd.Process.Kill()
		<-p.exited
		tb.Fatalf("hookproxy did not start: %v\n%s", p.err, p.logs.String())
	}
	p.proxyURL = url
	return p
}

func (p *process) signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatal(err)
	}
}

// signalUntilExit sends sig every tenth of a second until the process
// exits.
func (p *process) signalUntilExit(tb testing.TB, sig os.Signal) {
	tb.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for {
		select {
		case <-p.exited:
			return
		case <-deadline:
			tb.Fatalf("hookproxy did not exit at repeated %v\n%s", sig, p.logs.String())
		case <-tick.C:
			_ = p.cmd.Process.Signal(sig) // it may have exited meanwhile
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(tb testing.TB) int {
	tb.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitLimit):
		tb.Fatalf("hookproxy did not exit\n%s", p.logs.String())
		return -1
	}
}

// TestSIGTERMSendsPendingBatches: partial batches (below size, window
// not over) are sent at SIGTERM, before the process exits.
func TestSIGTERMSendsPendingBatches(t *testing.T) {
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	p := startProcess(t, map[string]string{"BATCH_SIZE": "100", "BATCH_TIME": "1h"})
	checkAccepted(t, postWithPython(t, p.proxyURL, append(hookRequests(a.srv.URL+"/a", 0, 4), hookRequests(b.srv.URL+"/b", 0, 2)...)))
	if n := len(a.requests()) + len(b.requests()); n != 0 {
		t.Fatalf("receivers got %d requests before the window ended", n)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.logs.String())
	}
	if got := allPKs(t, a.requests()); !slices.Equal(got, seq(0, 4)) {
		t.Errorf("target a got %v before exit, want 0..3", got)
	}
	if got := allPKs(t, b.requests()); !slices.Equal(got, seq(0, 2)) {
		t.Errorf("target b got %v before exit, want 0..1", got)
	}
}

// TestShutdownLetsAttemptsFinish: a batch whose attempt is in progress at
// SIGTERM, to a receiver that answers within the send timeout, reaches
// it once: the attempt finishes (within the drain deadline) instead of
// being cut and sent again by the drain.
func TestShutdownLetsAttemptsFinish(t *testing.T) {
	arrived, release, cut := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
	rc := newReceiver(t, nil)
	hp := startHookproxy(t, map[string]string{"DRAIN_TIMEOUT": "1m", "SEND_TIMEOUT": "1m"})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read first: the server notices a client gone only once the
		// body is read.
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
			select {
			case cut <- struct{}{}:
			default:
			}
			return
		}
		rc.srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer slow.Close()
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo() // before slow.Close, which waits for the handlers
	checkAccepted(t, postWithPython(t, hp.proxyURL, hookRequests(slow.URL+"/slow", 0, 1)))
	select {
	case <-arrived:
	case <-time.After(waitLimit):
		t.Fatal("the batch did not reach the receiver")
	}
	hp.cancel() // SIGTERM, while the receiver holds the attempt
	// Either the shutdown cuts the attempt, or it says it lets it finish.
	deadline := time.After(waitLimit)
	for {
		changed := hp.logs.wait()
		if strings.Contains(hp.logs.String(), "no new delivery attempts; those in progress may finish") {
			break
		}
		select {
		case <-cut:
			t.Fatal("the attempt in progress was cut at shutdown")
		case <-changed:
		case <-deadline:
			t.Fatalf("no word of the attempt in progress\n%s", hp.logs.String())
		}
	}
	letGo()
	hp.stop(t)
	if got := rc.requests(); len(got) != 1 {
		t.Fatalf("receiver got the batch %d times, want once", len(got))
	}
}

// TestDoubledSignalDrains: a SIGTERM delivered twice at once (coreutils'
// timeout signals the process and then its process group) is one
// request to shut down: the drain runs and sends the pending batch.
func TestDoubledSignalDrains(t *testing.T) {
	rc := newReceiver(t, nil)
	p := startProcess(t, map[string]string{"BATCH_SIZE": "100", "BATCH_TIME": "1h"})
	checkAccepted(t, postWithPython(t, p.proxyURL, hookRequests(rc.srv.URL+"/a", 0, 3)))
	p.signal(t, syscall.SIGTERM)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0 (a drain)\n%s", code, p.logs.String())
	}
	if got := allPKs(t, rc.requests()); !slices.Equal(got, seq(0, 3)) {
		t.Errorf("receiver got %v before exit, want 0..2", got)
	}
}

// TestRepeatedSignalWindow: awaitSignals shuts down at the first signal,
// takes one within repeatWindow of it for the same, and returns at one
// after it.
func TestRepeatedSignalWindow(t *testing.T) {
	sigs := make(chan os.Signal)
	times := make(chan time.Time) // what each call of now returns, in turn
	shutdown := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		awaitSignals(sigs, func() { close(shutdown) }, func() time.Time { return <-times })
		close(returned)
	}()
	signalAt := func(what string, at time.Time) {
		t.Helper()
		for _, step := range []func(){func() { sigs <- syscall.SIGTERM }, func() { times <- at }} {
			done := make(chan struct{})
			go func() { step(); close(done) }()
			select {
			case <-done:
			case <-returned:
				t.Fatalf("awaitSignals returned before %s", what)
			}
		}
	}
	t0 := time.Unix(1000, 0)
	signalAt("the first signal", t0)
	<-shutdown
	signalAt("a signal within the window", t0.Add(repeatWindow-time.Millisecond))
	select {
	case sigs <- syscall.SIGTERM:
	case <-returned:
		t.Fatal("awaitSignals returned at a signal within repeatWindow of the first")
	}
	times <- t0.Add(repeatWindow)
	select {
	case <-returned:
	case <-time.After(waitLimit):
		t.Fatal("awaitSignals did not return at a signal repeatWindow after the first")
	}
}

// TestSecondSignalExitsAtOnce: a drain stuck on a receiver that never
// answers ends at a second signal, leaving the batch on disk.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo()
	rc := newReceiver(t, func(int) int { <-release; return 200 })
	settings := map[string]string{"DATA_DIR": t.TempDir(), "BATCH_SIZE": "100", "BATCH_TIME": "1h", "DRAIN_TIMEOUT": "10m", "SEND_TIMEOUT": "10m"}
	p := startProcess(t, settings)
	checkAccepted(t, postWithPython(t, p.proxyURL, hookRequests(rc.srv.URL+"/stuck", 0, 1)))
	p.signal(t, syscall.SIGTERM)
	rc.waitFor(t, "the drain's attempt", func(g []received) bool { return len(g) == 1 })
	// A signal within repeatWindow of the first counts as the same one:
	// signal until hookproxy exits.
	p.signalUntilExit(t, syscall.SIGTERM)
	if code := p.wait(t); code != 130 {
		t.Fatalf("exit code %d, want 130\n%s", code, p.logs.String())
	}
	// The batch stayed on disk: the next start sends it again.
	letGo()
	startProcess(t, settings) // stopped at the end of the test
	got := rc.waitFor(t, "the batch again after the restart", func(g []received) bool { return len(g) == 2 })
	if pks := allPKs(t, got[1:]); !slices.Equal(pks, seq(0, 1)) {
		t.Fatalf("after the restart the receiver got %v, want hook 0", pks)
	}
	if id := got[0].Header.Get("Idempotency-Key"); len(id) != 26 || got[1].Header.Get("Idempotency-Key") != id {
		t.Errorf("the batch came back with another id: %s, was %s", got[1].Header.Get("Idempotency-Key"), got[0].Header.Get("Idempotency-Key"))
	}
}

// TestDjangoAppThroughHookproxy runs a Django project with the real
// django-rest-hooks (Debian's python3-django-rest-hooks), which knows
// nothing of hookproxy but HTTP_PROXY.
func TestDjangoAppThroughHookproxy(t *testing.T) {
	t0, t1 := newReceiver(t, nil), newReceiver(t, nil)
	// Full batches go at once; the remainder goes at shutdown (the drain),
	// so the batch sizes do not depend on how fast the app runs.
	hp := startHookproxy(t, map[string]string{"BATCH_SIZE": "4", "BATCH_TIME": "1h"})
	const books = 10
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "djangoapp", "run_app.py"), itoa(books), t0.srv.URL+"/t0", t1.srv.URL+"/t1")
	cmd.Env = pythonEnv("HTTP_PROXY="+hp.proxyURL, "HTTPS_PROXY="+hp.proxyURL, "APP_DB="+filepath.Join(t.TempDir(), "app.sqlite3"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("django app: %v\n%s%s", err, out, stderr.String())
	}
	t0.waitHooks(t, 8)
	t1.waitHooks(t, 8)
	hp.stop(t)
	for name, rc := range map[string]*receiver{"t0": t0, "t1": t1} {
		got := rc.requests()
		if sizes := batchSizes(t, got); !slices.Equal(sizes, []int{4, 4, 2}) {
			t.Errorf("%s: batch sizes %v, want [4 4 2]", name, sizes)
		}
		if p := allPKs(t, got); !slices.Equal(p, seq(1, books)) {
			t.Errorf("%s: books %v, want 1..%d in order", name, p, books)
		}
		for _, r := range got {
			checkBatchHeaders(t, r)
			if r.Path != "/"+name {
				t.Errorf("%s: batch went to %s", name, r.Path)
			}
		}
	}
}

// TestWarnExposed: a proxy or an admin API that other hosts can reach
// without credentials is warned about at start, naming the setting that
// closes it; one on loopback, or with credentials, is not.
func TestWarnExposed(t *testing.T) {
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	any6 := &net.TCPAddr{IP: net.IPv6unspecified, Port: 9090}
	lo4 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	lo6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 9090}
	for _, tt := range []struct {
		name         string
		cfg          Config
		proxy, admin net.Addr
		warnProxy    bool
		warnAdmin    bool
	}{
		{"both open", Config{}, any4, any6, true, true},
		{"both on loopback", Config{}, lo4, lo6, false, false},
		{"proxy open, with credentials", Config{ProxyAuth: "app:secret"}, any4, lo6, false, false},
		{"admin open, with a token", Config{AdminToken: "t0ken"}, lo4, any6, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			warnExposed(slog.New(slog.NewTextHandler(&buf, nil)), tt.cfg, tt.proxy, tt.admin)
			logs := buf.String()
			if got := strings.Contains(logs, "HOOKPROXY_PROXY_AUTH"); got != tt.warnProxy {
				t.Errorf("proxy warning %v, want %v:\n%s", got, tt.warnProxy, logs)
			}
			if got := strings.Contains(logs, "HOOKPROXY_ADMIN_TOKEN"); got != tt.warnAdmin {
				t.Errorf("admin warning %v, want %v:\n%s", got, tt.warnAdmin, logs)
			}
		})
	}
}
