package main

import (
	"fmt"
	"slices"
	"strconv"
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
	// meets says whether a ratio, or with onValue the hookproxy figure,
	// meets the target; nil: no target.
	meets   func(v float64) bool
	onValue bool
	// unjudged, when set, says why the target is not judged (the run did
	// not measure the case it is stated for).
	unjudged string
}

// met is the headline's verdict for the met column.
func (h headline) met() string {
	switch {
	case h.meets == nil:
		return "—"
	case h.unjudged != "":
		return h.unjudged
	}
	v := ratio(h.hp, h.ref)
	if h.onValue {
		v = h.hp
	}
	switch {
	case !v.ok:
		return "not measured"
	case h.meets(v.v):
		return "yes"
	}
	return "**no**"
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
			"The open-loop rows issue requests on a fixed schedule with latency measured from the scheduled time, " +
			"so a stall is charged to every request it delays: once at -rate, once at 80% of the rate hookproxy " +
			"reached closed-loop at c=16 in the same repetition (every system at that rate). " +
			"The c=16 rows at the first size and that open loop run for -judged-duration.",
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
	if slices.Contains(s.o.concurrency, judgedConcurrency) {
		rate := "not measured"
		if c := s.rec.get("ah/rate"); c.ok {
			rate = fmt.Sprintf("%.0f/s", c.v)
		}
		label := fmt.Sprintf("open loop at %.0f%% of hookproxy's c=%d rate (%s), %s, ≤%d in flight",
			100*heldShare, judgedConcurrency, rate, sizeName(s.o.sizes[0]), s.o.rateWorkers)
		sec.rows = append(sec.rows, s.loadRows(label, "ah/%s", sectionAMetrics, "hp", "noop", "redis", "put")...)
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

// count formats a number of hooks or targets with thousands grouped.
func count(n int) string { return group(strconv.Itoa(n)) }

// targetsName is "1 target" or "N targets".
func targetsName(n int) string {
	if n == 1 {
		return "1 target"
	}
	return count(n) + " targets"
}

// cellLabel labels a cell of the scale matrix.
func cellLabel(targets, pending int) string {
	return fmt.Sprintf("%s, %s pending", targetsName(targets), count(pending))
}

// scaleFigures are the rows of each cell of the scale matrix, in order.
var scaleFigures = []struct{ fig, unit string }{
	{"start_ms", `start-up to "hookproxy started", ms`},
	{"hwm_mib", "peak RSS (VmHWM), MiB"},
	{"anon_peak_mib", "peak RssAnon (own memory, sampled), MiB"},
	{"anon_mib", "RssAnon after the settle wait, MiB"},
	{"file_mib", "RssFile after the settle wait (mapped files), MiB"},
	{"du_mib", "disk (du), MiB"},
}

func (s *suite) sectionsE() []section {
	w := s.o.idleWindow
	it, ip := s.o.idleCell()
	matrix := section{
		id:    "e",
		title: "e. Scale: start-up, memory and disk with hooks pending",
		intro: fmt.Sprintf("Each cell is a fresh data dir filled in the benchmark process through the buffer package: "+
			"P hooks (POST, Content-Type application/json, %d-byte JSON bodies, each one distinct) spread round-robin "+
			"over T target URLs on a loopback receiver, put from %d goroutines so that they share group commits; the "+
			"store is closed and hookproxy started on it with HOOKPROXY_BATCH_TIME=1h and HOOKPROXY_BATCH_SIZE=0, so "+
			"nothing is due for an hour and nothing is delivered. Reference: the same figure for an empty store, made "+
			"and started the same way. Memory is read from /proc/PID/status %v after the start line. It is split "+
			"because Badger mmaps its tables and value log: every page of the store hookproxy touches stays mapped and "+
			"counts in VmHWM as RssFile, clean page cache that the kernel can reclaim (and re-read from disk) under "+
			"memory pressure, next to RssAnon, the process's own memory (Go heap, stacks, Badger's caches and "+
			"memtables), which only swap could take back. Peak RssAnon is sampled every %v from the moment the "+
			"process runs. Idle CPU over %v for the empty store and for %s: nothing is due, every target holds a "+
			"time window open; the window starts %v after the memory reading, once Badger has compacted the "+
			"tables the fill left (that happens once, after any bulk write, and is not what idle targets cost).",
			pyBodyBytes, fillWorkers, s.o.settle(), anonSampleEvery, w, cellLabel(it, ip), s.o.quiesce()),
		refNames: []string{"empty store"},
	}
	empty := cellKey(0, 0)
	for _, f := range scaleFigures {
		for _, t := range s.o.scaleTargets {
			for _, p := range s.o.scalePending {
				key := cellKey(t, p)
				r := row{label: cellLabel(t, p), unit: f.unit, hp: s.rec.get(key + "/" + f.fig),
					refs: []cell{s.rec.get(empty + "/" + f.fig)}}
				if payload := s.rec.get(key + "/payload_mib"); f.fig == "du_mib" && payload.ok {
					r.note = fmt.Sprintf("hook bodies alone: %s MiB", num(payload.v))
				}
				matrix.rows = append(matrix.rows, r)
			}
		}
	}
	idleKey := cellKey(it, ip)
	idleNote := ""
	if c := s.rec.get(idleKey + "/idle_sched_ms"); c.ok {
		idleNote = fmt.Sprintf("%.3f%% of one core", c.v/ms(w)*100)
	}
	matrix.rows = append(matrix.rows,
		row{label: cellLabel(it, ip), unit: fmt.Sprintf("CPU over %v idle, utime+stime ms", w),
			hp: s.rec.get(idleKey + "/idle_cpu_ms"), refs: []cell{s.rec.get(empty + "/idle_cpu_ms")}, zeroOK: true,
			note: "10 ms ticks"},
		row{label: cellLabel(it, ip), unit: fmt.Sprintf("CPU over %v idle, scheduled ms (schedstat)", w),
			hp: s.rec.get(idleKey + "/idle_sched_ms"), refs: []cell{s.rec.get(empty + "/idle_sched_ms")}, zeroOK: true,
			note: idleNote},
		row{label: cellLabel(it, ip), unit: fmt.Sprintf("peak RSS (VmHWM) after %v idle, MiB", w),
			hp: s.rec.get(idleKey + "/idle_hwm_mib"), refs: []cell{s.rec.get(empty + "/idle_hwm_mib")}},
	)

	n := s.o.scaleIngest
	ingest := section{
		id:    "e2",
		title: "e (cont.). Scale: capturing a backlog over HTTP",
		intro: fmt.Sprintf("A fresh hookproxy captures %s hooks (%d-byte JSON bodies, each one distinct) from %d Go "+
			"workers for a receiver that is down (it answers 503; HOOKPROXY_RETRY_INTERVAL=1h), then is stopped and "+
			"started again on them. RssAnon is sampled every %v from the start of the process to the end of the "+
			"capture. Reference: the same figure for the empty store of the matrix above.",
			count(n), pyBodyBytes, batchConcurrency, anonSampleEvery),
		refNames: []string{"empty store"},
	}
	capturing := "capturing " + count(n)
	restarted := fmt.Sprintf("restarted with %s pending", count(n))
	diskNote := ""
	if payload := s.rec.get("e/ingest/payload_mib"); payload.ok {
		diskNote = fmt.Sprintf("hook bodies alone: %s MiB", num(payload.v))
	}
	ingest.rows = []row{
		{label: capturing, unit: fmt.Sprintf("hooks/s (Go, %d workers)", batchConcurrency), hp: s.rec.get("e/ingest/rps")},
		{label: capturing, unit: "peak RSS (VmHWM), MiB",
			hp: s.rec.get("e/ingest/hwm_mib"), refs: []cell{s.rec.get(empty + "/hwm_mib")}},
		{label: capturing, unit: "peak RssAnon (own memory, sampled), MiB",
			hp: s.rec.get("e/ingest/anon_peak_mib"), refs: []cell{s.rec.get(empty + "/anon_peak_mib")}},
		{label: fmt.Sprintf("%s pending", count(n)), unit: "disk (du), MiB",
			hp: s.rec.get("e/ingest/du_mib"), refs: []cell{s.rec.get(empty + "/du_mib")}, note: diskNote},
		{label: restarted, unit: `start-up to "hookproxy started", ms`,
			hp: s.rec.get("e/ingest/restart_ms"), refs: []cell{s.rec.get(empty + "/start_ms")}},
		{label: restarted, unit: "peak RSS (VmHWM), MiB",
			hp: s.rec.get("e/ingest/restart_hwm_mib"), refs: []cell{s.rec.get(empty + "/hwm_mib")}},
	}
	return []section{matrix, ingest, s.sectionLimit()}
}

// sectionLimit is the delivery of a backlog inside a memory cgroup,
// against the same delivery without a limit.
func (s *suite) sectionLimit() section {
	n := slices.Max(s.o.scalePending)
	sec := section{
		id:    "e3",
		title: "e (cont.). Scale: delivering a backlog under a memory limit",
		intro: fmt.Sprintf("A store holding %s hooks (%d-byte bodies) for one target, filled as in the matrix, is "+
			"copied twice; each copy's page cache, and the binary's, is dropped (fsync, then fadvise DONTNEED), and hookproxy starts on "+
			"it with HOOKPROXY_BATCH_SIZE=100 and delivers everything to a loopback receiver that answers 200. The "+
			"reference run has no memory limit; the other runs inside a memory cgroup limited to %d MiB (v1 "+
			"memory.limit_in_bytes or v2 memory.max, page cache included, as a container's limit), which the "+
			"benchmark makes as a child of its own cgroup: this needs root. Delivered hooks/s is the backlog over "+
			"the time from starting the process to the receiver's last hook.",
			count(n), pyBodyBytes, s.o.memLimitMiB),
		refNames: []string{"no limit"},
	}
	label := fmt.Sprintf("delivering %s pending, 1 target", count(n))
	sec.rows = []row{
		{label: label, unit: "peak RSS (VmHWM), MiB", hp: s.rec.get("e/limit/hwm_mib"),
			refs: []cell{s.rec.get("e/free/hwm_mib")}},
		{label: label, unit: "peak RssAnon (own memory, sampled), MiB", hp: s.rec.get("e/limit/anon_peak_mib"),
			refs: []cell{s.rec.get("e/free/anon_peak_mib")}},
		{label: label, unit: "cgroup peak use (page cache included), MiB", hp: s.rec.get("e/limit/cg_peak_mib"),
			refs: []cell{s.rec.get("e/limit/limit_mib")}, note: "reference: the limit"},
		{label: label, unit: "delivered hooks/s", hp: s.rec.get("e/limit/rps"), refs: []cell{s.rec.get("e/free/rps")}},
		{label: label, unit: "hooks delivered", hp: s.rec.get("e/limit/delivered"),
			refs: []cell{s.rec.get("e/free/delivered")}},
	}
	return sec
}

// scaleTarget is the backlog the scale targets are stated for.
const scaleTarget = 1_000_000

// scaleHeadlines are the scale targets. With a backlog the figure is the
// worst over -scale-targets; a matrix without 1,000,000 pending reports
// its largest backlog and judges nothing.
func (s *suite) scaleHeadlines() []headline {
	p := slices.Max(s.o.scalePending)
	unjudged := fmt.Sprintf("not judged: the target is for %s pending", count(scaleTarget))
	if slices.Contains(s.o.scalePending, scaleTarget) {
		p, unjudged = scaleTarget, ""
	}
	// worst is the largest figure over the targets at p, naming its cell;
	// a cell that was not measured makes the worst unknown.
	worst := func(fig string) (cell, string) {
		var w cell
		at := ""
		for _, t := range s.o.scaleTargets {
			c := s.rec.get(cellKey(t, p) + "/" + fig)
			if !c.ok {
				return c, ""
			}
			if !w.ok || c.v > w.v {
				w, at = c, targetsName(t)
			}
		}
		return w, at
	}
	atMost := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	empty := cellKey(0, 0)
	ts := make([]string, len(s.o.scaleTargets))
	for i, t := range s.o.scaleTargets {
		ts[i] = count(t)
	}
	// where says which backlog a figure is for and, over several target
	// counts, which was the worst.
	where := func(at string) string {
		w := fmt.Sprintf("%s pending over %s target(s)", count(p), strings.Join(ts, " / "))
		if len(ts) > 1 && at != "" {
			w += " (worst: " + at + ")"
		}
		return w
	}
	start, startAt := worst("start_ms")
	hwm, hwmAt := worst("hwm_mib")
	anon, anonAt := worst("anon_peak_mib")
	return []headline{
		{what: "ready: start-up to \"hookproxy started\" with " + where(startAt),
			unit: "ms", hp: start, ref: s.rec.get(empty + "/start_ms"), refName: "empty store",
			target: "≤ 5,000 ms", onValue: true, meets: atMost(5000), unjudged: unjudged},
		{what: "peak RSS (VmHWM: own memory plus Badger's mmapped files) with " + where(hwmAt),
			unit: "MiB", hp: hwm, ref: s.rec.get(empty + "/hwm_mib"), refName: "empty store",
			target: "≤ 256 MiB", onValue: true, meets: atMost(256), unjudged: unjudged},
		{what: "peak anonymous memory (RssAnon, sampled; without mapped files) with " + where(anonAt),
			unit: "MiB", hp: anon, ref: s.rec.get(empty + "/anon_peak_mib"), refName: "empty store",
			target: "≤ 256 MiB", onValue: true, meets: atMost(256), unjudged: unjudged},
		// A cgroup cannot use more than its limit, so what is judged is
		// that hookproxy works within it: not OOM-killed, everything
		// delivered. Its VmHWM is in its own section; it may pass the limit by a
		// few MiB of pages (the binary's) charged to another cgroup.
		{what: fmt.Sprintf("hooks delivered from %s pending inside a %d MiB memory cgroup, page cache included "+
			"(not OOM-killed; memory figures in the section on delivering a backlog under a memory limit)", count(p), s.o.memLimitMiB),
			unit: "hooks", hp: s.rec.get("e/limit/delivered"), ref: s.rec.get("e/free/delivered"), refName: "no limit",
			target: "all (ratio 1)", meets: func(r float64) bool { return r >= 1 }, unjudged: unjudged},
		{what: fmt.Sprintf("idle RSS: peak RSS (VmHWM) of hookproxy on an empty store after %v idle", s.o.idleWindow),
			unit: "MiB", hp: s.rec.get(empty + "/idle_hwm_mib"), ref: s.rec.get(idleGoKey), refName: "idle Go net/http server",
			target: "≤ 64 MiB", onValue: true, meets: atMost(64)},
	}
}

// headlines are the targets from the design, at the first body size.
func (s *suite) headlines() []headline {
	size := s.o.sizes[0]
	get := func(sys string, c int, m string) cell {
		return s.rec.get(fmt.Sprintf("a/%s/s%d/c%d/%s", sys, size, c, m))
	}
	added := difference(get("hp", 1, "p50"), get("noop", 1, "p50"))
	pyAdded := difference(s.rec.get("b/hp/c1/p50"), s.rec.get("b/noop/c1/p50"))
	plusMs := func(c cell) cell {
		if c.ok {
			return value(c.v + 1)
		}
		return c
	}
	oneWrite, pyWrite := plusMs(get("put", 1, "p50")), plusMs(s.rec.get("b/put/c1/p50"))
	pyUnjudged := ""
	if !s.o.runs("b") {
		pyUnjudged = "not judged: scenario b (python) did not run"
	}
	atMost := func(limit float64) func(float64) bool { return func(r float64) bool { return r <= limit } }
	atLeast := func(limit float64) func(float64) bool { return func(r float64) bool { return r >= limit } }
	sz := sizeName(size)
	return []headline{
		{what: fmt.Sprintf("python requests.Session, 1 thread: p50 added over the no-op proxy, vs one synced write + 1 ms (%d B)", pyBodyBytes),
			unit: "ms", hp: pyAdded, ref: pyWrite, refName: fmt.Sprintf("buffer.Put p50 at c=1 (%d B) + 1 ms", pyBodyBytes),
			target: "≤ 1", meets: atMost(1), unjudged: pyUnjudged},
		{what: "Go load generator, c=1: p50 added over the no-op proxy, vs one synced write + 1 ms (" + sz + ")", unit: "ms",
			hp: added, ref: oneWrite, refName: "buffer.Put p50 at c=1 + 1 ms"},
		{what: fmt.Sprintf("c=%d: hooks/s vs the no-op proxy (%s)", judgedConcurrency, sz), unit: "hooks/s",
			hp: get("hp", judgedConcurrency, "rps"), ref: get("noop", judgedConcurrency, "rps"), refName: "no-op proxy",
			target: "≥ 0.6", meets: atLeast(0.6)},
		{what: fmt.Sprintf("c=%d: p99 vs the no-op proxy (%s)", judgedConcurrency, sz), unit: "ms",
			hp: get("hp", judgedConcurrency, "p99"), ref: get("noop", judgedConcurrency, "p99"), refName: "no-op proxy",
			target: "≤ 2", meets: atMost(2)},
		{what: fmt.Sprintf("open loop at %.0f%% of hookproxy's c=%d rate: p99 vs the no-op proxy at that rate (%s)",
			100*heldShare, judgedConcurrency, sz), unit: "ms",
			hp: s.rec.get("ah/hp/p99"), ref: s.rec.get("ah/noop/p99"), refName: "no-op proxy"},
		{what: fmt.Sprintf("c=%d: server CPU per request vs the no-op proxy (%s): on 2 cores, CPU bounds hooks/s", judgedConcurrency, sz), unit: "µs",
			hp: get("hp", judgedConcurrency, "cpu_us"), ref: get("noop", judgedConcurrency, "cpu_us"), refName: "no-op proxy"},
		{what: fmt.Sprintf("c=%d: hooks/s vs redis LPUSH, appendfsync always (%s)", judgedConcurrency, sz), unit: "hooks/s",
			hp: get("hp", judgedConcurrency, "rps"), ref: get("redis", judgedConcurrency, "rps"), refName: "redis LPUSH"},
		{what: fmt.Sprintf("python, 1 thread: p50 blocking per hook through hookproxy vs straight to a receiver that takes %v",
			s.o.pySlowDelay), unit: "ms",
			hp: s.rec.get("br/slow/hp/c1/p50"), ref: s.rec.get("br/slow/direct/c1/p50"), refName: "straight to receiver",
			target: "≤ 0.02 (50x less)", meets: atMost(0.02)},
		{what: "python, 1 thread: p50 blocking per hook through hookproxy vs straight to a receiver that answers at once",
			unit: "ms", hp: s.rec.get("br/fast/hp/c1/p50"), ref: s.rec.get("br/fast/direct/c1/p50"),
			refName: "straight to receiver", target: "≤ 1 (no worse)", meets: atMost(1)},
		{what: "pass-through GET, c=1: p50 added over going direct", unit: "ms",
			hp:  difference(s.rec.get("c/get/hp/c1/p50"), s.rec.get("c/get/direct/c1/p50")),
			ref: s.rec.get("c/get/direct/c1/p50"), refName: "direct p50",
			target: "≤ 0.3 ms", onValue: true, meets: atMost(0.3)},
		{what: "pass-through POST text/plain, c=1: p50 added over going direct", unit: "ms",
			hp:  difference(s.rec.get("c/post/hp/c1/p50"), s.rec.get("c/post/direct/c1/p50")),
			ref: s.rec.get("c/post/direct/c1/p50"), refName: "direct p50",
			target: "≤ 0.3 ms", onValue: true, meets: atMost(0.3)},
	}
}

// difference is a - b, when both are measured.
func difference(a, b cell) cell {
	if !a.ok || !b.ok {
		return cell{why: "not measured"}
	}
	return value(a.v - b.v)
}

// buildReport assembles the report from the recorded figures.
func (s *suite) buildReport(took time.Duration) *report {
	r := &report{command: commandLine(s.o), took: took, machine: s.info, medians: s.rec.medians(),
		warnings: append(slices.Clone(s.warnings), s.rec.partial()...)}
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
		r.headlines = append(r.headlines, s.scaleHeadlines()...)
		r.sections = append(r.sections, s.sectionsE()...)
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
