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

// BenchmarkCaptureDuringReplay measures what a large dead-letter replay
// does to captures. A store holding deadHooks hooks in dead letters of
// perLetter hooks takes captures at a steady rate (captureRate a second,
// each timed from when it was due, so that a stall counts for every
// capture it held up): first for a while with nothing else (base-*),
// then while ReplayDeadLetters puts every dead letter back (replay-*),
// then, for comparison, while other writers capture as many hooks again
// as fast as they can (bulk-*), about the rate of a replay. It reports
// the captures' p50, p99 and largest latency in each phase, how long the
// replay took and how long the bulk captures took. Run it with
// -benchtime=1x and -count=N: one run takes about half a minute.
func BenchmarkCaptureDuringReplay(b *testing.B) {
	const (
		deadHooks   = 100_000
		perLetter   = 100
		captureRate = 200
		baseFor     = 5 * time.Second
	)
	body := []byte(`{"hook":{"id":1,"event":"book.added"},"data":{"pk":1,"fields":{"title":"` + strings.Repeat("x", 300) + `"}}}`)
	for b.Loop() {
		b.StopTimer()
		s := openStore(b, b.TempDir(), Options{GCInterval: -1})
		putConcurrently(b, s, deadHooks, "http://dead%d.test/", body)
		giveUpAll(b, s, perLetter)
		b.StartTimer()

		base := captureAtRate(b, s, captureRate, body, func() { time.Sleep(baseFor) })
		var replayTook, bulkTook time.Duration
		replay := captureAtRate(b, s, captureRate, body, func() {
			t0 := time.Now()
			_, n, err := s.ReplayDeadLetters(DeadLetterFilter{})
			replayTook = time.Since(t0)
			if err != nil || n != deadHooks {
				b.Errorf("replay = %d, %v; want %d", n, err, deadHooks)
			}
		})
		bulk := captureAtRate(b, s, captureRate, body, func() {
			t0 := time.Now()
			putConcurrently(b, s, deadHooks, "http://bulk%d.test/", body)
			bulkTook = time.Since(t0)
		})
		reportLatency(b, "base-", base)
		reportLatency(b, "replay-", replay)
		reportLatency(b, "bulk-", bulk)
		b.ReportMetric(replayTook.Seconds(), "replay-s")
		b.ReportMetric(bulkTook.Seconds(), "bulk-s")
		b.StopTimer()
		_ = s.Close()
		b.StartTimer()
	}
}

// putConcurrently puts n hooks with body from 128 writers, to four
// targets named by format (with %d).
func putConcurrently(tb testing.TB, s *Store, n int, format string, body []byte) {
	tb.Helper()
	const writers = 128
	var wg sync.WaitGroup
	var next atomic.Int64
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				h := &Hook{Target: fmt.Sprintf(format, i%4), Method: "POST", Body: body}
				if err := s.Put(context.Background(), h); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// giveUpAll gives up every pending hook in batches of perLetter: a dead
// letter each.
func giveUpAll(tb testing.TB, s *Store, perLetter int) {
	tb.Helper()
	ts, err := s.Targets()
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range ts {
		for pending := t.Pending; pending > 0; pending -= perLetter {
			batch, err := s.Claim(t.ID, perLetter, 0)
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := s.GiveUp(t.ID, batch.ID, "status", Failure{At: time.Now(), Status: 400}, NextClaim{}); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// captureAtRate puts a hook rate times a second, each in its own
// goroutine, while during runs, and returns their latencies, each from
// when the hook was due (so that a stall counts for every capture it
// held up).
func captureAtRate(tb testing.TB, s *Store, rate int, body []byte, during func()) []time.Duration {
	tb.Helper()
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	stop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			select {
			case <-stop:
				return
			case <-time.After(time.Until(due)):
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := &Hook{Target: fmt.Sprintf("http://live%d.test/", i%4), Method: "POST", Body: body}
				if err := s.Put(context.Background(), h); err != nil {
					tb.Error(err)
					return
				}
				d := time.Since(due)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
	}()
	during()
	close(stop)
	<-loopDone
	wg.Wait()
	return lat
}

// reportLatency reports the p50, p99 and largest of lat, in
// microseconds, with the given prefix.
func reportLatency(b *testing.B, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), prefix+"p50-us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), prefix+"p99-us")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), prefix+"max-us")
}

// BenchmarkDeadLetterPage: one page (of one dead letter, in the middle)
// of 50 dead letters of 100 hooks of 4 KiB, against decoding them all,
// as listing a page did before pages skipped the hooks of the others.
func BenchmarkDeadLetterPage(b *testing.B) {
	s := openStore(b, b.TempDir(), Options{GCInterval: -1})
	pad := strings.Repeat("x", 4<<10)
	for i := range 50 {
		url := fmt.Sprintf("http://t%d.test/", i)
		for j := range 100 {
			put(b, s, url, fmt.Sprintf(`{"n":%d,"pad":"%s"}`, j, pad))
		}
		giveUpBatch(b, s, url)
	}
	b.Run("page", func(b *testing.B) {
		for b.Loop() {
			if page, total, err := s.DeadLetterPage(DeadLetterFilter{}, 25, 1); err != nil || len(page) != 1 || total != 50 {
				b.Fatalf("page: %d of %d, %v", len(page), total, err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			if all, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(all) != 50 {
				b.Fatalf("list: %d, %v", len(all), err)
			}
		}
	})
}
