package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"
)

var crashCycles = flag.Int("crash.cycles", 20, "SIGKILL/restart cycles of TestCrashLosesNoAcknowledgedHook (raise for a soak)")

// TestCrashLosesNoAcknowledgedHook runs the binary under a steady stream
// of hooks from concurrent clients, kills it with SIGKILL at random
// moments, restarts it on the same data dir each time, and checks that
// every hook that got a 202 reached the receiver. It covers the process
// dying, not the machine: the kernel keeps what was written but not
// synced, so a store that skipped its syncs would pass here too.
// buffer's TestOpenSyncsWrites checks that every write is synced.
func TestCrashLosesNoAcknowledgedHook(t *testing.T) {
	cycles := *crashCycles
	if testing.Short() {
		cycles = 3
	}
	rc := newReceiver(t, nil)
	dir := t.TempDir()
	// Each start listens on a port of the system's choosing (a port kept
	// across restarts could be taken in between); the clients follow.
	settings := map[string]string{
		"DATA_DIR": dir, "LISTEN": "127.0.0.1:0",
		"BATCH_SIZE": "10", "BATCH_TIME": "20ms", "RETRY_INTERVAL": "50ms", "RETRIES": "1000",
		"LOG_LEVEL": "info",
	}
	target := rc.srv.URL + "/crash"

	var (
		mu       sync.Mutex
		proxyURL *url.URL // the running process's, set before up is closed
		acked    = map[string]bool{}
		ackCh    = make(chan struct{}, 1) // a new ack happened
		up       = make(chan struct{})    // closed while a process is up
		stop     = make(chan struct{})
		clients  sync.WaitGroup
	)
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	start := func() *process {
		p := startProcess(t, settings)
		u, err := url.Parse(p.proxyURL)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		proxyURL = u
		close(up)
		mu.Unlock()
		return p
	}
	currentProxy := func(*http.Request) (*url.URL, error) { mu.Lock(); defer mu.Unlock(); return proxyURL, nil }
	for c := range 4 {
		clients.Go(func() {
			client := &http.Client{Transport: &http.Transport{Proxy: currentProxy}, Timeout: waitLimit}
			for i := 0; ; i++ {
				mu.Lock()
				ready := up
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-ready:
				}
				key := fmt.Sprintf("%d-%d", c, i)
				body := []byte(`{"hook":{"event":"crash"},"data":{"key":"` + key + `"}}`)
				resp, err := client.Post(target, "application/json", bytes.NewReader(body))
				if err != nil {
					continue // killed mid-request: not acknowledged
				}
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					mu.Lock()
					acked[key] = true
					mu.Unlock()
					select {
					case ackCh <- struct{}{}:
					default:
					}
				}
			}
		})
	}

	kills := 0
	for range cycles {
		p := start()
		// Kill after a random number of new acknowledgements.
		target := ackedCount() + 1 + rand.IntN(60)
		for ackedCount() < target {
			select {
			case <-ackCh:
			case <-time.After(waitLimit):
				t.Fatalf("no acknowledgement for %v after a restart\n%s", waitLimit, p.logs.String())
			}
		}
		mu.Lock()
		up = make(chan struct{})
		mu.Unlock()
		p.signal(t, syscall.SIGKILL)
		p.wait(t)
		kills++
	}
	// A last start delivers what is left, then the clients stop.
	p := start()
	close(stop)
	clients.Wait()

	want := ackedCount()
	deliveredKeys := map[string]int{}
	// Not waitFor: on a timeout the test reports how many were lost.
	got, _ := rc.await(func(g []received) bool {
		clear(deliveredKeys)
		for _, r := range g {
			var hooks []struct {
				Data struct {
					Key string `json:"key"`
				} `json:"data"`
			}
			if json.Unmarshal(r.Body, &hooks) != nil {
				continue
			}
			for _, h := range hooks {
				deliveredKeys[h.Data.Key]++
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for k := range acked {
			if deliveredKeys[k] == 0 {
				return false
			}
		}
		return true
	})
	p.signal(t, syscall.SIGTERM)
	p.wait(t)

	lost, dups, extra := 0, 0, 0
	for k := range acked {
		if deliveredKeys[k] == 0 {
			lost++
		}
	}
	for k, n := range deliveredKeys {
		dups += n - 1
		if !acked[k] {
			extra++ // stored, then killed before the 202 reached the client
		}
	}
	t.Logf("crash test: %d SIGKILLs, %d hooks acknowledged, %d lost, %d duplicate deliveries, %d delivered without a 202, %d batch requests",
		kills, want, lost, dups, extra, len(got))
	if lost > 0 {
		t.Fatalf("%d acknowledged hooks lost", lost)
	}
}
