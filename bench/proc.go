package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// startTimeout bounds how long hookproxy may take to log that it started
// (it rebuilds its index of a backlog first).
const startTimeout = 2 * time.Minute

// hookproxyProc is hookproxy running as a subprocess on a loopback port.
type hookproxyProc struct {
	cmd  *exec.Cmd
	dir  string
	url  *url.URL // the proxy address, http://127.0.0.1:PORT
	logs *tailBuffer
	done chan struct{}
	// startup is the time from starting the process to reading its
	// "hookproxy started" line.
	startup time.Duration
	// pending is the pending_hooks of that line.
	pending int64
}

// startLine is what the benchmark reads of hookproxy's start line.
type startLine struct {
	Addr    string `json:"proxy_addr"`
	Pending int64  `json:"pending_hooks"`
}

// baseSettings are the settings of every hookproxy the benchmark runs;
// a run's own settings and then -hp-env override them.
func baseSettings(dir string) map[string]string {
	return map[string]string{
		"HOOKPROXY_LISTEN": "127.0.0.1:0",
		// Several instances run at once: none may take a fixed port.
		"HOOKPROXY_ADMIN_LISTEN": "127.0.0.1:0",
		"HOOKPROXY_LOG_FORMAT":   "json",
		"HOOKPROXY_DATA_DIR":     dir,
		"HOOKPROXY_BATCH_SIZE":   "100",
		// A remainder below the batch size is sent after 1 s instead of
		// 1 min, so waits for delivery stay short.
		"HOOKPROXY_BATCH_MAX_WAIT": "1s",
		// Stop at once: what is pending stays on disk, as it should.
		"HOOKPROXY_DRAIN_TIMEOUT": "0",
		// The receivers are on 127.0.0.1, which the egress guard refuses
		// by default.
		"HOOKPROXY_ALLOW_PRIVATE_TARGETS": "true",
	}
}

// startHookproxy runs bin with its data in dir and the given NAME=value
// settings, and waits until it logs its address.
func startHookproxy(ctx context.Context, bin, dir string, settings ...string) (*hookproxyProc, error) {
	return launchHookproxy(ctx, bin, dir, nil, settings...)
}

// launchHookproxy is startHookproxy that also calls launched, when not
// nil, with the process id as soon as the process runs: before its start
// line, so that a watcher sees the start-up too.
func launchHookproxy(ctx context.Context, bin, dir string, launched func(pid int), settings ...string) (*hookproxyProc, error) {
	env := baseSettings(dir)
	for _, kv := range settings {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	environ := []string{"PATH=/usr/bin:/bin"}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		environ = append(environ, k+"="+env[k])
	}
	p := &hookproxyProc{dir: dir, logs: &tailBuffer{max: 8 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = environ
	dieWithParent(p.cmd)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("hookproxy stderr: %w", err)
	}
	started := time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	if launched != nil {
		launched(p.cmd.Process.Pid)
	}
	addrc := make(chan startLine, 1)
	go func() {
		p.readLogs(stderr, addrc)
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case line := <-addrc:
		p.startup = time.Since(started)
		p.url = &url.URL{Scheme: "http", Host: line.Addr}
		p.pending = line.Pending
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("hookproxy exited at start (%v):\n%s", p.cmd.ProcessState, p.logs)
	case <-time.After(startTimeout):
		err = fmt.Errorf("hookproxy did not log its start within %v: %w\n%s", startTimeout, errTimeout, p.logs)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.kill()
	return nil, err
}

// readLogs keeps the tail of hookproxy's log and sends the proxy address
// from its start line. It returns when stderr closes.
func (p *hookproxyProc) readLogs(r io.Reader, addrc chan<- startLine) {
	rd := bufio.NewReaderSize(r, 64<<10)
	found := false
	for {
		line, err := rd.ReadSlice('\n')
		_, _ = p.logs.Write(line)
		if !found && bytes.Contains(line, []byte(`"hookproxy started"`)) {
			var rec startLine
			if json.Unmarshal(line, &rec) == nil && rec.Addr != "" {
				found = true
				addrc <- rec
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// pid is the process id.
func (p *hookproxyProc) pid() int { return p.cmd.Process.Pid }

// stop shuts hookproxy down with SIGTERM, as an orchestrator would, and
// reports an unclean exit.
func (p *hookproxyProc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		return fmt.Errorf("hookproxy did not stop within 30s after SIGTERM:\n%s", p.logs)
	}
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("hookproxy exited with %v:\n%s", p.cmd.ProcessState, p.logs)
	}
	return nil
}

func (p *hookproxyProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tailBuffer keeps about the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b[max(len(t.b)-t.max, 0):])
}

// procStatusKB reads a "Name: N kB" field of /proc/PID/status (VmHWM is
// the peak resident set size).
func procStatusKB(pid int, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// anonSampler keeps the peak RssAnon of a process (its own memory,
// without the pages of mapped files), read from /proc/PID/status at a
// fixed interval: VmHWM keeps only the peak of the sum.
type anonSampler struct {
	pid    int
	cancel context.CancelFunc
	done   chan struct{}
	peakKB int64 // owned by the loop until done is closed
	err    error // the first failed read
}

// sampleAnon starts sampling pid's RssAnon every interval, the first
// time at once.
func sampleAnon(pid int, every time.Duration) *anonSampler {
	ctx, cancel := context.WithCancel(context.Background())
	a := &anonSampler{pid: pid, cancel: cancel, done: make(chan struct{})}
	go a.loop(ctx, every)
	return a
}

func (a *anonSampler) loop(ctx context.Context, every time.Duration) {
	defer close(a.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		a.sample()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *anonSampler) sample() {
	kb, err := procStatusKB(a.pid, "RssAnon")
	if err != nil {
		if a.err == nil {
			a.err = err
		}
		return
	}
	a.peakKB = max(a.peakKB, kb)
}

// stop ends the sampling after one last sample and returns the peak in
// KiB. It may be called again: later calls sample once more.
func (a *anonSampler) stop() (int64, error) {
	a.cancel()
	<-a.done
	a.sample()
	if a.peakKB == 0 {
		return 0, fmt.Errorf("sample RssAnon: %w", cmp.Or(a.err, errors.New("no sample")))
	}
	return a.peakKB, nil
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time a process used, user plus system, from
// /proc/PID/stat (in clock ticks, so at 10 ms resolution).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it start
	// at field 3, so utime (14) and stime (15) are the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procSchedCPU is the time the process's threads spent on a CPU, in
// nanoseconds, from /proc/PID/task/*/schedstat: finer than procCPU.
func procSchedCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for process %d", pid)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", t, err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// diskUsage is what du reports for dir: allocated blocks, in bytes.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += allocated(info)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}
