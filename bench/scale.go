package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"
)

// mib is bytes per MiB.
const mib = 1 << 20

// Keys of scenario e's figures.
var (
	emptyKeys   = []string{"e/start_empty_ms", "e/hwm_empty_mib", "e/du_empty_mib", "e/idle_cpu_empty_ms", "e/idle_sched_empty_ms"}
	backlogKeys = []string{"e/ingest_rps", "e/hwm_ingest_mib", "e/du_backlog_mib", "e/start_backlog_ms", "e/hwm_restart_mib", "e/payload_mib"}
	idleKeys    = []string{"e/idle_cpu_targets_ms", "e/idle_sched_targets_ms"}
)

// scenarioE measures scale, each figure against the same one for an empty
// store: peak memory and disk with a backlog of pending hooks (the
// receiver is down: it answers 503 and the retry is an hour away), the
// time to start with that backlog, and idle CPU with many targets each
// holding one hook that is not due for an hour.
func (s *suite) scenarioE(ctx context.Context) {
	down, err := startSink(http.StatusServiceUnavailable, 0)
	if err != nil {
		s.rec.fail(err, append(append(emptyKeys, backlogKeys...), idleKeys...)...)
		return
	}
	defer down.close()
	settle := min(2*time.Second, max(s.o.idleWindow/5, 100*time.Millisecond))
	steps := []struct {
		keys []string
		run  func(context.Context, *sink, time.Duration) error
	}{{emptyKeys, s.scaleEmpty}, {backlogKeys, s.scaleBacklog}, {idleKeys, s.scaleIdle}}
	for _, st := range steps {
		if err := st.run(ctx, down, settle); err != nil {
			s.rec.fail(err, st.keys...)
			s.progress("scale: %v", err)
		}
	}
}

// scaleEmpty measures an empty store: its restart time, memory, disk and
// idle CPU.
func (s *suite) scaleEmpty(ctx context.Context, down *sink, settle time.Duration) error {
	dir := s.newDir("scale-empty")
	defer os.RemoveAll(dir)
	settings := s.hpSettings("HOOKPROXY_RETRY_INTERVAL=1h")
	// The first start creates the store; the second is a restart, like
	// the one with a backlog it is compared with.
	p, err := startHookproxy(ctx, s.bin, dir, settings...)
	if err != nil {
		return err
	}
	if err := p.stop(); err != nil {
		return err
	}
	if p, err = startHookproxy(ctx, s.bin, dir, settings...); err != nil {
		return err
	}
	defer s.stop(p)
	s.rec.add("e/start_empty_ms", ms(p.startup))
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	if err := s.recordMemDisk(p, dir, "e/hwm_empty_mib", "e/du_empty_mib"); err != nil {
		return err
	}
	return s.recordIdleCPU(ctx, p, "e/idle_cpu_empty_ms", "e/idle_sched_empty_ms")
}

// scaleBacklog captures -scale-pending hooks for a receiver that is down,
// then restarts hookproxy on them.
func (s *suite) scaleBacklog(ctx context.Context, down *sink, settle time.Duration) error {
	dir := s.newDir("scale-backlog")
	defer os.RemoveAll(dir)
	settings := s.hpSettings("HOOKPROXY_RETRY_INTERVAL=1h")
	p, err := startHookproxy(ctx, s.bin, dir, settings...)
	if err != nil {
		return err
	}
	n := s.o.scalePending
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
	hwm, hwmErr := procStatusKB(p.pid(), "VmHWM")
	if err := p.stop(); err != nil {
		return err
	}
	if hwmErr != nil {
		return hwmErr
	}
	du, err := diskUsage(dir)
	if err != nil {
		return err
	}
	if p, err = startHookproxy(ctx, s.bin, dir, settings...); err != nil {
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
	s.rec.add("e/ingest_rps", res.rps())
	s.rec.add("e/hwm_ingest_mib", float64(hwm)/1024)
	s.rec.add("e/du_backlog_mib", float64(du)/mib)
	s.rec.add("e/start_backlog_ms", ms(p.startup))
	s.rec.add("e/hwm_restart_mib", float64(restartHWM)/1024)
	s.rec.add("e/payload_mib", float64(n*pyBodyBytes)/mib)
	s.progress("scale: %d pending: ingest %.0f/s, peak RSS %.1f MiB, disk %.1f MiB, restart %v",
		n, res.rps(), float64(hwm)/1024, float64(du)/mib, p.startup.Round(time.Millisecond))
	return nil
}

// scaleIdle gives hookproxy -scale-idle-targets targets with one hook
// each, due in an hour, and measures its CPU while nothing happens.
func (s *suite) scaleIdle(ctx context.Context, _ *sink, settle time.Duration) error {
	k, err := startSink(http.StatusOK, 0)
	if err != nil {
		return err
	}
	defer k.close()
	dir := s.newDir("scale-idle")
	defer os.RemoveAll(dir)
	p, err := startHookproxy(ctx, s.bin, dir, s.hpSettings("HOOKPROXY_BATCH_TIME=1h")...)
	if err != nil {
		return err
	}
	defer s.stop(p)
	n := s.o.scaleIdleTargets
	s.progress("scale: capturing one hook each for %d targets", n)
	sys := &httpSystem{
		proxy:       p.url,
		method:      http.MethodPost,
		url:         func(i int64) string { return fmt.Sprintf("%s/t/%d", k.url, i) },
		contentType: "application/json",
		body:        hookBody(pyBodyBytes, k.url+"/t"),
		want:        http.StatusAccepted,
	}
	_, err = generate(ctx, sys, loadSpec{workers: batchConcurrency, count: int64(n)})
	sys.close()
	if err != nil {
		return err
	}
	if err := sleep(ctx, settle); err != nil {
		return err
	}
	if err := s.recordIdleCPU(ctx, p, "e/idle_cpu_targets_ms", "e/idle_sched_targets_ms"); err != nil {
		return err
	}
	if got := k.requests.Load(); got > 0 {
		s.warn("scale: %d idle targets were delivered to during the idle window", got)
	}
	return nil
}

// recordMemDisk records p's peak RSS and the disk usage of dir.
func (s *suite) recordMemDisk(p *hookproxyProc, dir, hwmKey, duKey string) error {
	hwm, err := procStatusKB(p.pid(), "VmHWM")
	if err != nil {
		return err
	}
	du, err := diskUsage(dir)
	if err != nil {
		return err
	}
	s.rec.add(hwmKey, float64(hwm)/1024)
	s.rec.add(duKey, float64(du)/mib)
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
