package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// roleEnv, set in the environment, makes the benchmark's own binary (or
// its test binary) serve as one of the benchmark's helper processes
// instead of measuring. The no-op endpoint runs as such a process so
// that, like hookproxy, it is a process of its own beside the load
// generator: in-process it would share the load generator's scheduler
// and skip the switches between processes that hookproxy pays for.
const roleEnv = "HOOKPROXY_BENCH_ROLE"

// Helper roles.
const (
	// roleNoop is the no-op endpoint used as the proxy.
	roleNoop = "noop"
	// roleReceiver is the receiver of scenario c: it answers 200 to
	// everything, a process of its own as a real receiver would be.
	roleReceiver = "receiver"
)

// serveRole serves role until stdin closes, after printing its address
// on stdout.
func serveRole(role string, stdin io.Reader, stdout io.Writer) error {
	var srv *server
	var err error
	switch role {
	case roleNoop:
		srv, err = startNoop()
	case roleReceiver:
		var k *sink
		k, err = startSink(http.StatusOK, 0)
		if k != nil {
			srv = k.server
		}
	default:
		return fmt.Errorf("%s=%q: unknown role", roleEnv, role)
	}
	if err != nil {
		return err
	}
	defer srv.close()
	if _, err := fmt.Fprintln(stdout, srv.ln.Addr().String()); err != nil {
		return fmt.Errorf("print address: %w", err)
	}
	_, _ = io.Copy(io.Discard, stdin) // the parent closes stdin to stop us
	return nil
}

// helperProc is a helper process started with roleEnv.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   *url.URL
	done  chan struct{}
}

// startHelper starts the benchmark's own binary in role and waits for
// its address.
func startHelper(ctx context.Context, role string) (*helperProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	h := &helperProc{cmd: exec.Command(exe), done: make(chan struct{})}
	h.cmd.Env = append(os.Environ(), roleEnv+"="+role)
	dieWithParent(h.cmd)
	h.cmd.Stderr = os.Stderr
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("helper stdin: %w", err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("helper stdout: %w", err)
	}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s helper: %w", role, err)
	}
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrc <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, stdout)
		_ = h.cmd.Wait()
		close(h.done)
	}()
	select {
	case addr := <-addrc:
		if addr == "" {
			h.stop()
			return nil, fmt.Errorf("%s helper exited without an address", role)
		}
		h.url = &url.URL{Scheme: "http", Host: addr}
		return h, nil
	case <-time.After(30 * time.Second):
		h.stop()
		return nil, fmt.Errorf("%s helper: no address after 30s: %w", role, errTimeout)
	case <-ctx.Done():
		h.stop()
		return nil, ctx.Err()
	}
}

// stop closes the helper's stdin and waits for it to exit.
func (h *helperProc) stop() {
	_ = h.stdin.Close()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}
