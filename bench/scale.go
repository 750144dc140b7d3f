package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"hookproxy/buffer"
)

// mib is bytes per MiB.
const mib = 1 << 20

// fillWorkers is how many goroutines put a cell's backlog into its store:
// enough that the buffer's group commit carries hundreds of hooks per
// synced write.
const fillWorkers = 256

// anonSampleEvery is how often RssAnon is read for its peak.
const anonSampleEvery = 100 * time.Millisecond

// scaleSettings make nothing due for an hour: a time window and no size
// trigger, so the matrix measures a backlog that waits, not deliveries.
var scaleSettings = []string{"HOOKPROXY_BATCH_TIME=1h", "HOOKPROXY_BATCH_SIZE=0"}

// Figures of each cell of the scale matrix and of the empty store, under
// cellKey.
var (
	cellFigures = []string{"start_ms", "hwm_mib", "anon_peak_mib", "anon_mib", "file_mib", "du_mib", "payload_mib"}
	idleFigures = []string{"idle_cpu_ms", "idle_sched_ms", "idle_hwm_mib"}
	ingestKeys  = []string{"e/ingest/rps", "e/ingest/hwm_mib", "e/ingest/anon_peak_mib", "e/ingest/du_mib",
		"e/ingest/payload_mib", "e/ingest/restart_ms", "e/ingest/restart_hwm_mib"}
)

// idleGoKey is the peak RSS of an idle Go net/http server: the floor
// under hookproxy's idle figure.
const idleGoKey = "e/idle_go_hwm_mib"

// cellKey is the key prefix of the cell with pending hooks over targets;
// pending 0 is the empty store, the reference of every cell.
func cellKey(targets, pending int) string {
	if pending == 0 {
		return "e/empty"
	}
	return fmt.Sprintf("e/t%d/p%d", targets, pending)
}

// withPrefix is each figure under prefix.
func withPrefix(prefix string, figures []string) []string {
	out := make([]string, len(figures))
	for i, f := range figures {
		out[i] = prefix + "/" + f
	}
	return out
}

// idleCell is the cell whose idle CPU is measured besides the empty
// store's: the most targets with the fewest pending hooks (with the
// defaults, one hook per target, each holding a time window open).
func (o *options) idleCell() (targets, pending int) {
	return slices.Max(o.scaleTargets), slices.Min(o.scalePending)
}

// settle is how long scenario e lets a hookproxy run after its start
// line before reading its memory.
func (o *options) settle() time.Duration {
	return min(2*time.Second, max(o.idleWindow/5, 100*time.Millisecond))
}

// quiesce is how long scenario e waits, after the settle wait, before an
// idle CPU window.
func (o *options) quiesce() time.Duration {
	return min(10*time.Second, o.idleWindow/6)
}

// scenarioE measures scale, each figure against the same one for an
// empty store. The matrix: for each -scale-targets x -scale-pending cell,
// a store holding that backlog (filled in-process through the buffer
// package, nothing due for an hour): start-up time, memory and disk; idle
// CPU for the empty store and one cell. Then the peak RSS of an idle Go
// HTTP server, the reference of the idle-memory target. Then the ingest:
// -scale-ingest hooks captured over HTTP for a receiver that is down, and
// a restart on them.
func (s *suite) scenarioE(ctx context.Context) {
	settle := s.o.settle()
	recv, err := startSink(http.StatusOK, 0)
	if err != nil {
		s.rec.fail(err, s.matrixKeys()...)
	} else {
		defer recv.close()
		it, ip := s.o.idleCell()
		s.runCell(ctx, recv, 0, 0, true, settle)
		for _, t := range s.o.scaleTargets {
			for _, p := range s.o.scalePending {
				if ctx.Err() != nil {
					return
				}
				s.runCell(ctx, recv, t, p, t == it && p == ip, settle)
			}
		}
	}
	if err := s.scaleIdleGo(ctx, settle); err != nil {
		s.rec.fail(err, idleGoKey)
		s.progress("scale: idle Go server: %v", err)
	}
	if s.o.memLimitMiB > 0 {
		if err := s.scaleLimited(ctx); err != nil {
			// A stalled delivery keeps the count it reached.
			s.rec.fail(err, slices.DeleteFunc(slices.Clone(limitKeys), func(k string) bool { return s.rec.count(k) > 0 })...)
			s.progress("scale: under a memory limit: %v", err)
		}
	}
	down, err := startSink(http.StatusServiceUnavailable, 0)
	if err == nil {
		defer down.close()
		err = s.scaleIngest(ctx, down, settle)
	}
	if err != nil {
		s.rec.fail(err, ingestKeys...)
		s.progress("scale: ingest: %v", err)
	}
}

// matrixKeys are the keys of every cell and of the empty store.
func (s *suite) matrixKeys() []string {
	keys := withPrefix(cellKey(0, 0), append(slices.Clone(cellFigures), idleFigures...))
	for _, t := range s.o.scaleTargets {
		for _, p := range s.o.scalePending {
			keys = append(keys, withPrefix(cellKey(t, p), cellFigures)...)
		}
	}
	it, ip := s.o.idleCell()
	return append(keys, withPrefix(cellKey(it, ip), idleFigures)...)
}

// runCell measures one cell, recording why when it cannot.
func (s *suite) runCell(ctx context.Context, recv *sink, targets, pending int, idle bool, settle time.Duration) {
	if err := s.scaleCell(ctx, recv, targets, pending, idle, settle); err != nil {
		figures := cellFigures
		if idle {
			figures = append(slices.Clone(cellFigures), idleFigures...)
		}
		s.rec.fail(err, withPrefix(cellKey(targets, pending), figures)...)
		s.progress("scale: %s: %v", cellName(targets, pending), err)
	}
}

// scaleCell fills a fresh store with pending hooks spread over targets
// URLs of recv, starts hookproxy on it and records its start-up, memory
// and disk, and with idle its CPU over -idle-window.
func (s *suite) scaleCell(ctx context.Context, recv *sink, targets, pending int, idle bool, settle time.Duration) error {
	key := cellKey(targets, pending)
	dir := s.newDir(fmt.Sprintf("scale-t%d-p%d", targets, pending))
	defer os.RemoveAll(dir)
	if pending > 0 {
		s.progress("scale: filling a store with %d hooks over %d targets", pending, targets)
	}
	fill, err := fillStore(ctx, dir, targets, pending, recv.url)
	if err != nil {
		return err
	}
	if pending > 0 {
		s.rec.add(key+"/fill_rps", fill.rps())
		s.progress("scale: filled in %v (%.0f hooks/s)", fill.elapsed.Round(time.Millisecond), fill.rps())
	}
	delivered := recv.requests.Load()
	p, anon, err := s.startSampled(ctx, s.bin, dir, scaleSettings...)
	if err != nil {
		return err
	}
	defer s.stop(p)
	defer func() { _, _ = anon.stop() }() // for early returns; stopped and read below
	if p.pending != int64(pending) {
		s.warn("scale: %s: hookproxy started with %d pending hooks, want %d; its log ends:\n%s",
			cellName(targets, pending), p.pending, pending, p.logs)
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	peakKB, err := anon.stop()
	if err != nil {
		return err
	}
	mem, err := readMem(p.pid())
	if err != nil {
		return err
	}
	du, err := diskUsage(dir)
	if err != nil {
		return err
	}
	s.rec.add(key+"/start_ms", ms(p.startup))
	s.rec.add(key+"/hwm_mib", mem.hwm)
	s.rec.add(key+"/anon_peak_mib", float64(peakKB)/1024)
	s.rec.add(key+"/anon_mib", mem.anon)
	s.rec.add(key+"/file_mib", mem.file)
	s.rec.add(key+"/du_mib", float64(du)/mib)
	s.rec.add(key+"/payload_mib", float64(pending*pyBodyBytes)/mib)
	s.progress("scale: %s: ready in %v; VmHWM %.1f MiB, RssAnon %.1f (peak %.1f), RssFile %.1f MiB; disk %.1f MiB",
		cellName(targets, pending), p.startup.Round(time.Millisecond), mem.hwm, mem.anon, float64(peakKB)/1024,
		mem.file, float64(du)/mib)
	if idle {
		// The store was just written: Badger compacts its first tables in
		// the seconds after the start, which is not what idle targets
		// cost. The window starts after that, for the empty store alike.
		if err := sleep(ctx, s.o.quiesce()); err != nil {
			return err
		}
		if err := s.recordIdleCPU(ctx, p, key+"/idle_cpu_ms", key+"/idle_sched_ms"); err != nil {
			return err
		}
		hwm, err := procStatusKB(p.pid(), "VmHWM")
		if err != nil {
			return err
		}
		s.rec.add(key+"/idle_hwm_mib", float64(hwm)/1024)
	}
	if got := recv.requests.Load() - delivered; got > 0 {
		s.warn("scale: %s: the receiver got %d requests while nothing was due", cellName(targets, pending), got)
	}
	return nil
}

// cellName names a cell in progress lines and warnings.
func cellName(targets, pending int) string {
	if pending == 0 {
		return "empty store"
	}
	return fmt.Sprintf("%d targets, %d pending", targets, pending)
}

// startSampled starts hookproxy (bin: the binary, or a wrapper that execs
// it) on dir, sampling its RssAnon from the moment the process runs.
func (s *suite) startSampled(ctx context.Context, bin, dir string, settings ...string) (*hookproxyProc, *anonSampler, error) {
	var anon *anonSampler
	p, err := launchHookproxy(ctx, bin, dir, func(pid int) { anon = sampleAnon(pid, anonSampleEvery) },
		s.hpSettings(settings...)...)
	if err != nil {
		if anon != nil {
			_, _ = anon.stop()
		}
		return nil, nil, err
	}
	return p, anon, nil
}

// fillStore puts n hooks into a new store in dir, round-robin over
// targets URLs base/t/<i>, each with a body of its own, and closes the
// store. The result times the puts.
func fillStore(ctx context.Context, dir string, targets, n int, base string) (loadResult, error) {
	// No value-log GC: nothing is deleted, and it would compete with the
	// puts.
	st, err := buffer.Open(buffer.Options{Dir: dir, GCInterval: -1})
	if err != nil {
		return loadResult{}, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	var res loadResult
	if n > 0 {
		res, err = generate(ctx, &fillSystem{store: st, targets: int64(targets), base: base},
			loadSpec{workers: fillWorkers, count: int64(n)})
	}
	if cerr := st.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close buffer %s: %w", dir, cerr))
	}
	return res, err
}

// fillSystem puts hook i of a backlog straight into a store: a POST of a
// JSON body of pyBodyBytes, distinct for each i (identical bodies would
// compress into almost nothing on disk), to target i mod targets.
type fillSystem struct {
	store   *buffer.Store
	targets int64
	base    string
}

func (f *fillSystem) worker(int) (op, error) {
	return func(ctx context.Context, i int64) error {
		target := f.base + "/t/" + strconv.FormatInt(i%f.targets, 10)
		h := &buffer.Hook{
			Target: target,
			Method: http.MethodPost,
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   seededHookBody(pyBodyBytes, target, uint32(i)+1),
		}
		if err := f.store.Put(ctx, h); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		return nil
	}, nil
}

func (f *fillSystem) close() {}

// memFigures are a process's resident memory figures, in MiB.
type memFigures struct {
	hwm  float64 // VmHWM: the peak of VmRSS (RssAnon + RssFile + RssShmem)
	anon float64 // RssAnon: the process's own memory
	file float64 // RssFile: resident pages of mapped files
}

// readMem reads pid's memory figures from /proc/PID/status.
func readMem(pid int) (memFigures, error) {
	var kb [3]int64
	for i, name := range []string{"VmHWM", "RssAnon", "RssFile"} {
		v, err := procStatusKB(pid, name)
		if err != nil {
			return memFigures{}, err
		}
		kb[i] = v
	}
	return memFigures{hwm: float64(kb[0]) / 1024, anon: float64(kb[1]) / 1024, file: float64(kb[2]) / 1024}, nil
}

// scaleIdleGo measures the peak RSS of an idle Go net/http server, the
// benchmark's receiver as a process of its own: what any Go HTTP server
// holds on this machine, the reference of hookproxy's idle figure.
func (s *suite) scaleIdleGo(ctx context.Context, settle time.Duration) error {
	h, err := startHelper(ctx, roleReceiver)
	if err != nil {
		return err
	}
	defer h.stop()
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	hwm, err := procStatusKB(h.cmd.Process.Pid, "VmHWM")
	if err != nil {
		return err
	}
	s.rec.add(idleGoKey, float64(hwm)/1024)
	return nil
}

// scaleIngest captures -scale-ingest hooks over HTTP for a receiver that
// is down, sampling hookproxy's RssAnon throughout, then restarts
// hookproxy on them.
func (s *suite) scaleIngest(ctx context.Context, down *sink, settle time.Duration) error {
	dir := s.newDir("scale-ingest")
	defer os.RemoveAll(dir)
	settings := []string{"HOOKPROXY_RETRY_INTERVAL=1h"}
	p, anon, err := s.startSampled(ctx, s.bin, dir, settings...)
	if err != nil {
		return err
	}
	defer func() { _, _ = anon.stop() }() // for early returns; stopped and read below
	n := s.o.scaleIngest
	target := down.url + "/hook"
	s.progress("scale: capturing %d hooks for a receiver that is down", n)
	sys := captureSystem(p.url, target, nil, nil)
	// Every hook its own body, as in real life: identical bodies would
	// compress into almost nothing on disk.
	sys.bodyFor = func(i int64) []byte { return seededHookBody(pyBodyBytes, target, uint32(i)+1) }
	res, err := generate(ctx, sys, loadSpec{workers: batchConcurrency, count: int64(n)})
	sys.close()
	if err != nil {
		_ = p.stop()
		return err
	}
	// The sampler stops before the reads, so that it does not run
	// during them.
	peakKB, anonErr := anon.stop()
	hwm, hwmErr := procStatusKB(p.pid(), "VmHWM")
	if err := p.stop(); err != nil {
		return err
	}
	if err := errors.Join(anonErr, hwmErr); err != nil {
		return err
	}
	du, err := diskUsage(dir)
	if err != nil {
		return err
	}
	if p, err = startHookproxy(ctx, s.bin, dir, s.hpSettings(settings...)...); err != nil {
		return err
	}
	defer s.stop(p)
	if p.pending != int64(n) {
		s.warn("scale: hookproxy restarted with %d pending hooks, want %d; its log ends:\n%s", p.pending, n, p.logs)
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	restartHWM, err := procStatusKB(p.pid(), "VmHWM")
	if err != nil {
		return err
	}
	s.rec.add("e/ingest/rps", res.rps())
	s.rec.add("e/ingest/hwm_mib", float64(hwm)/1024)
	s.rec.add("e/ingest/anon_peak_mib", float64(peakKB)/1024)
	s.rec.add("e/ingest/du_mib", float64(du)/mib)
	s.rec.add("e/ingest/payload_mib", float64(n*pyBodyBytes)/mib)
	s.rec.add("e/ingest/restart_ms", ms(p.startup))
	s.rec.add("e/ingest/restart_hwm_mib", float64(restartHWM)/1024)
	s.progress("scale: captured %d: %.0f/s, VmHWM %.1f MiB, peak RssAnon %.1f MiB, disk %.1f MiB, restart %v",
		n, res.rps(), float64(hwm)/1024, float64(peakKB)/1024, float64(du)/mib, p.startup.Round(time.Millisecond))
	return nil
}

// recordIdleCPU records the CPU p uses over -idle-window, as utime+stime
// (10 ms ticks) and as the threads' scheduled time (nanoseconds).
func (s *suite) recordIdleCPU(ctx context.Context, p *hookproxyProc, ticksKey, schedKey string) error {
	t0, err1 := procCPU(p.pid())
	n0, err2 := procSchedCPU(p.pid())
	if err1 != nil || err2 != nil {
		return fmt.Errorf("idle CPU: %v %v", err1, err2)
	}
	if err := sleep(ctx, s.o.idleWindow); err != nil {
		return err
	}
	t1, err1 := procCPU(p.pid())
	n1, err2 := procSchedCPU(p.pid())
	if err1 != nil || err2 != nil {
		return fmt.Errorf("idle CPU: %v %v", err1, err2)
	}
	s.rec.add(ticksKey, ms(t1-t0))
	s.rec.add(schedKey, ms(n1-n0))
	s.progress("scale: %s %.1f ms, %s %.2f ms over %v", ticksKey, ms(t1-t0), schedKey, ms(n1-n0), s.o.idleWindow)
	return nil
}

// stop stops p, noting a failure to stop cleanly.
func (s *suite) stop(p *hookproxyProc) {
	if err := p.stop(); err != nil {
		s.warn("%v", err)
	}
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleep waits for d or the end of ctx.
func sleep(ctx context.Context, d time.Duration) error {
	return sleepUntil(ctx, time.Now().Add(d))
}

// errNoCgroup says the benchmark cannot make a memory cgroup here.
var errNoCgroup = errors.New("no writable memory cgroup (needs root, and cgroup v1 memory or v2 with the memory controller)")

// Keys of the delivery of a backlog with and without a memory limit.
var limitKeys = append(withPrefix("e/limit", append(slices.Clone(limitFigures), "cg_peak_mib", "limit_mib")),
	withPrefix("e/free", limitFigures)...)

var limitFigures = []string{"hwm_mib", "anon_peak_mib", "rps", "delivered"}

// scaleLimited delivers the largest -scale-pending backlog of one target
// twice from copies of one store, each with a cold page cache: without a
// memory limit, and inside a memory cgroup of -scale-mem-limit MiB, as a
// container runtime would run hookproxy. Without the limit the kernel
// leaves every page of the store hookproxy touched mapped (nothing asks
// for them back); with it, it reclaims those clean file pages as the
// cgroup fills, and hookproxy must still deliver everything.
func (s *suite) scaleLimited(ctx context.Context) error {
	limit := int64(s.o.memLimitMiB) << 20
	cg, err := newMemCgroup(fmt.Sprintf("hookproxy-bench-%d", os.Getpid()), limit)
	if err != nil {
		return err
	}
	defer func() {
		if err := cg.remove(); err != nil {
			s.warn("scale: remove cgroup %s: %v", cg.dir, err)
		}
	}()
	recv, err := startSink(http.StatusOK, 0)
	if err != nil {
		return err
	}
	defer recv.close()
	n := slices.Max(s.o.scalePending)
	src := s.newDir("scale-limit-src")
	defer os.RemoveAll(src)
	s.progress("scale: filling a store with %d hooks for one target, to deliver with and without a memory limit", n)
	if _, err := fillStore(ctx, src, 1, n, recv.url); err != nil {
		return err
	}
	for _, c := range []struct {
		key string
		cg  *memCgroup
	}{{"e/free", nil}, {"e/limit", cg}} {
		if err := s.deliverBacklog(ctx, recv, src, n, c.key, c.cg); err != nil {
			return err
		}
	}
	return nil
}

// deliverBacklog starts hookproxy (inside cg, when not nil) on a copy of
// src, whose n hooks are due at once, and records its memory and how fast
// it delivered them all to recv.
func (s *suite) deliverBacklog(ctx context.Context, recv *sink, src string, n int, key string, cg *memCgroup) error {
	dir := s.newDir("scale-limit")
	defer os.RemoveAll(dir)
	if err := copyTree(src, dir); err != nil {
		return err
	}
	// The binary too: its pages count in hookproxy's RSS, and once cached
	// by an earlier run they stay charged to the benchmark's cgroup.
	for _, path := range []string{dir, s.bin} {
		if err := dropPageCache(path); err != nil {
			return fmt.Errorf("drop the page cache of %s: %w", path, err)
		}
	}
	bin := s.bin
	if cg != nil {
		// The shell moves itself into the cgroup, then becomes hookproxy:
		// everything hookproxy allocates or reads is charged to the cgroup.
		bin = filepath.Join(dir, "in-cgroup.sh")
		script := fmt.Sprintf("#!/bin/sh\necho $$ > %q || exit 1\nexec %q \"$@\"\n", cg.procsFile(), s.bin)
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			return err
		}
	}
	before := recv.hooks.Load()
	p, anon, err := s.startSampled(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer s.stop(p)
	defer func() { _, _ = anon.stop() }() // for early returns; stopped and read below
	start := time.Now()
	if err := recv.waitHooks(ctx, before+int64(n)); err != nil {
		// Deliveries stalled (hookproxy OOM-killed, or stuck): what it
		// delivered is the figure its target is judged on, a miss and
		// not a figure that could not be measured.
		if ctx.Err() == nil {
			s.rec.add(key+"/delivered", float64(recv.hooks.Load()-before))
		}
		return fmt.Errorf("deliver %d hooks (limit: %v): %w; hookproxy's log ends:\n%s", n, cg != nil, err, p.logs)
	}
	elapsed := time.Since(start) + p.startup
	peakKB, err := anon.stop()
	if err != nil {
		return err
	}
	hwm, err := procStatusKB(p.pid(), "VmHWM")
	if err != nil {
		return err
	}
	s.rec.add(key+"/hwm_mib", float64(hwm)/1024)
	s.rec.add(key+"/anon_peak_mib", float64(peakKB)/1024)
	s.rec.add(key+"/rps", float64(n)/elapsed.Seconds())
	s.rec.add(key+"/delivered", float64(recv.hooks.Load()-before))
	if cg != nil {
		peak, err := cg.peak()
		if err != nil {
			return err
		}
		s.rec.add(key+"/cg_peak_mib", float64(peak)/mib)
		s.rec.add(key+"/limit_mib", float64(s.o.memLimitMiB))
	}
	s.progress("scale: delivered %d hooks in %v (memory limit: %v): VmHWM %.1f MiB, peak RssAnon %.1f MiB",
		n, elapsed.Round(time.Millisecond), cg != nil, float64(hwm)/1024, float64(peakKB)/1024)
	return nil
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			_ = out.Close()
			return err
		}
		return out.Close()
	})
}
