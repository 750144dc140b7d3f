package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errNoRedis says redis-server is not installed; its rows are skipped.
var errNoRedis = errors.New("skipped: redis-server not installed (scripts/bench.sh installs it)")

// findRedis returns the redis-server to run: the one given, else the one
// on PATH, else Debian's.
func findRedis(given string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("redis-server %s: %w", given, err)
		}
		return given, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", errNoRedis
}

// redisServer is a redis-server subprocess that syncs its append-only
// file on every write: the durable reference for capture.
type redisServer struct {
	cmd     *exec.Cmd
	addr    string
	version string
	done    chan struct{}
}

// startRedis runs bin on a free loopback port with its files in dir.
func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	r.version = redisVersion(bin)
	// --auto-aof-rewrite-percentage 0: no background rewrite (a fork)
	// during a measurement; reset rewrites between measurements instead.
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--auto-aof-rewrite-percentage", "0", "--dir", dir, "--daemonize", "no", "--loglevel", "warning")
	logs := &tailBuffer{max: 4 << 10}
	r.cmd.Stdout, r.cmd.Stderr = logs, logs
	dieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	ready := func() bool {
		_, err := r.do(ctx, "PING")
		return err == nil
	}
	if err := waitFor(ctx, 10*time.Second, ready, func() string { return "redis-server not answering PING" }); err != nil {
		r.stop()
		return nil, fmt.Errorf("%w: %s", err, logs.String())
	}
	return r, nil
}

func redisVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	for f := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// stop ends redis-server without saving.
func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// reset empties redis between measurements: FLUSHALL, then a rewrite of
// the append-only file so it does not grow over the whole run.
func (r *redisServer) reset(ctx context.Context) error {
	if _, err := r.do(ctx, "FLUSHALL"); err != nil {
		return err
	}
	if _, err := r.do(ctx, "BGREWRITEAOF"); err != nil {
		return err
	}
	idle := func() bool {
		info, err := r.do(ctx, "INFO", "persistence")
		return err == nil && strings.Contains(info, "aof_rewrite_in_progress:0") &&
			strings.Contains(info, "aof_rewrite_scheduled:0")
	}
	return waitFor(ctx, 30*time.Second, idle, func() string { return "redis AOF rewrite still running" })
}

// do runs one command on a connection of its own.
func (r *redisServer) do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return "", fmt.Errorf("dial redis: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	if _, err := c.Write(respCommand(bs...)); err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	v, err := readReply(bufio.NewReader(c))
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", args[0], err)
	}
	return v, nil
}

// respCommand encodes a command as a RESP array of bulk strings.
func respCommand(args ...[]byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n", len(a))
		b.Write(a)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// errRedis is an error reply from redis.
var errRedis = errors.New("redis error reply")

// readReply reads one simple, integer, error or bulk-string reply.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply: %w", errRedis)
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("%s: %w", line[1:], errRedis)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", nil // a null bulk string
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", fmt.Errorf("read bulk reply: %w", err)
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unsupported reply %q: %w", line, errRedis)
}

// redisSystem LPUSHes the payload on one connection per worker.
type redisSystem struct {
	addr string
	cmd  []byte

	mu    sync.Mutex
	conns []net.Conn
}

func newRedisSystem(addr, key string, payload []byte) *redisSystem {
	return &redisSystem{addr: addr, cmd: respCommand([]byte("LPUSH"), []byte(key), payload)}
}

func (s *redisSystem) worker(int) (op, error) {
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("dial redis: %w", err)
	}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	rd := bufio.NewReader(c)
	return func(ctx context.Context, _ int64) error {
		if _, err := c.Write(s.cmd); err != nil {
			return fmt.Errorf("lpush: %w", err)
		}
		if _, err := readReply(rd); err != nil {
			return fmt.Errorf("lpush: %w", err)
		}
		return nil
	}, nil
}

func (s *redisSystem) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("find a free port: listener address %v is not TCP", ln.Addr())
	}
	return addr.Port, nil
}
