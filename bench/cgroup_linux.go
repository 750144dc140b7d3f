//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// memCgroup is a memory cgroup the benchmark made to run one hookproxy
// under a memory limit, as a container runtime would.
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup makes a child of the benchmark's own memory cgroup with the
// given limit, on cgroup v1 (memory controller) or v2 (memory in
// cgroup.controllers). It needs write access to the cgroup tree (root, in
// practice); without it the error wraps errNoCgroup.
func newMemCgroup(name string, limit int64) (*memCgroup, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoCgroup, err)
	}
	var tries []memCgroup
	sc := bufio.NewScanner(strings.NewReader(string(own)))
	for sc.Scan() {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			tries = append(tries, memCgroup{dir: filepath.Join("/sys/fs/cgroup/memory", parts[2], name)})
		case parts[0] == "0" && parts[1] == "":
			tries = append(tries, memCgroup{dir: filepath.Join("/sys/fs/cgroup", parts[2], name), v2: true})
		}
	}
	var errs []error
	for _, c := range tries {
		if c.v2 {
			ctl, err := os.ReadFile(filepath.Join(filepath.Dir(c.dir), "cgroup.subtree_control"))
			if err != nil || !slices.Contains(strings.Fields(string(ctl)), "memory") {
				errs = append(errs, fmt.Errorf("%s: memory controller not enabled for children", filepath.Dir(c.dir)))
				continue
			}
		}
		if err := os.Mkdir(c.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			errs = append(errs, err)
			continue
		}
		file, value := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
		if c.v2 {
			file = "memory.max"
		}
		if err := os.WriteFile(filepath.Join(c.dir, file), []byte(value), 0o644); err != nil {
			_ = os.Remove(c.dir)
			errs = append(errs, err)
			continue
		}
		return &c, nil
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no memory cgroup in /proc/self/cgroup"))
	}
	return nil, fmt.Errorf("%w: %v", errNoCgroup, errors.Join(errs...))
}

// procsFile is where a process id is written to move it into the cgroup.
func (c *memCgroup) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

// peak is the cgroup's peak memory use (page cache included), in bytes.
func (c *memCgroup) peak() (int64, error) {
	file := "memory.max_usage_in_bytes"
	if c.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// remove deletes the cgroup; its processes must have exited.
func (c *memCgroup) remove() error { return os.Remove(c.dir) }

// dropPageCache asks the kernel to drop the cached pages of every file
// under dir (or of dir itself, a file) (none may be mapped: the store is closed),
// so that a process reading them next faults them in again and they are
// charged to its cgroup, not to the benchmark's.
func dropPageCache(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		// Dirty pages are not dropped: write them out first.
		if err := f.Sync(); err != nil {
			return err
		}
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}
