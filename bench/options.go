package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the benchmark's flags. Sizes and durations left unset take
// the full-run default, or the -short default with -short.
type options struct {
	short     bool
	scenarios []string

	bin    string
	src    string
	tmp    string
	keep   bool
	python string
	redis  string
	hpEnv  []string

	reps        int
	warmup      time.Duration
	duration    time.Duration
	concurrency []int
	sizes       []int
	rate        float64
	rateWorkers int
	// judgedDuration is the timed phase of the measurements the c=16
	// targets are judged on, when longer than duration: their p99 rests
	// on a few stalls per second.
	judgedDuration time.Duration

	pyHooks     int
	pySlowHooks int
	pySlowDelay time.Duration

	batchHooks int
	batchSizes []int

	scaleTargets []int // sorted, distinct
	scalePending []int // sorted, distinct
	scaleIngest  int
	memLimitMiB  int
	idleWindow   time.Duration

	out  string
	png  string
	json string
	via  string
	args []string
}

// shortDefaults are the values -short gives to flags the command line
// leaves unset: tiny counts, so the whole suite runs in seconds and still
// produces every figure.
var shortDefaults = map[string]string{
	"reps":            "1",
	"warmup":          "30ms",
	"duration":        "150ms",
	"judged-duration": "150ms",
	"rate":            "200",
	"py-hooks":        "8",
	"py-slow-hooks":   "1",
	"batch-hooks":     "200",
	"scale-targets":   "1,10",
	"scale-pending":   "100,1000",
	"scale-ingest":    "200",
	"idle-window":     "300ms",
}

// allScenarios are the scenario letters, in the order they run.
var allScenarios = []string{"a", "b", "c", "d", "e"}

// parseOptions parses the command line.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{args: args}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./bench [flags]\n\n"+
			"Measures hookproxy against references side by side and reports ratios.\n"+
			"Scenarios: a durable capture (Go load generator), b the app's view (python requests),\n"+
			"c pass-through, d batching, e scale. Everything runs on 127.0.0.1.\n\nflags:\n")
		fs.PrintDefaults()
	}
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated letters")
	conc := fs.String("concurrency", "1,16,64", "closed-loop concurrencies of scenario a")
	sizes := fs.String("sizes", "400,8192", "JSON body sizes in bytes of scenario a")
	batches := fs.String("batch-sizes", "1,10,100", "HOOKPROXY_BATCH_SIZE values of scenario d")
	scaleTargets := fs.String("scale-targets", "1,1000,100000",
		"target counts of scenario e's scale matrix, comma-separated: a cell spreads its pending hooks round-robin over that many target URLs")
	scalePending := fs.String("scale-pending", "100000,1000000",
		"pending hook counts of scenario e's scale matrix, comma-separated; the empty store (0) is always measured, as the reference")
	fs.BoolVar(&o.short, "short", false, "tiny counts: finishes in well under a minute (checks the program, not the values)")
	fs.StringVar(&o.bin, "bin", "", "hookproxy binary to measure (default: build it from -src)")
	fs.StringVar(&o.src, "src", "", "hookproxy module directory (default: the go.mod above the working directory)")
	fs.StringVar(&o.tmp, "tmp", "", "directory for data dirs and the built binary (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	fs.StringVar(&o.python, "python", "/usr/bin/python3", "python with requests installed (Debian's python3-requests)")
	fs.StringVar(&o.redis, "redis", "", "redis-server binary (default: redis-server on PATH, else /usr/bin/redis-server)")
	fs.Func("hp-env", "extra NAME=value setting for every hookproxy run (repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("%q is not NAME=value", s)
		}
		o.hpEnv = append(o.hpEnv, s)
		return nil
	})
	fs.IntVar(&o.reps, "reps", 3, "repetitions; each figure is the median")
	fs.DurationVar(&o.warmup, "warmup", 250*time.Millisecond, "warm-up before each timed load phase")
	fs.DurationVar(&o.duration, "duration", time.Second, "timed phase of each load measurement")
	fs.DurationVar(&o.judgedDuration, "judged-duration", 4*time.Second,
		"timed phase of the measurements the c=16 targets are judged on (scenario a, c=16, first size, and its open loop), when longer than -duration")
	fs.Float64Var(&o.rate, "rate", 1000, "open-loop arrival rate (requests/s) of scenario a; 0 skips those rows "+
		"(the open loop at 80% of hookproxy's c=16 rate runs whenever -concurrency has 16)")
	fs.IntVar(&o.rateWorkers, "rate-workers", 64, "most requests in flight in open-loop mode")
	fs.IntVar(&o.pyHooks, "py-hooks", 500, "hooks per python run (split over its threads)")
	fs.IntVar(&o.pySlowHooks, "py-slow-hooks", 15, "hooks per python thread posted straight to the slow receiver")
	fs.DurationVar(&o.pySlowDelay, "py-slow-delay", 200*time.Millisecond, "answer delay of the slow receiver")
	fs.IntVar(&o.batchHooks, "batch-hooks", 5000, "hooks captured per batch size in scenario d (figures are per 10,000)")
	fs.IntVar(&o.scaleIngest, "scale-ingest", 1000000,
		"hooks captured over HTTP for a receiver that is down in scenario e (ingest rate, memory while capturing, restart)")
	fs.IntVar(&o.memLimitMiB, "scale-mem-limit", 256,
		"MiB: memory cgroup limit under which scenario e delivers the largest -scale-pending backlog (needs a writable cgroup tree; 0 skips)")
	fs.DurationVar(&o.idleWindow, "idle-window", time.Minute,
		"idle CPU window of scenario e (the empty store, and the most targets with the fewest pending hooks)")
	fs.StringVar(&o.out, "out", "", "write the markdown report to this file")
	fs.StringVar(&o.png, "png", "", "write the latency chart (PNG) to this file")
	fs.StringVar(&o.json, "json", "", "write every raw median to this file as JSON")
	fs.StringVar(&o.via, "via", "", "wrapper command that ran this one, named in the report")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := applyShort(fs, o.short); err != nil {
		return o, err
	}
	var err error
	if o.scenarios, err = parseScenarios(*scen); err != nil {
		return o, err
	}
	if o.concurrency, err = parseInts("concurrency", *conc); err != nil {
		return o, err
	}
	if o.sizes, err = parseInts("sizes", *sizes); err != nil {
		return o, err
	}
	if o.batchSizes, err = parseInts("batch-sizes", *batches); err != nil {
		return o, err
	}
	if o.scaleTargets, err = parseSet("scale-targets", *scaleTargets); err != nil {
		return o, err
	}
	if o.scalePending, err = parseSet("scale-pending", *scalePending); err != nil {
		return o, err
	}
	return o, o.validate()
}

// applyShort sets the -short value of every flag the command line did not
// set.
func applyShort(fs *flag.FlagSet, short bool) error {
	if !short {
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range shortDefaults {
		if set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("short default -%s=%s: %w", name, v, err)
		}
	}
	return nil
}

func (o *options) validate() error {
	switch {
	case o.reps < 1:
		return fmt.Errorf("-reps=%d: must be at least 1", o.reps)
	case o.duration <= 0 || o.warmup < 0 || o.judgedDuration < 0:
		return fmt.Errorf("-duration must be positive, -warmup and -judged-duration not negative")
	case o.rate < 0 || o.rateWorkers < 1:
		return fmt.Errorf("-rate must not be negative and -rate-workers must be positive")
	case o.pyHooks < 1 || o.pySlowHooks < 1 || o.batchHooks < 1:
		return fmt.Errorf("-py-hooks, -py-slow-hooks and -batch-hooks must be positive")
	case o.scaleIngest < 1 || o.idleWindow <= 0:
		return fmt.Errorf("-scale-ingest and -idle-window must be positive")
	case o.memLimitMiB < 0 || (o.memLimitMiB > 0 && o.memLimitMiB < 64):
		return fmt.Errorf("-scale-mem-limit=%d: must be 0 (skip) or at least 64 (MiB)", o.memLimitMiB)
	}
	for _, s := range o.sizes {
		if s < minBodySize {
			return fmt.Errorf("-sizes: %d is below the smallest body, %d bytes", s, minBodySize)
		}
	}
	return nil
}

// runs reports whether scenario letter s is selected.
func (o *options) runs(s string) bool { return slices.Contains(o.scenarios, s) }

func parseScenarios(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if !slices.Contains(allScenarios, f) {
			return nil, fmt.Errorf("-scenarios: %q is not one of %s", f, strings.Join(allScenarios, ","))
		}
		out = append(out, f)
	}
	return out, nil
}

func parseInts(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s: %q is not a positive integer", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseSet is parseInts sorted and without repeats: each value names a
// cell of the scale matrix, measured once.
func parseSet(name, s string) ([]int, error) {
	out, err := parseInts(name, s)
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
