package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report is everything the markdown, the chart and the test need.
type report struct {
	command   string
	took      time.Duration
	machine   []kv
	headlines []headline
	sections  []section
	warnings  []string
	problems  []string // failures outside any figure (deliveries stalled)
	charts    []chartPanel
	medians   map[string]float64
}

// section is one scenario's table: every row compares a hookproxy figure
// with the same figure of each reference.
type section struct {
	id       string
	title    string
	intro    string
	refNames []string
	rows     []row
}

// row is one figure. A row without refs has no reference.
type row struct {
	label string
	unit  string
	hp    cell
	refs  []cell
	note  string
	// zeroOK marks a figure that may honestly be 0 (CPU time counted in
	// 10 ms ticks over a short window).
	zeroOK bool
}

// headline is one of the targets hookproxy is held to.
type headline struct {
	what    string
	unit    string
	hp, ref cell
	refName string
	target  string
	// meets says whether a ratio meets the target; nil: no target.
	meets func(ratio float64) bool
}

// ratio is hp / ref, when both are measured and ref is not zero.
func ratio(hp, ref cell) cell {
	if !hp.ok || !ref.ok || ref.v == 0 {
		return cell{why: "n/a"}
	}
	return value(hp.v / ref.v)
}

// metricNames label the load figures.
var metricNames = map[string]string{
	"rps": "hooks/s", "p50": "p50 ms", "p99": "p99 ms", "p999": "p99.9 ms",
	"cpu_us": "server CPU µs per request",
}

// sectionAMetrics are the rows of each case of scenario a.
var sectionAMetrics = append(slices.Clone(loadMetrics), "cpu_us")

// loadRows are the rows of one load comparison: key has one %s for the
// system, systems[0] is hookproxy and the rest the references.
func (s *suite) loadRows(label, key string, metrics []string, systems ...string) []row {
	rows := make([]row, 0, len(metrics))
	for _, m := range metrics {
		r := row{label: label, unit: metricNames[m], hp: s.rec.get(fmt.Sprintf(key, systems[0]) + "/" + m)}
		for _, sys := range systems[1:] {
			r.refs = append(r.refs, s.rec.get(fmt.Sprintf(key, sys)+"/"+m))
		}
		rows = append(rows, r)
	}
	return rows
}

// sizeName is a body size for a label.
func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func (s *suite) sectionA() section {
	sec := section{
		id:    "a",
		title: "a. Durable capture, Go load generator",
		intro: "Closed loop: each worker has its own `http.Client` (keep-alive, `Proxy: http.ProxyURL(...)`) and posts " +
			"the next JSON hook as soon as the last is answered. hookproxy answers 202 after a synced Badger commit " +
			"(group commit). References at the same concurrency: the no-op endpoint used as the proxy (answers 202, " +
			"does nothing: the machine's HTTP ceiling), redis-server with `appendfsync always` taking LPUSH of the same " +
			"payload over one RESP connection per worker, and `buffer.Put` called directly from as many goroutines. " +
			"The open-loop rows issue requests on a fixed schedule with latency measured from the scheduled time.",
		refNames: []string{"no-op proxy", "redis LPUSH", "buffer.Put"},
	}
	for _, size := range s.o.sizes {
		for _, c := range s.o.concurrency {
			key := fmt.Sprintf("a/%%s/s%d/c%d", size, c)
			sec.rows = append(sec.rows, s.loadRows(fmt.Sprintf("c=%d, %s", c, sizeName(size)), key, sectionAMetrics,
				"hp", "noop", "redis", "put")...)
		}
	}
	if s.o.rate > 0 {
		label := fmt.Sprintf("open loop %.0f/s, %s, ≤%d in flight", s.o.rate, sizeName(s.o.sizes[0]), s.o.rateWorkers)
		sec.rows = append(sec.rows, s.loadRows(label, "ao/%s", sectionAMetrics, "hp", "noop", "redis", "put")...)
	}
	for i := range sec.rows {
		if strings.HasPrefix(sec.rows[i].unit, "server CPU") {
			// buffer.Put runs inside the benchmark, whose CPU is mostly
			// the load generator's.
			sec.rows[i].refs[2] = cell{why: "n/a"}
		}
	}
	return sec
}

var pyMetrics = []string{"p50", "p99", "rps"}

func (s *suite) sectionB() []section {
	app := section{
		id:    "b",
		title: "b. The app's view: python requests.Session",
		intro: fmt.Sprintf("pyclient.py: T threads, each with its own `requests.Session` and `proxies={\"http\": proxy}`, "+
			"post %d-byte JSON hooks; latency per request as the app sees it. hookproxy vs the no-op endpoint as the proxy.", pyBodyBytes),
		refNames: []string{"no-op proxy"},
	}
	for _, c := range pyConcurrency {
		app.rows = append(app.rows, s.loadRows(fmt.Sprintf("python, %d thread(s)", c), fmt.Sprintf("b/%%s/c%d", c), pyMetrics, "hp", "noop")...)
	}
	recv := section{
		id:    "b2",
		title: "b (cont.). The app's view of a slow receiver: straight to it vs through hookproxy",
		intro: fmt.Sprintf("Without hookproxy the app waits for the receiver; with it, the app waits for the capture "+
			"and hookproxy delivers later. Receivers answer 200 at once or after %v.", s.o.pySlowDelay),
		refNames: []string{"straight to receiver"},
	}
	for _, r := range []struct{ name, label string }{{"fast", "receiver 0 ms"}, {"slow", fmt.Sprintf("receiver %v", s.o.pySlowDelay)}} {
		for _, c := range pyConcurrency {
			key := fmt.Sprintf("br/%s/%%s/c%d", r.name, c)
			recv.rows = append(recv.rows, s.loadRows(fmt.Sprintf("%s, %d thread(s)", r.label, c), key, pyMetrics, "hp", "direct")...)
		}
	}
	return []section{app, recv}
}

func (s *suite) sectionC() section {
	sec := section{
		id:    "c",
		title: "c. Pass-through",
		intro: "Requests hookproxy does not capture (GET, and a POST whose body is text/plain) are forwarded to the " +
			"receiver (a process of its own that answers 200); compared with the same Go client going straight to " +
			"the same receiver (plain HTTP).",
		refNames: []string{"direct"},
	}
	for _, k := range []struct{ name, label string }{{"get", "GET"}, {"post", "POST text/plain 400 B"}} {
		for _, c := range passConcurrency {
			rows := s.loadRows(fmt.Sprintf("%s, c=%d", k.label, c), fmt.Sprintf("c/%s/%%s/c%d", k.name, c),
				[]string{"p50", "p99", "rps", "cpu_us"}, "hp", "direct")
			rows[3].note = "hookproxy's CPU vs the receiver's"
			for i := range rows {
				rows[i].unit = strings.Replace(rows[i].unit, "hooks/s", "requests/s", 1)
				if i == 0 && rows[i].hp.ok && rows[i].refs[0].ok {
					rows[i].note = fmt.Sprintf("adds %.3f ms", rows[i].hp.v-rows[i].refs[0].v)
				}
			}
			sec.rows = append(sec.rows, rows...)
		}
	}
	return sec
}

func (s *suite) sectionD() section {
	sec := section{
		id:    "d",
		title: "d. Batching",
		intro: fmt.Sprintf("A fresh hookproxy per batch size captures %d hooks (400 B) from %d Go workers at full speed "+
			"while delivering them to a receiver that answers 200 and counts requests and hooks.", s.o.batchHooks, batchConcurrency),
		refNames: []string{"reference"},
	}
	for _, b := range s.o.batchSizes {
		key := fmt.Sprintf("d/b%d", b)
		label := fmt.Sprintf("HOOKPROXY_BATCH_SIZE=%d", b)
		sec.rows = append(sec.rows,
			row{label: label, unit: "receiver requests per 10,000 hooks", hp: s.rec.get(key + "/reqs"),
				refs: []cell{value(10000 / float64(b))}, note: "reference: 10,000 / batch size"},
			row{label: label, unit: "delivered hooks/s (first capture to last delivery)", hp: s.rec.get(key + "/delivered_rps"),
				refs: []cell{s.rec.get(key + "/capture_rps")}, note: "reference: capture hooks/s of the same run"},
			row{label: label, unit: "% delivered by the end of capture", hp: s.rec.get(key + "/during_pct"), zeroOK: true},
		)
	}
	return sec
}

func (s *suite) sectionE() section {
	n, k, w := s.o.scalePending, s.o.scaleIdleTargets, s.o.idleWindow
	sec := section{
		id:    "e",
		title: "e. Scale",
		intro: fmt.Sprintf("Backlog: %d hooks captured for a receiver that is down (answers 503; "+
			"HOOKPROXY_RETRY_INTERVAL=1h). Idle: %d targets with one hook each and HOOKPROXY_BATCH_TIME=1h, "+
			"CPU measured over %v. Reference: the same figure for an empty store. Peak RSS is VmHWM from "+
			"/proc/PID/status; disk is allocated blocks (du) of the data dir.", n, k, w),
		refNames: []string{"empty store"},
	}
	payload := s.rec.get("e/payload_mib")
	diskNote := ""
	if payload.ok {
		diskNote = fmt.Sprintf("hook bodies alone: %.1f MiB", payload.v)
	}
	idleNote := ""
	if c := s.rec.get("e/idle_sched_targets_ms"); c.ok {
		idleNote = fmt.Sprintf("%.3f%% of one core", c.v/ms(w)*100)
	}
	sec.rows = []row{
		{label: fmt.Sprintf("%d pending", n), unit: "start-up to \"hookproxy started\", ms",
			hp: s.rec.get("e/start_backlog_ms"), refs: []cell{s.rec.get("e/start_empty_ms")}},
		{label: fmt.Sprintf("capturing %d", n), unit: "peak RSS, MiB",
			hp: s.rec.get("e/hwm_ingest_mib"), refs: []cell{s.rec.get("e/hwm_empty_mib")}},
		{label: fmt.Sprintf("restarted with %d pending", n), unit: "peak RSS, MiB",
			hp: s.rec.get("e/hwm_restart_mib"), refs: []cell{s.rec.get("e/hwm_empty_mib")}},
		{label: fmt.Sprintf("%d pending", n), unit: "disk (du), MiB",
			hp: s.rec.get("e/du_backlog_mib"), refs: []cell{s.rec.get("e/du_empty_mib")}, note: diskNote},
		{label: fmt.Sprintf("%d idle targets", k), unit: fmt.Sprintf("CPU over %v, utime+stime ms", w),
			hp: s.rec.get("e/idle_cpu_targets_ms"), refs: []cell{s.rec.get("e/idle_cpu_empty_ms")}, zeroOK: true,
			note: "10 ms ticks"},
		{label: fmt.Sprintf("%d idle targets", k), unit: fmt.Sprintf("CPU over %v, scheduled ms (schedstat)", w),
			hp: s.rec.get("e/idle_sched_targets_ms"), refs: []cell{s.rec.get("e/idle_sched_empty_ms")}, zeroOK: true,
			note: idleNote},
		{label: fmt.Sprintf("capturing %d", n), unit: "hooks/s (Go, 16 workers)", hp: s.rec.get("e/ingest_rps")},
	}
	return sec
}

// headlines are the targets from the design, at the first body size.
func (s *suite) headlines() []headline {
	size := s.o.sizes[0]
	get := func(sys string, c int, m string) cell {
		return s.rec.get(fmt.Sprintf("a/%s/s%d/c%d/%s", sys, size, c, m))
	}
	added := cell{why: "not measured"}
	if hp, noop := get("hp", 1, "p50"), get("noop", 1, "p50"); hp.ok && noop.ok {
		added = value(hp.v - noop.v)
	}
	oneWrite := get("put", 1, "p50")
	if oneWrite.ok {
		oneWrite = value(oneWrite.v + 1)
	}
	atMost := func(limit float64) func(float64) bool { return func(r float64) bool { return r <= limit } }
	atLeast := func(limit float64) func(float64) bool { return func(r float64) bool { return r >= limit } }
	sz := sizeName(size)
	return []headline{
		{what: "c=1: p50 added over the no-op proxy, vs one synced write + 1 ms (" + sz + ")", unit: "ms",
			hp: added, ref: oneWrite, refName: "buffer.Put p50 at c=1 + 1 ms", target: "≤ 1", meets: atMost(1)},
		{what: "c=16: hooks/s vs the no-op proxy (" + sz + ")", unit: "hooks/s",
			hp: get("hp", 16, "rps"), ref: get("noop", 16, "rps"), refName: "no-op proxy", target: "≥ 0.6", meets: atLeast(0.6)},
		{what: "c=16: p99 vs the no-op proxy (" + sz + ")", unit: "ms",
			hp: get("hp", 16, "p99"), ref: get("noop", 16, "p99"), refName: "no-op proxy", target: "≤ 2", meets: atMost(2)},
		{what: "c=16: server CPU per request vs the no-op proxy (" + sz + "): on 2 cores, CPU bounds hooks/s", unit: "µs",
			hp: get("hp", 16, "cpu_us"), ref: get("noop", 16, "cpu_us"), refName: "no-op proxy"},
		{what: "c=16: hooks/s vs redis LPUSH, appendfsync always (" + sz + ")", unit: "hooks/s",
			hp: get("hp", 16, "rps"), ref: get("redis", 16, "rps"), refName: "redis LPUSH"},
		{what: "python, 1 thread: p50 through hookproxy vs straight to a slow receiver", unit: "ms",
			hp: s.rec.get("br/slow/hp/c1/p50"), ref: s.rec.get("br/slow/direct/c1/p50"), refName: "straight to receiver"},
	}
}

// buildReport assembles the report from the recorded figures.
func (s *suite) buildReport(took time.Duration) *report {
	r := &report{command: commandLine(s.o), took: took, machine: s.info, warnings: s.warnings, medians: s.rec.medians()}
	if s.deliveryErr != nil {
		r.problems = append(r.problems, "deliveries: "+s.deliveryErr.Error())
	}
	if s.o.runs("a") {
		r.headlines = s.headlines()
		r.sections = append(r.sections, s.sectionA())
		r.charts = s.chartPanels()
	}
	if s.o.runs("b") {
		r.sections = append(r.sections, s.sectionB()...)
	}
	if s.o.runs("c") {
		r.sections = append(r.sections, s.sectionC())
	}
	if s.o.runs("d") {
		r.sections = append(r.sections, s.sectionD())
	}
	if s.o.runs("e") {
		r.sections = append(r.sections, s.sectionE())
	}
	return r
}

// commandLine is the command that ran the benchmark, as typed.
func commandLine(o options) string {
	parts := []string{"go", "run", "./bench"}
	skip := false
	for _, a := range o.args {
		// -via names the wrapper, which is said separately.
		if skip || strings.HasPrefix(strings.TrimLeft(a, "-"), "via") {
			skip = !skip && !strings.Contains(a, "=")
			continue
		}
		if a == "" || strings.ContainsAny(a, " \t'\"$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	cmd := strings.Join(parts, " ")
	if o.via != "" {
		cmd = o.via + " (which runs: " + cmd + ")"
	}
	return cmd
}

// failures lists the figures that could not be measured, leaving out
// the redis rows when redis-server is not installed (a documented skip).
func (r *report) failures() []string {
	out := slices.Clone(r.problems)
	check := func(where string, c cell) {
		if !c.ok && c.why != errNoRedis.Error() && c.why != "n/a" {
			out = append(out, where+": "+c.why)
		}
	}
	for _, sec := range r.sections {
		for _, rw := range sec.rows {
			where := sec.id + " " + rw.label + " " + rw.unit
			check(where, rw.hp)
			for i, c := range rw.refs {
				check(where+" / "+sec.refNames[i], c)
			}
		}
	}
	return slices.Compact(out)
}
