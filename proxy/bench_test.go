package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// infoLogger logs at Info to io.Discard: it keeps the cost of the
// per-hook log line.
func infoLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// reportLatency reports the median and the 99th percentile of lat, in
// milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkCapture measures a hook POST through the proxy on one kept-alive
// loopback connection, from the client's first byte to the 202, with an
// in-memory store: the proxy's own cost per hook, without the disk.
func BenchmarkCapture(b *testing.B) {
	tp := startProxy(b, Options{Store: &fakeStore{}, Logger: infoLogger()})
	client := tp.client(b)
	const target = "http://receiver.example/hooks/t0"
	lat := make([]time.Duration, 0, 1024)
	for b.Loop() {
		start := time.Now()
		if err := postHook(client, target); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hooks/s")
	reportLatency(b, lat)
}

// postHook sends one hook POST and checks the 202. It returns its error
// rather than stopping the benchmark: workers call it.
func postHook(client *http.Client, target string) error {
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(hookBody))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d, want 202", resp.StatusCode)
	}
	return nil
}

// BenchmarkCaptureMITM measures hook POSTs to an https:// target through
// intercepted tunnels, each client on its own kept-alive tunnel (opened
// and warmed before the clock starts), from the request to the 202: with
// the in-memory store (the proxy's own cost) and with the real store
// (synced writes; concurrent captures share a sync), at concurrency 1
// and 16.
//
// The plain-HTTP rows (scheme=http) are the same measurement without the
// tunnel, for a side-by-side comparison.
func BenchmarkCaptureMITM(b *testing.B) {
	for _, scheme := range []string{"https", "http"} {
		for _, storeKind := range []string{"memory", "badger"} {
			for _, clients := range []int{1, 16} {
				benchCaptureTunnel(b, scheme, storeKind, clients)
			}
		}
	}
}

func benchCaptureTunnel(b *testing.B, scheme, storeKind string, clients int) {
	b.Run(fmt.Sprintf("scheme=%s/store=%s/c=%d", scheme, storeKind, clients), func(b *testing.B) {
		var store Store = &fakeStore{}
		if storeKind == "badger" {
			store = openStore(b)
		}
		ca := newCA(b)
		tp := startProxy(b, Options{Store: store, TLSConfig: ca.TLSConfig, Logger: infoLogger()})
		target := scheme + "://hooks.example/hooks/t0"
		cs := make([]*http.Client, clients)
		for i := range cs {
			tr := &http.Transport{Proxy: http.ProxyURL(tp.URL), MaxConnsPerHost: 1}
			if scheme == "https" {
				tr.TLSClientConfig = trusting(ca.Certificate())
			}
			b.Cleanup(tr.CloseIdleConnections)
			cs[i] = &http.Client{Transport: tr}
			// CONNECT and handshake, outside the figures.
			if err := postHook(cs[i], target); err != nil {
				b.Fatal(err)
			}
		}
		// One token per b.Loop iteration; a worker takes one when it
		// is free, so at most `clients` requests are in flight.
		work := make(chan struct{})
		lats := make([][]time.Duration, clients)
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		for i := range cs {
			wg.Go(func() {
				for range work {
					if failed.Load() != nil {
						continue // take the tokens, so the loop ends
					}
					start := time.Now()
					if err := postHook(cs[i], target); err != nil {
						failed.CompareAndSwap(nil, &err)
						continue
					}
					lats[i] = append(lats[i], time.Since(start))
				}
			})
		}
		for b.Loop() {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hooks/s")
		reportLatency(b, slices.Concat(lats...))
		if n := tp.listener.accepts.Load(); n != int32(clients) {
			// Go's Transport also drops a connection, and dials anew,
			// when its writer goroutine has not reported the request
			// written within 50 ms of the response (net/http's
			// maxWriteWaitBeforeConnReuse), which a machine loaded
			// enough can make it miss: one more connection, without the
			// proxy having closed any.
			b.Fatalf("%d connections for %d clients: connections were not reused (by the proxy, or by a client's Transport that missed net/http's 50 ms wait for its own write)", n, clients)
		}
	})
}

// BenchmarkPythonStyleRequest sends requests the way urllib3 does on a
// reused connection (Nagle on, headers and body in separate writes) and
// reports the latency: without TCP_QUICKACK re-armed on every read, each
// one waits ~40 ms for the proxy's delayed ACK before the body leaves.
func BenchmarkPythonStyleRequest(b *testing.B) {
	head := func(target, host string) string {
		return "POST " + target + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\n" +
			"Content-Length: " + strconv.Itoa(len(hookBody)) + "\r\n\r\n"
	}
	run := func(b *testing.B, c *rawConn, head string, want int) {
		var lat []time.Duration
		for b.Loop() {
			start := time.Now()
			resp, _ := c.send(b, http.MethodPost, head, hookBody)
			lat = append(lat, time.Since(start))
			if resp.StatusCode != want {
				b.Fatalf("status %d, want %d", resp.StatusCode, want)
			}
		}
		reportLatency(b, lat)
	}
	nagle := func(c net.Conn) { _ = c.(*net.TCPConn).SetNoDelay(false) } // as urllib3 does for proxy sockets

	b.Run("proxy request", func(b *testing.B) {
		tp := startProxy(b, Options{Store: &fakeStore{}, Logger: infoLogger()})
		c := dialRaw(b, tp.Addr)
		_ = c.SetDeadline(time.Time{}) // a benchmark runs as long as it needs
		nagle(c.Conn)
		run(b, c, head("http://receiver.example/t0", "receiver.example"), http.StatusAccepted)
	})
	b.Run("connect tunnel", func(b *testing.B) {
		rc := newReceiver(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, false)
		u, _ := url.Parse(rc.URL)
		tp := startProxy(b, Options{Store: &fakeStore{}, Logger: infoLogger()})
		c := connect(b, tp.Addr, u.Host)
		_ = c.SetDeadline(time.Time{})
		nagle(c.Conn)
		run(b, c, head("/t0", u.Host), http.StatusOK)
	})
	b.Run("intercepted tunnel", func(b *testing.B) {
		ca := newCA(b)
		tp := startProxy(b, Options{Store: &fakeStore{}, TLSConfig: ca.TLSConfig, Logger: infoLogger()})
		raw := connect(b, tp.Addr, "hooks.example:443")
		_ = raw.SetDeadline(time.Time{})
		nagle(raw.Conn)
		tc := trusting(ca.Certificate())
		tc.ServerName = "hooks.example"
		conn := tls.Client(raw.Conn, tc)
		run(b, &rawConn{Conn: conn, br: bufio.NewReader(conn)}, head("/t0", "hooks.example"), http.StatusAccepted)
	})
}
