package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the benchmark's helper
// processes (the no-op endpoint), as the benchmark binary does.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := serveRole(role, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestShortRunProducesEveryFigure runs the whole program in -short mode,
// in-process, and checks that every scenario produced every figure (a
// finite number, not zero unless the row says it may be), the markdown
// and the chart. It checks that the program works, not the values.
func TestShortRunProducesEveryFigure(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "BENCHMARKS.md")
	chart := filepath.Join(dir, "docs", "latency.png")
	logs := &lockedWriter{}
	start := time.Now()
	rep, err := run(t.Context(), []string{"-short", "-out", out, "-png", chart, "-tmp", dir}, io.Discard, logs)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, logs)
	}
	t.Logf("short run took %v", time.Since(start).Round(time.Millisecond))

	_, redisErr := findRedis("")
	checkReport(t, rep, redisErr != nil)

	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Machine", "## Headline targets", "(docs/latency.png)", "## How the figures are made"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
	for _, sec := range rep.sections {
		if !bytes.Contains(md, []byte("## "+sec.title)) {
			t.Errorf("BENCHMARKS.md lacks section %q", sec.title)
		}
	}
	checkPNG(t, chart)
}

// checkReport checks every section is there and every figure is a
// number; without redis-server its cells may only say it is missing.
func checkReport(t *testing.T, rep *report, noRedis bool) {
	t.Helper()
	var ids []string
	for _, sec := range rep.sections {
		ids = append(ids, sec.id)
		if len(sec.rows) == 0 {
			t.Errorf("section %s has no rows", sec.id)
		}
		for _, r := range sec.rows {
			where := fmt.Sprintf("%s %q %q", sec.id, r.label, r.unit)
			checkCell(t, where+" hookproxy", r.hp, r.zeroOK, false)
			for i, c := range r.refs {
				checkCell(t, where+" "+sec.refNames[i], c, r.zeroOK, noRedis && sec.refNames[i] == "redis LPUSH")
			}
		}
	}
	if got, want := strings.Join(ids, ","), "a,b,b2,c,d,e,e2,e3"; got != want {
		t.Errorf("sections = %s, want %s", got, want)
	}
	if len(rep.headlines) == 0 {
		t.Error("no headline figures")
	}
	for _, h := range rep.headlines {
		checkCell(t, "headline "+h.what, h.hp, false, false)
		checkCell(t, "headline "+h.what+" reference", h.ref, false, noRedis && h.refName == "redis LPUSH")
	}
}

func checkCell(t *testing.T, where string, c cell, zeroOK, redisMissing bool) {
	t.Helper()
	switch {
	case c.why == "n/a":
		// No such figure by design (the CPU of an in-process reference).
	case redisMissing && c.why == errNoRedis.Error():
		t.Logf("%s: %s", where, c.why)
	case strings.HasPrefix(c.why, errNoCgroup.Error()):
		// Only a machine that lets the benchmark make a memory cgroup
		// (root) runs the delivery under a limit; the report says why not.
		t.Logf("%s: %s", where, c.why)
	case !c.ok:
		t.Errorf("%s: no figure: %s", where, c.why)
	case math.IsNaN(c.v) || math.IsInf(c.v, 0):
		t.Errorf("%s = %v, want a finite number", where, c.v)
	case c.v == 0 && !zeroOK:
		t.Errorf("%s = 0, want a measured figure", where)
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode chart: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
		t.Errorf("chart is %v, want at least 600x400", b)
	}
}

// TestPythonBodyMatchesGo checks that pyclient.py posts byte for byte the
// body the Go load generator posts, so the two scenarios compare.
func TestPythonBodyMatchesGo(t *testing.T) {
	const python = "/usr/bin/python3"
	const target = "http://127.0.0.1:9/hook"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pyclient.py"), pyclientSource, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{minBodySize, 400, 8192} {
		code := fmt.Sprintf("import sys; sys.path.insert(0, %q); import pyclient; "+
			"sys.stdout.buffer.write(pyclient.hook_body(%d, %q))", dir, size, target)
		cmd := exec.Command(python, "-c", code)
		cmd.Env = []string{"PYTHONDONTWRITEBYTECODE=1"}
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", python, err)
		}
		want := hookBody(size, target)
		if !bytes.Equal(got, want) {
			t.Errorf("size %d: python body differs from Go's:\n%s\n%s", size, got, want)
		}
		if len(want) != size || bytes.Count(want, []byte(hookMarker)) != 1 {
			t.Errorf("size %d: body is %d bytes with %d markers, want %d bytes with 1", size, len(want),
				bytes.Count(want, []byte(hookMarker)), size)
		}
	}
}

func TestPercentile(t *testing.T) {
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		q    float64
		want float64
	}{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0.0001, 1}}
	for _, tt := range tests {
		if got := percentile(lat, tt.q); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("percentile of nothing = %v, want NaN", got)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNum(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{12345.6, "12,346"}, {999.4, "999"}, {999.6, "1,000"}, {12.34, "12.3"}, {1.234, "1.23"},
		{0.9996, "1.00"}, {0.12345, "0.123"}, {-2500, "-2,500"},
	}
	for _, tt := range tests {
		if got := num(tt.in); got != tt.want {
			t.Errorf("num(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHeadlineMet(t *testing.T) {
	atMost := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	tests := []struct {
		name string
		h    headline
		want string
	}{
		{"no target", headline{hp: value(1), ref: value(2)}, "—"},
		{"ratio met", headline{hp: value(1), ref: value(2), meets: atMost(1)}, "yes"},
		{"ratio not met", headline{hp: value(3), ref: value(2), meets: atMost(1)}, "**no**"},
		// The figure is judged, not the ratio: 3,000 ms against an
		// empty store's 100 is a ratio of 30.
		{"value met", headline{hp: value(3000), ref: value(100), meets: atMost(5000), onValue: true}, "yes"},
		{"value not met", headline{hp: value(6000), ref: value(100), meets: atMost(5000), onValue: true}, "**no**"},
		{"value missing", headline{hp: cell{why: "x"}, ref: value(100), meets: atMost(5000), onValue: true}, "not measured"},
		{"unjudged", headline{hp: value(1), ref: value(100), meets: atMost(5000), onValue: true, unjudged: "not judged"},
			"not judged"},
	}
	for _, tt := range tests {
		if got := tt.h.met(); got != tt.want {
			t.Errorf("%s: met() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseSet(t *testing.T) {
	got, err := parseSet("scale-pending", "1000000, 100000,100000")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100000, 1000000}; !slices.Equal(got, want) {
		t.Errorf("parseSet = %v, want %v", got, want)
	}
	if _, err := parseSet("scale-pending", "0,10"); err == nil {
		t.Error("parseSet accepted 0")
	}
}

// lockedWriter collects the progress lines of a run.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestPartialRepetitionsAreSaid: a figure some repetitions of which
// failed is the median of the others, and the report says so.
func TestPartialRepetitionsAreSaid(t *testing.T) {
	r := newRecorder()
	r.add("a/hp/s400/c16/rps", 100)
	r.add("a/hp/s400/c16/rps", 120)
	r.fail(errors.New("connection reset"), "a/hp/s400/c16/rps")
	r.add("a/noop/s400/c16/rps", 300)
	got := r.partial()
	if len(got) != 1 || !strings.Contains(got[0], "a/hp/s400/c16/rps") || !strings.Contains(got[0], "2 repetition(s)") ||
		!strings.Contains(got[0], "connection reset") {
		t.Errorf("partial() = %q, want the one figure with 2 repetitions and its failure", got)
	}
}

// TestC1TargetIsJudgedOnPython: the c=1 target is for the app's client,
// python requests.Session, through hookproxy and through the no-op
// proxy, against one synced write of the python hooks' size (whatever
// scenario a's sizes); the Go load generator's figure is shown, not
// judged.
func TestC1TargetIsJudgedOnPython(t *testing.T) {
	s := &suite{o: options{sizes: []int{8192}, concurrency: []int{1, 16}, scenarios: []string{"a", "b"}}, rec: newRecorder()}
	for k, v := range map[string]float64{
		"a/hp/s8192/c1/p50": 0.9, "a/noop/s8192/c1/p50": 0.15, "a/put/s8192/c1/p50": 5,
		"b/hp/c1/p50": 3.0, "b/noop/c1/p50": 0.5, "b/put/c1/p50": 0.5,
	} {
		s.rec.add(k, v)
	}
	var judged []headline
	for _, h := range s.headlines() {
		if strings.Contains(h.what, "p50 added over the no-op proxy") && h.meets != nil {
			judged = append(judged, h)
		}
	}
	if len(judged) != 1 || !strings.Contains(judged[0].what, "python") {
		t.Fatalf("judged c=1 headlines: %+v, want one, on python", judged)
	}
	if h := judged[0]; !h.hp.ok || h.hp.v != 2.5 || h.ref.v != 1.5 || h.met() != "**no**" {
		t.Errorf("python c=1 headline: added %v against %v (%s), want 2.5 ms against 1.5 ms, missed", h.hp, h.ref, h.met())
	}
}

// TestReferencesArmQuickackPerRequest: the benchmark's own servers arm
// TCP_QUICKACK about once per request, as hookproxy does, not around
// every read: the references pay what hookproxy pays.
func TestReferencesArmQuickackPerRequest(t *testing.T) {
	srv, err := startNoop()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	const n = 50
	before := quickackArms.Load()
	for range n {
		resp, err := c.Post(srv.url+"/hook", "application/json", strings.NewReader(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The answer's write arms once. A read that begins or returns while
	// that write is still in its system call arms once more, which a
	// loaded machine makes common (83 for 50 requests once; 53-63 on a
	// quiet one). Arming around every read is four per request (201).
	if arms := quickackArms.Load() - before; arms < n || arms > 5*n/2 {
		t.Errorf("%d arms for %d requests on one connection, want about one each", arms, n)
	}
}

// slowSystem answers each request once span has passed since its first
// request began: a system slower than the whole run.
type slowSystem struct {
	span  time.Duration
	once  sync.Once
	first time.Time
}

func (s *slowSystem) worker(int) (op, error) {
	return func(ctx context.Context, _ int64) error {
		s.once.Do(func() { s.first = time.Now() })
		return sleepUntil(ctx, s.first.Add(s.span))
	}, nil
}

func (s *slowSystem) close() {}

// TestClosedLoopTimesEveryWorker: when a warm-up request outlasts the
// whole run (a loaded machine), each worker of the closed loop still
// times one request, so the cell has a figure instead of NaN.
func TestClosedLoopTimesEveryWorker(t *testing.T) {
	spec := loadSpec{workers: 3, warmup: 5 * time.Millisecond, duration: 5 * time.Millisecond}
	res, err := generate(t.Context(), &slowSystem{span: 50 * time.Millisecond}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.lat) != spec.workers || math.IsNaN(res.pct(0.99)) || res.rps() <= 0 {
		t.Fatalf("%d timed requests, p99 %v, %v/s; want one per worker and finite figures", len(res.lat), res.pct(0.99), res.rps())
	}
	if res.elapsed < 50*time.Millisecond-spec.warmup {
		t.Errorf("elapsed %v: the timed phase ends at the last answer", res.elapsed)
	}
}
