// Command bench measures hookproxy against reference systems on this
// machine, side by side in one run, and reports ratios: the machine is
// shared and noisy, so absolute figures from different runs do not
// compare, but hookproxy and its references measured moments apart do.
//
// It builds hookproxy (or takes -bin), runs it as a subprocess on a
// loopback port with a temporary data directory, and drives it with a Go
// load generator and with the app's own client (python requests). The
// references are a no-op HTTP endpoint used as the proxy (the machine's
// HTTP ceiling), redis-server with appendfsync always, the buffer's synced
// write path called directly, and direct requests without a proxy.
// Everything listens on 127.0.0.1 only.
//
// Usage:
//
//	go run ./bench -out BENCHMARKS.md -png docs/bench-latency.png
//	go run ./bench -short          # tiny counts: checks the program works
//	go run ./bench -h              # every flag
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		if err := serveRole(role, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
