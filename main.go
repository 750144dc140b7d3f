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
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs
		cancel() // the first signal starts a graceful shutdown
		<-sigs
		fmt.Fprintln(os.Stderr, "hookproxy: second signal, exiting now; pending hooks stay on disk")
		os.Exit(130)
	}()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hookproxy:", err)
		os.Exit(exitCode(err)) // 1, or the operator commands' codes for scripts
	}
}
