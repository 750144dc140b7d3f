package main

import (
	"fmt"
	"math"
	"slices"
	"sync"
)

// cell is one figure of the report: the median of its repetitions, or
// why there is none.
type cell struct {
	v   float64
	ok  bool
	why string
}

// value makes a cell from a computed figure; NaN or an infinity becomes
// a missing figure.
func value(v float64) cell {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return cell{why: "not a number"}
	}
	return cell{v: v, ok: true}
}

// recorder collects the figures of every repetition under string keys,
// and the first error of each figure that could not be measured.
type recorder struct {
	mu   sync.Mutex
	vals map[string][]float64
	errs map[string]string
}

func newRecorder() *recorder {
	return &recorder{vals: map[string][]float64{}, errs: map[string]string{}}
}

// add records one repetition's value of key.
func (r *recorder) add(key string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals[key] = append(r.vals[key], v)
}

// fail records why the keys could not be measured (the first reason of
// each key is kept).
func (r *recorder) fail(err error, keys ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if _, ok := r.errs[k]; !ok {
			r.errs[k] = err.Error()
		}
	}
}

// get is the median of key's repetitions, or why it has none. A key with
// both values and an error (a repetition failed) keeps its values.
func (r *recorder) get(key string) cell {
	r.mu.Lock()
	defer r.mu.Unlock()
	if vs := r.vals[key]; len(vs) > 0 {
		return value(median(vs))
	}
	if why, ok := r.errs[key]; ok {
		return cell{why: why}
	}
	return cell{why: "not measured"}
}

// count is how many repetitions of key have a value.
func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.vals[key])
}

// last is the value of key's latest repetition.
func (r *recorder) last(key string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.vals[key]
	if len(vs) == 0 {
		return 0, false
	}
	return vs[len(vs)-1], true
}

// partial says, for each figure some repetitions of which failed, over
// how many repetitions its median is, and the first failure: the report
// would otherwise show it as the median of every repetition.
func (r *recorder) partial() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k, why := range r.errs {
		if n := len(r.vals[k]); n > 0 {
			out = append(out, fmt.Sprintf("%s: the median of %d repetition(s) only; the others failed: %s", k, n, why))
		}
	}
	slices.Sort(out)
	return out
}

// medians returns the median of every key, for -json.
func (r *recorder) medians() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]float64, len(r.vals))
	for k, vs := range r.vals {
		if m := median(vs); !math.IsNaN(m) && !math.IsInf(m, 0) {
			out[k] = m
		}
	}
	return out
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// loadMetrics are the figures recorded for every load measurement.
var loadMetrics = []string{"rps", "p50", "p99", "p999"}

// recordLoad records the figures of one load measurement under prefix,
// or its error under each of them.
func (r *recorder) recordLoad(prefix string, res loadResult, err error) {
	if err != nil {
		keys := make([]string, len(loadMetrics))
		for i, m := range loadMetrics {
			keys[i] = prefix + "/" + m
		}
		r.fail(err, keys...)
		return
	}
	r.add(prefix+"/rps", res.rps())
	r.add(prefix+"/p50", res.pct(0.50))
	r.add(prefix+"/p99", res.pct(0.99))
	r.add(prefix+"/p999", res.pct(0.999))
}
