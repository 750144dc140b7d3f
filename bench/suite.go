package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// suite is one benchmark run: its options, its temporary directory, the
// servers every scenario shares and the figures recorded so far.
type suite struct {
	o   options
	log io.Writer // progress lines
	tmp string
	bin string
	rec *recorder
	py  *pyClient

	redisErr error // why there is no redis reference (nil: there is)
	redis    *redisServer

	noop *helperProc // the no-op endpoint, a process of its own
	sink *sink       // the receiver answering 200 at once
	slow *sink       // the receiver answering 200 after o.pySlowDelay

	// hp is the hookproxy of scenarios a, b and c (HOOKPROXY_BATCH_SIZE=100),
	// delivering to sink and slow; captured counts the hooks it accepted.
	hp          *hookproxyProc
	captured    atomic.Int64
	deliveryErr error // why the main hookproxy stopped delivering

	dirs     atomic.Int64
	warnings []string
	info     []kv
}

// newSuite prepares a run: temporary directory, hookproxy binary, python
// client, receivers, the no-op endpoint, redis when installed.
func newSuite(ctx context.Context, o options, log io.Writer) (s *suite, err error) {
	s = &suite{o: o, log: log, rec: newRecorder()}
	defer func() {
		if err != nil {
			s.close()
			s = nil
		}
	}()
	if err := s.makeTmp(); err != nil {
		return s, err
	}
	if err := s.prepareBinary(ctx); err != nil {
		return s, err
	}
	if s.py, err = newPyClient(o.python, s.tmp); err != nil {
		return s, err
	}
	if s.noop, err = startHelper(ctx, roleNoop); err != nil {
		return s, err
	}
	if s.sink, err = startSink(http.StatusOK, 0); err != nil {
		return s, err
	}
	if s.slow, err = startSink(http.StatusOK, o.pySlowDelay); err != nil {
		return s, err
	}
	s.startRedis(ctx)
	s.info = s.machineInfo(ctx)
	return s, nil
}

func (s *suite) makeTmp() error {
	dir, err := os.MkdirTemp(s.o.tmp, "hookproxy-bench-") // "" is the system's
	if err != nil {
		return fmt.Errorf("make temporary directory: %w", err)
	}
	s.tmp = dir
	return nil
}

// prepareBinary takes -bin, or builds hookproxy from its module.
func (s *suite) prepareBinary(ctx context.Context) error {
	if s.o.bin != "" {
		abs, err := filepath.Abs(s.o.bin)
		if err != nil {
			return fmt.Errorf("hookproxy binary %s: %w", s.o.bin, err)
		}
		s.bin = abs
		return nil
	}
	src := s.o.src
	if src == "" {
		var err error
		if src, err = findModule(); err != nil {
			return err
		}
	}
	s.bin = filepath.Join(s.tmp, "hookproxy")
	s.progress("building hookproxy from %s", src)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", s.bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build hookproxy in %s: %w\n%s", src, err, out)
	}
	return nil
}

// findModule finds the hookproxy module at or above the working
// directory.
func findModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find hookproxy module: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module hookproxy") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find hookproxy module: no go.mod of module hookproxy at or above the working directory (pass -src or -bin)")
		}
		dir = parent
	}
}

// startRedis starts the redis reference, or notes why there is none.
func (s *suite) startRedis(ctx context.Context) {
	if !s.o.runs("a") {
		s.redisErr = errors.New("scenario a not run")
		return
	}
	bin, err := findRedis(s.o.redis)
	if err != nil {
		s.redisErr = err
		s.progress("%v", err)
		return
	}
	r, err := startRedis(ctx, bin, s.newDir("redis"))
	if err != nil {
		s.redisErr = fmt.Errorf("redis-server: %w", err)
		s.progress("%v", s.redisErr)
		return
	}
	s.redis = r
}

// close stops everything the suite started and removes its directory
// unless -keep.
func (s *suite) close() {
	if s.hp != nil {
		if err := s.hp.stop(); err != nil {
			s.progress("stop hookproxy: %v", err)
		}
		s.hp = nil
	}
	if s.redis != nil {
		s.redis.stop()
	}
	if s.noop != nil {
		s.noop.stop()
	}
	for _, srv := range []*server{serverOf(s.sink), serverOf(s.slow)} {
		if srv != nil {
			srv.close()
		}
	}
	if s.tmp != "" && !s.o.keep {
		_ = os.RemoveAll(s.tmp)
	}
}

func serverOf(k *sink) *server {
	if k == nil {
		return nil
	}
	return k.server
}

// newDir makes a fresh directory under the run's temporary directory.
func (s *suite) newDir(name string) string {
	dir := filepath.Join(s.tmp, fmt.Sprintf("%s-%d", name, s.dirs.Add(1)))
	_ = os.MkdirAll(dir, 0o755)
	return dir
}

// progress prints one progress line.
func (s *suite) progress(format string, args ...any) {
	fmt.Fprintf(s.log, "bench: "+format+"\n", args...)
}

// warn notes something the report should say.
func (s *suite) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.warnings = append(s.warnings, msg)
	s.progress("warning: %s", msg)
}

// hpSettings are the settings of the run's hookproxy instances plus
// -hp-env.
func (s *suite) hpSettings(settings ...string) []string {
	return append(settings, s.o.hpEnv...)
}

// startMainHookproxy starts the hookproxy of scenarios a, b and c.
func (s *suite) startMainHookproxy(ctx context.Context) error {
	p, err := startHookproxy(ctx, s.bin, s.newDir("hookproxy"), s.hpSettings()...)
	if err != nil {
		return err
	}
	s.hp = p
	s.progress("hookproxy %s started in %v", p.url, p.startup.Round(time.Millisecond))
	return nil
}

// waitDelivered waits until the main hookproxy has delivered every
// captured hook but a remainder below one batch, so that one
// measurement's deliveries do not run during the next. When deliveries
// stall it records the failure, and later waits are skipped.
func (s *suite) waitDelivered(ctx context.Context) {
	if s.deliveryErr != nil {
		return
	}
	delivered := func() int64 { return s.sink.hooks.Load() + s.slow.hooks.Load() }
	want := s.captured.Load()
	state := func() string {
		return fmt.Sprintf("hookproxy delivered %d of %d captured hooks", delivered(), s.captured.Load())
	}
	if err := waitProgress(ctx, delivered, want, state); err != nil && ctx.Err() == nil {
		s.deliveryErr = err
		s.warn("%v (if hookproxy refuses the loopback receivers, allow them with -hp-env)", err)
	}
}

// runAll runs the selected scenarios: a, b, c and d once per repetition,
// interleaved, so that noise hits hookproxy and its references alike; e
// once.
func (s *suite) runAll(ctx context.Context) error {
	if s.o.runs("a") || s.o.runs("b") || s.o.runs("c") {
		if err := s.startMainHookproxy(ctx); err != nil {
			return err
		}
	}
	for rep := 1; rep <= s.o.reps; rep++ {
		s.progress("repetition %d of %d", rep, s.o.reps)
		steps := []struct {
			name string
			run  func(context.Context)
		}{{"a", s.scenarioA}, {"b", s.scenarioB}, {"c", s.scenarioC}, {"d", s.scenarioD}}
		for _, st := range steps {
			if !s.o.runs(st.name) {
				continue
			}
			st.run(ctx)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	if s.o.runs("e") {
		s.scenarioE(ctx)
	}
	return ctx.Err()
}

// measure drives sys as spec says and records the figures under key.
// When pid is not 0 it also records the CPU time that process spent per
// request (warm-up included), under key/cpu_us.
func (s *suite) measure(ctx context.Context, key string, sys system, spec loadSpec, pid int) loadResult {
	var cpu0 time.Duration
	if pid != 0 {
		cpu0, _ = procSchedCPU(pid)
	}
	res, err := generate(ctx, sys, spec)
	sys.close()
	s.rec.recordLoad(key, res, err)
	if err != nil {
		s.progress("%s: %v", key, err)
		return res
	}
	cpuNote := ""
	if cpu1, cerr := procSchedCPU(pid); pid != 0 && cerr == nil && res.total > 0 {
		us := float64(cpu1-cpu0) / float64(time.Microsecond) / float64(res.total)
		s.rec.add(key+"/cpu_us", us)
		cpuNote = fmt.Sprintf("  cpu %5.0f us/req", us)
	}
	s.progress("%-28s %8.0f/s  p50 %7.3f ms  p99 %7.3f ms  p99.9 %7.3f ms%s",
		key, res.rps(), res.pct(0.5), res.pct(0.99), res.pct(0.999), cpuNote)
	return res
}
