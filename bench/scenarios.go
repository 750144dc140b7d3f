package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// pyBodyBytes is the body size of the python scenarios: a typical
// django-rest-hooks payload is a few hundred bytes.
const pyBodyBytes = 400

// pyConcurrency are the thread counts of scenario b.
var pyConcurrency = []int{1, 16}

// passConcurrency are the concurrencies of scenario c: one for latency,
// one for throughput.
var passConcurrency = []int{1, 16}

// hookURL is where the benchmark's hooks are addressed.
func (s *suite) hookURL() string { return s.sink.url + "/hook" }

// captureSystem posts body as a JSON hook to target through proxy; count,
// when not nil, is called for each 202.
func captureSystem(proxy *url.URL, target string, body []byte, count func()) *httpSystem {
	return &httpSystem{
		proxy:       proxy,
		method:      http.MethodPost,
		url:         fixedURL(target),
		contentType: "application/json",
		body:        body,
		want:        http.StatusAccepted,
		onOK:        count,
	}
}

// judgedConcurrency is the concurrency of scenario a that the throughput
// and p99 targets are judged at.
const judgedConcurrency = 16

// heldShare is the share of hookproxy's closed-loop rate at
// judgedConcurrency at which the second open loop runs.
const heldShare = 0.8

// scenarioA measures durable capture with the Go load generator, closed
// loop at each concurrency and body size, then open loop at -rate and at
// heldShare of the rate hookproxy reached closed-loop at
// judgedConcurrency in this repetition: hookproxy, the no-op endpoint,
// redis LPUSH and buffer Put. An open loop charges a stall to every
// request it delays, which a closed loop, whose workers wait, does not.
func (s *suite) scenarioA(ctx context.Context) {
	judged := fmt.Sprintf("a/hp/s%d/c%d/rps", s.o.sizes[0], judgedConcurrency)
	before := s.rec.count(judged)
	for _, size := range s.o.sizes {
		body := hookBody(size, s.hookURL())
		for _, c := range s.o.concurrency {
			spec := loadSpec{workers: c, warmup: s.o.warmup, duration: s.o.duration}
			if c == judgedConcurrency && size == s.o.sizes[0] {
				spec.duration = max(spec.duration, s.o.judgedDuration)
			}
			key := fmt.Sprintf("a/%%s/s%d/c%d", size, c)
			s.measureAll(ctx, key, body, spec)
		}
	}
	body := hookBody(s.o.sizes[0], s.hookURL())
	if s.o.rate > 0 {
		spec := loadSpec{workers: s.o.rateWorkers, warmup: s.o.warmup, duration: s.o.duration, rate: s.o.rate}
		s.measureAll(ctx, "ao/%s", body, spec)
	}
	// The rate of this repetition only: one that failed leaves no rate.
	if hp, ok := s.rec.last(judged); ok && hp > 0 && s.rec.count(judged) > before {
		rate := heldShare * hp
		s.rec.add("ah/rate", rate)
		spec := loadSpec{workers: s.o.rateWorkers, warmup: s.o.warmup, duration: max(s.o.duration, s.o.judgedDuration), rate: rate}
		s.measureAll(ctx, "ah/%s", body, spec)
	}
}

// measureAll measures hookproxy and the three references; key has one %s
// for the system's name.
func (s *suite) measureAll(ctx context.Context, key string, body []byte, spec loadSpec) {
	s.measure(ctx, fmt.Sprintf(key, "hp"), captureSystem(s.hp.url, s.hookURL(), body,
		func() { s.captured.Add(1) }), spec, s.hp.pid())
	s.waitDelivered(ctx)
	s.measure(ctx, fmt.Sprintf(key, "noop"), captureSystem(s.noop.url, s.hookURL(), body, nil), spec, s.noop.cmd.Process.Pid)
	s.measureRedis(ctx, fmt.Sprintf(key, "redis"), body, spec)
	s.measurePut(ctx, fmt.Sprintf(key, "put"), body, spec)
}

// measureRedis measures LPUSH of body, or records why it cannot.
func (s *suite) measureRedis(ctx context.Context, key string, body []byte, spec loadSpec) {
	if s.redis == nil {
		s.rec.recordLoad(key, loadResult{}, s.redisErr)
		return
	}
	if err := s.redis.reset(ctx); err != nil {
		s.rec.recordLoad(key, loadResult{}, err)
		return
	}
	s.measure(ctx, key, newRedisSystem(s.redis.addr, "hooks", body), spec, s.redis.cmd.Process.Pid)
}

// measurePut measures buffer Put on a fresh store.
func (s *suite) measurePut(ctx context.Context, key string, body []byte, spec loadSpec) {
	dir := s.newDir("put")
	defer os.RemoveAll(dir)
	ps, err := openPutSystem(dir, s.hookURL(), body)
	if err != nil {
		s.rec.recordLoad(key, loadResult{}, err)
		return
	}
	s.measure(ctx, key, ps, spec, 0)
	if err := ps.store.Close(); err != nil {
		s.warn("close buffer %s: %v", dir, err)
	}
}

// scenarioB measures the app's view with python requests: through
// hookproxy and through the no-op endpoint; then, for a receiver that
// answers at once and one that is slow, posting straight to it and
// through hookproxy.
func (s *suite) scenarioB(ctx context.Context) {
	hp := s.hp.url.String()
	for _, c := range pyConcurrency {
		run := pyRun{url: s.hookURL(), threads: c, hooks: max(s.o.pyHooks, c), bodyBytes: pyBodyBytes, expect: http.StatusAccepted}
		run.proxy = hp
		s.measurePy(ctx, fmt.Sprintf("b/hp/c%d", c), run, true)
		run.proxy = s.noop.url.String()
		s.measurePy(ctx, fmt.Sprintf("b/noop/c%d", c), run, false)
	}
	// One synced write of the python hooks' size, the c=1 target's
	// reference, whatever -sizes and -concurrency say.
	s.measurePut(ctx, "b/put/c1", hookBody(pyBodyBytes, s.hookURL()),
		loadSpec{workers: 1, warmup: s.o.warmup, duration: s.o.duration})
	receivers := []struct {
		name string
		k    *sink
	}{{"fast", s.sink}, {"slow", s.slow}}
	for _, r := range receivers {
		for _, c := range pyConcurrency {
			direct := pyRun{url: r.k.url + "/hook", threads: c, bodyBytes: pyBodyBytes, expect: http.StatusOK,
				hooks: max(s.o.pyHooks, c)}
			if r.k.delay > 0 {
				direct.hooks = c * s.o.pySlowHooks
			}
			s.measurePy(ctx, fmt.Sprintf("br/%s/direct/c%d", r.name, c), direct, false)
			capture := direct
			capture.proxy, capture.expect, capture.hooks = hp, http.StatusAccepted, max(s.o.pyHooks, c)
			s.measurePy(ctx, fmt.Sprintf("br/%s/hp/c%d", r.name, c), capture, true)
		}
	}
	s.waitDelivered(ctx)
}

// measurePy runs pyclient.py and records its figures; captured says the
// answers are hookproxy's acknowledgements.
func (s *suite) measurePy(ctx context.Context, key string, run pyRun, captured bool) {
	res, err := s.py.run(ctx, run)
	s.rec.recordLoad(key, res, err)
	if err != nil {
		s.progress("%s: %v", key, err)
		return
	}
	if captured {
		s.captured.Add(res.total)
		s.waitDelivered(ctx)
	}
	s.progress("%-28s %8.0f/s  p50 %7.3f ms  p99 %7.3f ms", key, res.rps(), res.pct(0.5), res.pct(0.99))
}

// scenarioC measures pass-through: GET and a non-JSON POST through
// hookproxy and straight to the same receiver, a process of its own.
func (s *suite) scenarioC(ctx context.Context) {
	recv, err := startHelper(ctx, roleReceiver)
	if err != nil {
		for _, k := range []string{"get", "post"} {
			for _, c := range passConcurrency {
				for _, how := range []string{"hp", "direct"} {
					s.rec.recordLoad(fmt.Sprintf("c/%s/%s/c%d", k, how, c), loadResult{}, err)
				}
			}
		}
		return
	}
	defer recv.stop()
	text := []byte(strings.Repeat("x", 400))
	kinds := []struct {
		name, method, contentType string
		body                      []byte
	}{{"get", http.MethodGet, "", nil}, {"post", http.MethodPost, "text/plain", text}}
	for _, k := range kinds {
		for _, c := range passConcurrency {
			spec := loadSpec{workers: c, warmup: s.o.warmup, duration: s.o.duration}
			for _, how := range []string{"hp", "direct"} {
				sys := &httpSystem{method: k.method, url: fixedURL(recv.url.String() + "/pass"),
					contentType: k.contentType, body: k.body, want: http.StatusOK}
				// CPU per request: hookproxy's when through it, the
				// receiver's when straight to it.
				pid := recv.cmd.Process.Pid
				if how == "hp" {
					sys.proxy, pid = s.hp.url, s.hp.pid()
				}
				s.measure(ctx, fmt.Sprintf("c/%s/%s/c%d", k.name, how, c), sys, spec, pid)
			}
		}
	}
}

// batchConcurrency is the load generator's concurrency in scenario d.
const batchConcurrency = 16

// scenarioD measures batching: for each batch size, a fresh hookproxy
// captures -batch-hooks hooks at full speed while it delivers them to a
// receiver of its own, which counts requests and hooks.
func (s *suite) scenarioD(ctx context.Context) {
	for _, b := range s.o.batchSizes {
		key := fmt.Sprintf("d/b%d", b)
		if err := s.measureBatching(ctx, key, b); err != nil {
			s.rec.fail(err, key+"/reqs", key+"/delivered_rps", key+"/capture_rps", key+"/during_pct")
			s.progress("%s: %v", key, err)
		}
	}
}

func (s *suite) measureBatching(ctx context.Context, key string, batch int) error {
	k, err := startSink(http.StatusOK, 0)
	if err != nil {
		return err
	}
	defer k.close()
	dir := s.newDir("batch")
	defer os.RemoveAll(dir)
	p, err := startHookproxy(ctx, s.bin, dir, s.hpSettings("HOOKPROXY_BATCH_SIZE="+strconv.Itoa(batch))...)
	if err != nil {
		return err
	}
	defer s.stop(p)
	n := int64(s.o.batchHooks)
	sys := captureSystem(p.url, k.url+"/hook", hookBody(pyBodyBytes, k.url+"/hook"), nil)
	start := time.Now()
	res, err := generate(ctx, sys, loadSpec{workers: batchConcurrency, count: n})
	sys.close()
	if err != nil {
		return err
	}
	during := k.hooks.Load()
	if err := k.waitHooks(ctx, n); err != nil {
		return err
	}
	last := time.Unix(0, k.lastDelivery.Load())
	s.rec.add(key+"/reqs", float64(k.deliveries.Load())*10000/float64(n))
	s.rec.add(key+"/delivered_rps", float64(k.hooks.Load())/last.Sub(start).Seconds())
	s.rec.add(key+"/capture_rps", res.rps())
	s.rec.add(key+"/during_pct", 100*float64(during)/float64(n))
	s.progress("%-28s %d receiver requests for %d hooks; captured %.0f/s, delivered %.0f/s",
		key, k.deliveries.Load(), n, res.rps(), float64(n)/last.Sub(start).Seconds())
	return nil
}
