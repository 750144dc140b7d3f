package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkCapture measures a hook POST through the proxy on one kept-alive
// loopback connection, from the client's first byte to the 202, with an
// in-memory store: the proxy's own cost per hook, without the disk.
func BenchmarkCapture(b *testing.B) {
	// Logging at Info to io.Discard keeps the cost of the per-hook log line.
	tp := startProxy(b, Options{Store: &fakeStore{}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	client := tp.client(b)
	const target = "http://receiver.example/hooks/t0"
	lat := make([]time.Duration, 0, 1024)
	for b.Loop() {
		start := time.Now()
		req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(hookBody))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("status %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hooks/s")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
