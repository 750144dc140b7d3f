package buffer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestShortDiskCompactsDeliveredHooks: when the disk is short of its
// reserve and Badger's tables are mostly hooks already delivered, the
// store compacts them away, so the reserve, which grows with the tables,
// shrinks again and the store takes captures without waiting for writes
// that would make Badger compact.
func TestShortDiskCompactsDeliveredHooks(t *testing.T) {
	const reserve = 1 << 20
	var free atomic.Int64
	free.Store(1 << 30)
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return free.Load(), nil },
	})
	// 24 MiB of 60 KiB hooks, which Badger keeps in its tables (under
	// the value threshold), from 8 writers so that they share commits.
	body := `{"b":"` + strings.Repeat("x", 60<<10) + `"}`
	const url = "http://a.test/"
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				h := &Hook{Target: url, Method: "POST", Body: []byte(body)}
				if err := s.Put(context.Background(), h); err != nil {
					t.Errorf("put %d/%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	deliverAll(t, s, url)
	free.Store(reserve + 8<<20)
	if lsm := s.lsmBytes(); lsm < 16<<20 {
		t.Fatalf("%d bytes of tables after 24 MiB of hooks, want at least 16 MiB", lsm)
	}
	if err := s.Check(); err == nil {
		t.Fatalf("check with %d bytes of tables and 8 MiB above the fixed reserve: want the disk short", s.lsmBytes())
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := s.Check()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store is still short 20s later: %v (%s of tables)", err, fmt.Sprint(s.lsmBytes()))
		}
	}
}

// TestCapturesWaitForAMemtableFlush: while flushMemtable drops its
// prefix, Badger fails every write with ErrBlockedWrites. Captures wait
// for it instead of failing: on a short disk the reclaim runs while the
// app goes on posting, and a failed capture is one the app is refused
// (and Check reported it until the next capture succeeded).
func TestCapturesWaitForAMemtableFlush(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const flushes, writers, puts = 20, 4, 50
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		defer close(flushed)
		for i := 0; i < flushes; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.flushMemtable(); err != nil {
				flushed <- err
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers*puts)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < puts; i++ {
				h := &Hook{Target: fmt.Sprintf("http://t%d.example/", w), Method: "POST", Body: []byte(`{}`)}
				if err := s.Put(context.Background(), h); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-flushed; err != nil {
		t.Fatalf("flush: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Errorf("a capture during memtable flushes failed: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check after the flushes: %v", err)
	}
}
