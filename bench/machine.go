package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// kv is one line of the machine table.
type kv struct{ k, v string }

// machineInfo describes the machine and the software measured.
func (s *suite) machineInfo(ctx context.Context) []kv {
	info := []kv{
		{"date", time.Now().UTC().Format("2006-01-02 15:04 MST")},
		{"CPUs (nproc)", strconv.Itoa(runtime.NumCPU())},
		{"CPU model", firstField("/proc/cpuinfo", "model name")},
		{"memory", memTotal()},
		{"kernel", readTrim("/proc/sys/kernel/osrelease")},
		{"filesystem of the data dirs", filesystemOf(s.tmp)},
		{"Go", goVersions(s.bin)},
		{"hookproxy", s.sourceVersion(ctx)},
	}
	redis := "not installed"
	switch {
	case s.redis != nil:
		redis = s.redis.version + " (appendonly yes, appendfsync always)"
	case s.redisErr != nil:
		redis = s.redisErr.Error()
	}
	info = append(info, kv{"redis-server", redis})
	py, req, err := s.py.versions(ctx)
	if err != nil {
		info = append(info, kv{"python / requests", "unavailable: " + err.Error()})
	} else {
		info = append(info, kv{"python / requests", fmt.Sprintf("%s %s / requests %s", s.o.python, py, req)})
	}
	return info
}

// firstField is the value of the first "name : value" line of file.
func firstField(file, name string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	v := firstField("/proc/meminfo", "MemTotal")
	f := strings.Fields(v)
	if len(f) == 0 {
		return "unknown"
	}
	kb, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return v
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

func readTrim(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// filesystemOf names the filesystem dir is on, from /proc/mounts: a
// tmpfs would make every fsync free and the durable figures meaningless.
func filesystemOf(dir string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	abs, _ := filepath.Abs(dir)
	best, desc := "", "unknown"
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mnt := f[1]
		inside := abs == mnt || strings.HasPrefix(abs, strings.TrimSuffix(mnt, "/")+"/")
		if inside && len(mnt) >= len(best) {
			best, desc = mnt, fmt.Sprintf("%s on %s (%s)", f[2], mnt, f[0])
		}
	}
	return desc
}

// goVersions is the toolchain of the benchmark and of the hookproxy
// binary.
func goVersions(bin string) string {
	v := runtime.Version() + " (bench)"
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		v += ", " + bi.GoVersion + " (hookproxy binary)"
	}
	return v
}

// sourceVersion is the commit hookproxy was built from, or the binary
// given.
func (s *suite) sourceVersion(ctx context.Context) string {
	if s.o.bin != "" {
		return "binary " + s.bin
	}
	dir := s.o.src
	if dir == "" {
		dir, _ = findModule()
	}
	head, err := gitOutput(ctx, dir, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "built from " + dir
	}
	// Read-only status: --no-optional-locks keeps git from touching the
	// index while others work in the same tree.
	dirty, _ := gitOutput(ctx, dir, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
	if dirty != "" {
		return "commit " + head + " plus uncommitted changes"
	}
	return "commit " + head
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return string(bytes.TrimSpace(out)), err
}
