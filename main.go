// Command hookproxy is a sidecar forward proxy for Django apps that send
// webhooks with django-rest-hooks: it captures each webhook POST, answers
// the app once the hook is on disk, and delivers hooks in batches with
// retries. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		awaitSignals(sigs, cancel, time.Now) // the first signal starts a graceful shutdown
		fmt.Fprintln(os.Stderr, "hookproxy: second signal, exiting now; pending hooks stay on disk")
		os.Exit(130)
	}()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hookproxy:", err)
		os.Exit(exitCode(err)) // 1, or the operator commands' codes for scripts
	}
}

// repeatWindow is how soon after the first a signal is the same one
// delivered twice rather than an operator's second: coreutils' timeout,
// for one, signals hookproxy and then its whole process group, and a
// second signal would cut the drain it asked for.
const repeatWindow = 250 * time.Millisecond

// awaitSignals calls shutdown at the first signal on sigs and returns at
// the next one that comes repeatWindow or more after it.
func awaitSignals(sigs <-chan os.Signal, shutdown func(), now func() time.Time) {
	<-sigs
	first := now()
	shutdown()
	for range sigs {
		if now().Sub(first) >= repeatWindow {
			return
		}
	}
}
