package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op performs request number i on one worker's own connection.
type op func(ctx context.Context, i int64) error

// system is something the load generator drives: hookproxy or a
// reference. Each worker gets its own op (its own client or connection),
// as each app thread has its own session.
type system interface {
	worker(id int) (op, error)
	close()
}

// loadSpec says how to drive a system. Exactly one mode applies:
// count > 0 is a closed loop of count requests (no warm-up); rate > 0 is
// an open loop at that arrival rate for warmup+duration; otherwise a
// closed loop for warmup+duration.
type loadSpec struct {
	workers  int
	warmup   time.Duration
	duration time.Duration
	count    int64
	rate     float64
}

// loadResult holds the latencies of the timed requests.
type loadResult struct {
	lat     []time.Duration // sorted
	elapsed time.Duration   // length of the timed phase
	total   int64           // requests completed, warm-up included
}

// rps is the timed requests per second.
func (r loadResult) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.lat)) / r.elapsed.Seconds()
}

// pct is the q-quantile (0 < q <= 1) of the latencies in milliseconds,
// nearest rank.
func (r loadResult) pct(q float64) float64 { return percentile(r.lat, q) }

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Millisecond)
}

// generate drives sys as spec says and returns the timed latencies. In
// the open loop each request's latency runs from its scheduled time, not
// from when a worker got to it, so a stall is charged to every request
// that should have been sent during it (no coordinated omission).
func generate(ctx context.Context, sys system, spec loadSpec) (loadResult, error) {
	ops := make([]op, spec.workers)
	for w := range ops {
		o, err := sys.worker(w)
		if err != nil {
			return loadResult{}, fmt.Errorf("worker %d: %w", w, err)
		}
		ops[w] = o
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g := newLoadGen(spec)
	var wg sync.WaitGroup
	lats := make([][]time.Duration, spec.workers)
	for w := range ops {
		wg.Go(func() {
			var err error
			lats[w], err = g.work(ctx, ops[w])
			if err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return loadResult{}, err
	}
	res := loadResult{lat: slices.Concat(lats...), elapsed: g.elapsed(), total: g.done.Load()}
	slices.Sort(res.lat)
	return res, nil
}

// loadGen is the shared state of one generate call.
type loadGen struct {
	spec     loadSpec
	start    time.Time // first request
	t0       time.Time // start of the timed phase
	end      time.Time // end of the timed phase (time modes)
	interval time.Duration
	next     atomic.Int64
	done     atomic.Int64
	last     atomic.Int64 // UnixNano of the last completion
}

func newLoadGen(spec loadSpec) *loadGen {
	g := &loadGen{spec: spec, start: time.Now()}
	g.t0 = g.start
	if spec.count <= 0 {
		g.t0 = g.start.Add(spec.warmup)
		g.end = g.t0.Add(spec.duration)
	}
	if spec.rate > 0 {
		g.interval = time.Duration(float64(time.Second) / spec.rate)
	}
	return g
}

// elapsed is the length of the timed phase: to the last completion in
// count mode; otherwise the configured duration, or longer when answers
// came late (so hooks/s falls below the rate when the system does not
// keep up in the open loop, and counts the timed requests sent past the
// end in the closed loop, see work).
func (g *loadGen) elapsed() time.Duration {
	last := time.Unix(0, g.last.Load()).Sub(g.t0)
	if g.spec.count > 0 {
		return last
	}
	return max(g.spec.duration, last)
}

// work is one worker's loop.
func (g *loadGen) work(ctx context.Context, do op) ([]time.Duration, error) {
	var lat []time.Duration
	for ctx.Err() == nil {
		i, sched, ok := g.ticket()
		if !ok && !(g.interval == 0 && g.spec.count <= 0 && len(lat) == 0) {
			break
		}
		// In the closed loop, a worker whose requests so far all began
		// in the warm-up (one outlasted the whole run, on a loaded
		// machine) sends one timed request past the end, so that every
		// cell still has a figure.
		if g.interval > 0 {
			if err := sleepUntil(ctx, sched); err != nil {
				break
			}
		} else {
			sched = time.Now()
		}
		if err := do(ctx, i); err != nil {
			if ctx.Err() != nil {
				break
			}
			return lat, fmt.Errorf("request %d: %w", i, err)
		}
		now := time.Now()
		g.done.Add(1)
		g.last.Store(now.UnixNano())
		if !sched.Before(g.t0) {
			lat = append(lat, now.Sub(sched))
		}
	}
	return lat, nil
}

// ticket hands out the next request number and, in the open loop, its
// scheduled time; ok is false when the run is over.
func (g *loadGen) ticket() (i int64, sched time.Time, ok bool) {
	i = g.next.Add(1) - 1
	switch {
	case g.spec.count > 0:
		return i, time.Time{}, i < g.spec.count
	case g.interval > 0:
		sched = g.start.Add(time.Duration(i) * g.interval)
		return i, sched, sched.Before(g.end)
	}
	return i, time.Time{}, time.Now().Before(g.end)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errStatus is a response with a status the benchmark did not expect.
var errStatus = errors.New("unexpected status")
