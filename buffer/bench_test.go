package buffer

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPut measures the durable capture path (commit + sync, with
// group commit) from 1 and 16 concurrent writers.
func BenchmarkPut(b *testing.B) {
	body := []byte(`{"hook":{"id":1,"event":"book.added"},"data":{"pk":1,"fields":{"title":"` + strings.Repeat("x", 300) + `"}}}`)
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openStore(b, b.TempDir(), Options{GCInterval: -1})
			var mu sync.Mutex
			var lat []time.Duration
			var seq atomic.Int64
			start := time.Now()
			putMany := func(next func() bool) {
				var mine []time.Duration
				for next() {
					t0 := time.Now()
					h := &Hook{Target: fmt.Sprintf("http://t%d.test/", seq.Add(1)%4), Body: body}
					if err := s.Put(context.Background(), h); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}
			if writers == 1 {
				putMany(b.Loop)
			} else {
				// RunParallel runs parallelism x GOMAXPROCS goroutines.
				b.SetParallelism(writers / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) { putMany(pb.Next) })
			}
			b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "hooks/s")
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
			}
		})
	}
}

// BenchmarkClaimAck measures claiming and acknowledging a batch of 100.
func BenchmarkClaimAck(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{GCInterval: -1})
	const url = "http://a.test/"
	fill := func() {
		for range 100 {
			put(b, s, url, `{"hook":{"id":1},"data":{"pk":1}}`)
		}
	}
	fill()
	id := statusOf(b, s, url).ID
	for b.Loop() {
		batch, err := s.Claim(id, 100, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Ack(id, batch.ID, NextClaim{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		fill()
		b.StartTimer()
	}
	b.ReportMetric(100, "hooks/batch")
}
