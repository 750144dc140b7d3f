package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hookproxy/admin"
	"hookproxy/admin/admintest"
	"hookproxy/buffer"
	"hookproxy/egress"
	"hookproxy/proxy"
	"hookproxy/sender"
)

// stack is hookproxy's parts wired as serve wires them (store, sender,
// proxy, admin server, one Metrics fed by the observer hooks), on
// loopback listeners, with the sender's observers also reporting to the
// test so that it waits for events instead of sleeping.
type stack struct {
	store    *buffer.Store
	snd      *sender.Sender
	proxyURL string
	adminURL string
	// skew is added to the admin server's clock: readiness can look into
	// the future instead of the test waiting for it.
	skew atomic.Int64

	finished chan string // "delivered" or "given-up:<reason>", one per batch
	// notified receives each status the store sends the sender (it does
	// so after answering Put, so a 202 comes before the sender knows).
	notified chan buffer.TargetStatus

	mu      sync.Mutex
	stopRun func() // stops the running sender and waits for it
}

func newStack(tb testing.TB, so sender.Options, ao admin.Options) *stack {
	tb.Helper()
	store, err := buffer.Open(buffer.Options{Dir: tb.TempDir(), GCInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	st := &stack{store: store, finished: make(chan string, 100), notified: make(chan buffer.TargetStatus, 1000)}
	metrics := admin.NewMetrics("test")
	so.Store = store
	so.Guard = &egress.Guard{AllowPrivate: true} // the receivers are on loopback
	so.OnAttempt = metrics.Attempt
	so.OnDelivered = func(n int) {
		metrics.Delivered(n)
		st.finished <- "delivered"
	}
	so.OnGivenUp = func(reason string, n int) {
		metrics.GivenUp(reason, n)
		st.finished <- "given-up:" + reason
	}
	snd, err := sender.New(so)
	if err != nil {
		tb.Fatal(err)
	}
	st.snd = snd
	store.SetNotify(func(s buffer.TargetStatus) {
		snd.Notify(s)
		select {
		case st.notified <- s:
		default: // nobody waits for that many
		}
	})

	px, err := proxy.New(proxy.Options{Store: store, RequireValidJSON: true,
		OnCapture: metrics.CaptureObserved, OnPassThrough: metrics.PassThrough})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- px.Serve(ln) }()
	st.proxyURL = "http://" + ln.Addr().String()

	ao.Store, ao.Progress, ao.Metrics, ao.DiskUsage, ao.OnTargetChange = store, snd, metrics, store.DiskUsage, snd.Notify
	ao.Now = func() time.Time { return time.Now().Add(time.Duration(st.skew.Load())) }
	adm, err := admin.New(ao)
	if err != nil {
		tb.Fatal(err)
	}
	as := httptest.NewServer(adm)
	st.adminURL = as.URL

	tb.Cleanup(func() {
		st.stop()
		as.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := px.Shutdown(ctx); err != nil {
			tb.Error(err)
		}
		if err := <-served; err != nil {
			tb.Error(err)
		}
		if err := store.Close(); err != nil {
			tb.Error(err)
		}
	})
	st.start()
	return st
}

// start runs the sender.
func (st *stack) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = st.snd.Run(ctx, ctx)
	}()
	st.mu.Lock()
	st.stopRun = func() { cancel(); <-done }
	st.mu.Unlock()
}

// stop stops the sender and waits until Run has returned.
func (st *stack) stop() {
	st.mu.Lock()
	stop := st.stopRun
	st.stopRun = nil
	st.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// waitFinished waits for n batches to finish and returns how each did.
func (st *stack) waitFinished(tb testing.TB, n int) []string {
	tb.Helper()
	var got []string
	deadline := time.After(waitLimit)
	for len(got) < n {
		select {
		case f := <-st.finished:
			got = append(got, f)
		case <-deadline:
			tb.Fatalf("waited for %d batches to finish; got %v", n, got)
		}
	}
	return got
}

// proxyClient sends requests through the proxy, as the app does.
func proxyClient(tb testing.TB, proxyURL string) *http.Client {
	tb.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		tb.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u)}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// postHooks posts the hooks through the proxy and checks each got 202.
func postHooks(tb testing.TB, c *http.Client, reqs []clientRequest) {
	tb.Helper()
	for _, r := range reqs {
		resp, err := c.Post(r.URL, "application/json", strings.NewReader(r.Body))
		if err != nil {
			tb.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			tb.Fatalf("POST %s through the proxy: %d, want 202", r.URL, resp.StatusCode)
		}
	}
}

// TestMetricsAfterScriptedRun: captures, a pass-through, a target that
// fails then succeeds, and a dead-lettered batch show in /metrics with
// the exact counts.
func TestMetricsAfterScriptedRun(t *testing.T) {
	ok := newReceiver(t, nil)
	flaky := newReceiver(t, func(n int) int {
		if n == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	bad := newReceiver(t, func(int) int { return http.StatusBadRequest })
	st := newStack(t, sender.Options{BatchSize: 2, Retries: 1, RetryInterval: 10 * time.Millisecond}, admin.Options{})
	c := proxyClient(t, st.proxyURL)

	var reqs []clientRequest
	reqs = append(reqs, hookRequests(ok.srv.URL+"/ok", 0, 4)...)
	reqs = append(reqs, hookRequests(flaky.srv.URL+"/flaky", 10, 2)...)
	reqs = append(reqs, hookRequests(bad.srv.URL+"/bad", 20, 2)...)
	bodyBytes := 0
	for _, r := range reqs {
		bodyBytes += len(r.Body)
	}
	postHooks(t, c, reqs)
	resp, err := c.Get(ok.srv.URL + "/page") // not a hook: passes through
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	got := st.waitFinished(t, 4)
	delivered, givenUp := 0, 0
	for _, f := range got {
		switch f {
		case "delivered":
			delivered++
		case "given-up:" + sender.ReasonStatus:
			givenUp++
		default:
			t.Fatalf("unexpected batch end %q", f)
		}
	}
	if delivered != 3 || givenUp != 1 {
		t.Fatalf("batches ended %v, want 3 delivered and 1 given up", got)
	}

	lsmBefore, vlogBefore := st.store.DiskUsage()
	fams := admintest.Scrape(t, st.adminURL, "")
	lsmAfter, vlogAfter := st.store.DiskUsage()
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hookproxy_hooks_captured_total", nil, 8},
		{"hookproxy_captured_body_bytes_total", nil, float64(bodyBytes)},
		{"hookproxy_capture_duration_seconds", nil, 8},
		{"hookproxy_passthrough_requests_total", []string{"kind=http"}, 1},
		{"hookproxy_passthrough_requests_total", []string{"kind=connect"}, 0},
		{"hookproxy_delivery_attempts_total", []string{"outcome=delivered", "status_class=2xx"}, 3},
		{"hookproxy_delivery_attempts_total", []string{"outcome=retryable", "status_class=5xx"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=permanent", "status_class=4xx"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=retryable", "status_class=network"}, 0},
		{"hookproxy_delivery_duration_seconds", []string{"outcome=delivered"}, 3},
		{"hookproxy_delivery_duration_seconds", []string{"outcome=retryable"}, 1},
		{"hookproxy_delivery_duration_seconds", []string{"outcome=permanent"}, 1},
		{"hookproxy_batches_delivered_total", nil, 3},
		{"hookproxy_hooks_delivered_total", nil, 6},
		{"hookproxy_batches_given_up_total", []string{"reason=status"}, 1},
		{"hookproxy_batches_given_up_total", []string{"reason=retries-exhausted"}, 0},
		{"hookproxy_hooks_given_up_total", []string{"reason=status"}, 2},
		{"hookproxy_batch_size_hooks", nil, 4},
		{"hookproxy_pending_hooks", nil, 0},
		{"hookproxy_pending_bytes", nil, 0},
		{"hookproxy_pending_targets", nil, 0},
		{"hookproxy_oldest_pending_age_seconds", nil, 0},
		{"hookproxy_dead_letters", nil, 1},
		{"hookproxy_dead_letter_hooks", nil, 2},
		{"hookproxy_ready", nil, 1},
	} {
		if got, _ := admintest.Series(t, fams, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if _, sum := admintest.Series(t, fams, "hookproxy_batch_size_hooks"); sum != 8 {
		t.Errorf("batch sizes sum to %v, want 8", sum)
	}
	// The store's files change as it writes: the scrape saw the sizes of
	// just before or of just after. And they are not 0: the hooks sit in
	// the memtable's log (lsm), and the value log being written has its
	// header (vlog). Comparing with DiskUsage alone let a DiskUsage that
	// always said 0 through.
	lsm, _ := admintest.Series(t, fams, "hookproxy_store_disk_bytes", "part=lsm")
	vlog, _ := admintest.Series(t, fams, "hookproxy_store_disk_bytes", "part=vlog")
	if (lsm != float64(lsmBefore) || vlog != float64(vlogBefore)) && (lsm != float64(lsmAfter) || vlog != float64(vlogAfter)) {
		t.Errorf("disk bytes lsm %v vlog %v, want the store's %d/%d (or %d/%d)", lsm, vlog, lsmBefore, vlogBefore, lsmAfter, vlogAfter)
	}
	if lsm == 0 || vlog == 0 {
		t.Errorf("disk bytes lsm %v vlog %v after %d hooks: want both above 0", lsm, vlog, len(reqs))
	}
}

// TestReadinessFollowsTheSender: /readyz turns 503 while the sender is
// stopped with a batch due for longer than the stall limit, and 200 again
// once it runs and takes the batch.
func TestReadinessFollowsTheSender(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(int) int { <-release; return http.StatusOK })
	defer close(release)
	const stallAfter = time.Minute
	st := newStack(t, sender.Options{}, admin.Options{StallAfter: stallAfter})
	ready := func(want int, wantCheck string) {
		t.Helper()
		var rd admin.Readiness
		code := admintest.Call(t, "GET", st.adminURL+"/readyz", "", nil, &rd)
		check := ""
		if len(rd.Reasons) > 0 {
			check = rd.Reasons[0].Check
		}
		if code != want || check != wantCheck || len(rd.Reasons) > 1 {
			t.Fatalf("/readyz = %d %+v, want %d %s", code, rd, want, wantCheck)
		}
	}
	// Readiness looks one stall limit (and a second) ahead from here on.
	st.skew.Store(int64(stallAfter + time.Second))
	ready(http.StatusOK, "")

	st.stop()
	postHooks(t, proxyClient(t, st.proxyURL), hookRequests(rc.srv.URL+"/r", 0, 1))
	select {
	case <-st.notified: // the sender scheduled the hook
	case <-time.After(waitLimit):
		t.Fatal("the store did not notify the sender")
	}
	ready(http.StatusServiceUnavailable, admin.CheckSender)

	st.start()
	// The sender took the batch: it is in flight, nothing is overdue.
	rc.waitFor(t, "the batch", func(g []received) bool { return len(g) == 1 })
	ready(http.StatusOK, "")
	release <- struct{}{}
	if got := st.waitFinished(t, 1); got[0] != "delivered" {
		t.Fatalf("batch %s, want delivered", got[0])
	}
}

// TestMetricsKnowTheSendersLabels: every give-up reason and outcome the
// sender reports has its series from the start, at zero.
func TestMetricsKnowTheSendersLabels(t *testing.T) {
	fams, err := admin.NewMetrics("x").Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				have[f.GetName()+":"+l.GetName()+"="+l.GetValue()] = true
			}
		}
	}
	for _, r := range []string{sender.ReasonRetriesExhausted, sender.ReasonMaxAge, sender.ReasonStatus,
		sender.ReasonGone, sender.ReasonBlocked, sender.ReasonInvalid} {
		if !have["hookproxy_batches_given_up_total:reason="+r] {
			t.Errorf("no hookproxy_batches_given_up_total series for reason %q", r)
		}
	}
	for _, o := range []string{sender.OutcomeDelivered, sender.OutcomeRetryable, sender.OutcomePermanent} {
		if !have["hookproxy_delivery_attempts_total:outcome="+o] {
			t.Errorf("no hookproxy_delivery_attempts_total series for outcome %q", o)
		}
	}
}
