package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"hookproxy/admin/admintest"
	"hookproxy/buffer"
)

// TestMetricsExposition: the event methods and the store's state show in
// /metrics with the exact values, under conventional names, and no label
// carries a target.
func TestMetricsExposition(t *testing.T) {
	clk := newClock()
	st := openStore(t, clk)
	m := NewMetrics("v1.2.3")
	prog := &progress{}
	prog.set(3 * time.Second)
	_, url := serve(t, Options{Store: st, Metrics: m, Progress: prog, Now: clk.Now,
		DiskUsage: func() (int64, int64) { return 1000, 234 },
		Space:     func() (int64, int64, bool) { return 5000, 4000, true }})

	put(t, st, "http://a.test/", `{"n":1}`, `{"n":2}`)
	put(t, st, "http://b.test/", `{"n":3}`)
	kill(t, st, clk, "http://b.test/", 0, "status", 400)
	clk.Add(90 * time.Second)

	for _, h := range []*buffer.Hook{{Body: []byte(`{"n":1}`)}, {Body: []byte(`{"n":2}`)}, {Body: []byte(`{"n":3}`)}} {
		m.CaptureObserved(h, time.Millisecond)
	}
	m.Refused("too-large")
	m.Refused("too-large")
	m.Refused("client-gone")
	m.Forwarded()
	m.PassThrough(&http.Request{Method: "GET"})
	m.PassThrough(&http.Request{Method: "CONNECT"})
	m.PassThrough(&http.Request{Method: "POST"})
	m.Attempt("retryable", 503, 20*time.Millisecond, 2)
	m.Attempt("retryable", 0, 15*time.Second, 2)
	m.Attempt("delivered", 200, 10*time.Millisecond, 2)
	m.Delivered(2)
	m.Attempt("permanent", 400, 10*time.Millisecond, 1)
	m.GivenUp("status", 1)

	fams := admintest.Scrape(t, url, "")
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hookproxy_hooks_captured_total", nil, 3},
		{"hookproxy_captured_body_bytes_total", nil, 21},
		{"hookproxy_capture_duration_seconds", nil, 3},
		{"hookproxy_hooks_refused_total", []string{"reason=too-large"}, 2},
		{"hookproxy_hooks_refused_total", []string{"reason=client-gone"}, 1},
		{"hookproxy_hooks_refused_total", []string{"reason=pending-full"}, 0},
		{"hookproxy_hooks_forwarded_total", nil, 1},
		{"hookproxy_passthrough_requests_total", []string{"kind=http"}, 2},
		{"hookproxy_passthrough_requests_total", []string{"kind=connect"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=retryable", "status_class=5xx"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=retryable", "status_class=network"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=delivered", "status_class=2xx"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=permanent", "status_class=4xx"}, 1},
		{"hookproxy_delivery_attempts_total", []string{"outcome=permanent", "status_class=3xx"}, 0},
		{"hookproxy_delivery_duration_seconds", []string{"outcome=retryable"}, 2},
		{"hookproxy_batches_delivered_total", nil, 1},
		{"hookproxy_hooks_delivered_total", nil, 2},
		{"hookproxy_batches_given_up_total", []string{"reason=status"}, 1},
		{"hookproxy_batches_given_up_total", []string{"reason=retries-exhausted"}, 0},
		{"hookproxy_hooks_given_up_total", []string{"reason=status"}, 1},
		{"hookproxy_batch_size_hooks", nil, 2},
		{"hookproxy_pending_hooks", nil, 2},
		{"hookproxy_pending_bytes", nil, 14},
		{"hookproxy_pending_targets", nil, 1},
		{"hookproxy_oldest_pending_age_seconds", nil, 90},
		{"hookproxy_sender_overdue_seconds", nil, 3},
		{"hookproxy_dead_letters", nil, 1},
		{"hookproxy_dead_letter_hooks", nil, 1},
		{"hookproxy_targets_gone", nil, 0},
		{"hookproxy_store_disk_bytes", []string{"part=lsm"}, 1000},
		{"hookproxy_store_disk_bytes", []string{"part=vlog"}, 234},
		{"hookproxy_store_free_bytes", nil, 5000},
		{"hookproxy_store_reserve_bytes", nil, 4000},
		{"hookproxy_ready", nil, 1},
		{"hookproxy_build_info", []string{"version=v1.2.3"}, 1},
	} {
		if got, _ := admintest.Series(t, fams, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("Go runtime or process metrics missing")
	}

	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.HasPrefix(name, "hookproxy_") {
			t.Errorf("metric %s lacks the hookproxy_ prefix", name)
		}
		if (f.GetType() == dto.MetricType_COUNTER) != strings.HasSuffix(name, "_total") {
			t.Errorf("metric %s: counters, and only counters, end in _total", name)
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "://") || strings.Contains(v, ".test") {
					t.Errorf("metric %s carries a target in label %s=%q", name, l.GetName(), v)
				}
			}
		}
	}

	// The dead-letter figures follow a purge made through the API.
	if code := admintest.Call(t, "DELETE", url+"/api/dead-letters?all=true", "", nil, nil); code != 200 {
		t.Fatalf("purge: %d", code)
	}
	if got, _ := admintest.Series(t, admintest.Scrape(t, url, ""), "hookproxy_dead_letters"); got != 0 {
		t.Errorf("hookproxy_dead_letters after purge = %v, want 0", got)
	}
}

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{0: "network", 200: "2xx", 204: "2xx", 301: "3xx", 410: "4xx", 503: "5xx", 99: "other", 700: "other"} {
		if got := statusClass(status); got != want {
			t.Errorf("statusClass(%d) = %q, want %q", status, got, want)
		}
	}
}

// TestMetricsOnOneServer: a Metrics feeds one server; a second one is
// refused instead of panicking on duplicate registration.
// failingDeadLetters is a store whose dead letters cannot be read.
type failingDeadLetters struct{ *buffer.Store }

func (failingDeadLetters) DeadLetterPage(buffer.DeadLetterFilter, int, int) ([]buffer.DeadLetter, int, error) {
	return nil, 0, errors.New("disk on fire")
}

func (failingDeadLetters) DeadLetterTotals() (buffer.DeadTotals, error) {
	return buffer.DeadTotals{}, errors.New("disk on fire")
}

// TestMetricNamesAfterAStoreError: a scrape during which the store fails
// leaves out what it cannot answer, and adds no metric of its own.
func TestMetricNamesAfterAStoreError(t *testing.T) {
	_, url := serve(t, Options{Store: failingDeadLetters{openStore(t, newClock())}, Metrics: NewMetrics("x")})
	// An error counter of promhttp's would show from the second scrape on.
	for i := range 2 {
		fams := admintest.Scrape(t, url, "")
		for name := range fams {
			if !strings.HasPrefix(name, "hookproxy_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
				t.Errorf("scrape %d: metric family %s is not hookproxy_*, go_* or process_*", i+1, name)
			}
		}
		for _, name := range []string{"hookproxy_dead_letters", "hookproxy_dead_letter_hooks"} {
			if fams[name] != nil {
				t.Errorf("scrape %d: %s is there, though the store could not count the dead letters", i+1, name)
			}
		}
		if fams["hookproxy_pending_hooks"] == nil {
			t.Errorf("scrape %d: hookproxy_pending_hooks is missing: one failing gauge took the others with it", i+1)
		}
	}
}

func TestMetricsOnOneServer(t *testing.T) {
	st := openStore(t, newClock())
	m := NewMetrics("x")
	if _, err := New(Options{Store: st, Metrics: m}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Store: st, Metrics: m}); err == nil {
		t.Error("second server on the same Metrics accepted")
	}
}

// TestGrafanaDashboard: the dashboard is valid JSON, every metric its
// queries name is one hookproxy exports, and every hookproxy_ metric but
// the build info is on it (the README has operators alert on free space
// against the reserve).
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/hookproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	m := NewMetrics("x")
	if _, err := New(Options{Store: openStore(t, newClock()), Metrics: m, Progress: &progress{},
		DiskUsage: func() (int64, int64) { return 0, 0 },
		Space:     func() (int64, int64, bool) { return 1 << 30, 64 << 20, true }}); err != nil {
		t.Fatal(err)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]string{} // series name: its family's
	for _, f := range fams {
		exported[f.GetName()] = f.GetName()
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exported[f.GetName()+s] = f.GetName()
			}
		}
	}
	name := regexp.MustCompile(`\b(hookproxy|go|process)_[a-z_]+\b`)
	queries := 0
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			for _, n := range name.FindAllString(tg.Expr, -1) {
				if exported[n] == "" {
					t.Errorf("panel %q queries %s, which hookproxy does not export", p.Title, n)
				}
				queried[exported[n]] = true
			}
		}
	}
	if queries < 20 {
		t.Errorf("dashboard has %d queries; expected one panel per metric group", queries)
	}
	for _, f := range fams {
		if n := f.GetName(); strings.HasPrefix(n, "hookproxy_") && n != "hookproxy_build_info" && !queried[n] {
			t.Errorf("no panel queries %s", n)
		}
	}
}
