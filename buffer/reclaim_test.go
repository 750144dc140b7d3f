package buffer

import (
	"context"
	"fmt"
	"net/http"
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

// largeHooks opens a store as fullStore does and puts 20 MiB of 100 KiB
// hooks for url (which Badger keeps in its value log).
func largeHooks(t *testing.T, url string) (s *Store, short func()) {
	t.Helper()
	body := `{"b":"` + strings.Repeat("x", 100<<10) + `"}`
	return fullStore(t, url, 200, Hook{Target: url, Method: "POST", Body: []byte(body)})
}

// fullStore opens a store whose reserve is 1 MiB, on a file system
// whose free space follows what the store's files take, with value log
// files of 1 MiB, and puts n copies of h. short makes the disk a byte
// short of the reserve, with at least 16 MiB of value log.
func fullStore(t *testing.T, url string, n int, h Hook) (s *Store, short func()) {
	t.Helper()
	origFile, origDead := valueLogFileSize, maxDeadLetterValue
	t.Cleanup(func() { valueLogFileSize, maxDeadLetterValue = origFile, origDead })
	// Badger refuses a value larger than a value log file.
	valueLogFileSize, maxDeadLetterValue = 1<<20, 512<<10

	const reserve = 1 << 20
	// The file system holds the store and capacity bytes more.
	var (
		store    atomic.Pointer[Store]
		capacity atomic.Int64
	)
	capacity.Store(1 << 40)
	s = openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		GCInterval:   -1,
		FreeBytes: func(string) (int64, error) {
			st := store.Load()
			if st == nil {
				return capacity.Load(), nil
			}
			lsm, vlog := st.DiskUsage()
			return capacity.Load() - lsm - vlog, nil
		},
	})
	store.Store(s)
	// From 8 writers so that they share commits.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range n / 8 {
				h := h
				if err := s.Put(context.Background(), &h); err != nil {
					t.Errorf("put %d/%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return s, func() {
		t.Helper()
		lsm, vlog := s.DiskUsage()
		if vlog < 16<<20 {
			t.Fatalf("%d bytes of value log, want at least 16 MiB", vlog)
		}
		// Free space a byte short of the reserve (MinFreeBytes plus
		// the tables' size).
		capacity.Store(lsm + vlog + reserve + s.lsmBytes() - 1)
		if err := s.Check(); err == nil {
			t.Fatalf("check with the free space a byte short of the reserve: nil, want the disk short")
		}
	}
}

// TestShortDiskGivesBackTheValueLog: when the disk is short of its
// reserve and the value log (bodies of valueThreshold and more, and dead
// letters that large) is mostly hooks already delivered or dead letters
// purged, the store gives its space back, so that captures resume. The
// deletes sat in Badger's memtable, no compaction counted them, and the
// value log's GC found nothing to collect: with captures refused nothing
// else writes, and the store stayed short with nothing pending.
func TestShortDiskGivesBackTheValueLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, s *Store, url string)
	}{
		{"delivered", func(t *testing.T, s *Store, url string) { deliverAll(t, s, url) }},
		{"dead letters purged", func(t *testing.T, s *Store, url string) {
			giveUpBatch(t, s, url)
			if ids, err := s.PurgeDeadLetters(DeadLetterFilter{}); err != nil || len(ids) == 0 {
				t.Fatalf("purge: %v, %v", ids, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const url = "http://a.test/"
			s, short := largeHooks(t, url)
			tc.end(t, s, url)
			short()
			waitReclaimed(t, s)
			put(t, s, url, `{"after":true}`)
		})
	}
}

// waitReclaimed waits until the disk is no longer short and the reclaim
// has ended (Badger's value log GC reads the memtable's newest version
// without a lock, which the race detector reports against a write made
// meanwhile).
func waitReclaimed(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for ; s.Check() != nil || s.reclaiming.Load(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			_, vlog := s.DiskUsage()
			t.Fatalf("the store is still short or reclaiming 20s later: %v (%d bytes of value log, %d pending)",
				s.Check(), vlog, s.Stats().PendingBytes)
		}
	}
}

// TestShortDiskKeepsDeadLetters: a disk short of its reserve because of
// dead letters starts no compaction: they stay, so it would give nothing
// back, and would rewrite every table once a minute.
func TestShortDiskKeepsDeadLetters(t *testing.T) {
	const url = "http://a.test/"
	s, short := largeHooks(t, url)
	giveUpBatch(t, s, url)
	if _, err := s.DeadLetterTotals(); err != nil { // counted, as after every start
		t.Fatal(err)
	}
	// The hooks' records, which the dead letter copied, are given back.
	short()
	waitReclaimed(t, s)

	s.lastReclaim.Store(0) // as a minute later
	short()
	if s.lastReclaim.Load() != 0 {
		t.Fatal("a compaction started on a store of dead letters")
	}
}

// TestShortDiskReclaimsAfterDeletesOnly: a reclaim gives back what was
// deleted since the last one, so none runs again before hooks are
// delivered or dead letters purged. Dead letters of small hooks take
// several times their body bytes (their headers, their records in
// base64), and a store of them passed for one mostly deleted: every
// table was compacted once a minute on a disk already short, for
// nothing.
func TestShortDiskReclaimsAfterDeletesOnly(t *testing.T) {
	const url = "http://a.test/"
	// 5,000 hooks of 100 bytes with 4 KiB of headers (a token, say), of
	// which 4,000 are given up: over 20 MiB of dead letters, for 400 KB
	// of bodies.
	h := Hook{Target: url, Method: "POST", Body: []byte(`{"b":"` + strings.Repeat("x", 92) + `"}`),
		Header: http.Header{"Authorization": {"Bearer " + strings.Repeat("t", 4<<10)}}}
	s, short := fullStore(t, url, 5000, h)
	id := statusOf(t, s, url).ID
	for range 4 {
		b, err := s.Claim(id, 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GiveUp(id, b.ID, "status", Failure{At: time.Now(), Status: 400}, NextClaim{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DeadLetterTotals(); err != nil { // counted, as after every start
		t.Fatal(err)
	}
	// The records of the hooks given up, which the dead letters copied,
	// are given back.
	reclaimed := func(what string) {
		t.Helper()
		if s.lastReclaim.Load() == 0 {
			t.Fatalf("no reclaim %s", what)
		}
		waitReclaimed(t, s)
		s.lastReclaim.Store(0) // as a minute later
	}
	short()
	reclaimed("of the records of the hooks given up")

	short()
	if s.lastReclaim.Load() != 0 {
		t.Fatal("a compaction started with nothing deleted since the last one")
	}

	deliverAll(t, s, url)
	short()
	reclaimed("after hooks were delivered")

	if _, err := s.PurgeDeadLetters(DeadLetterFilter{}); err != nil {
		t.Fatal(err)
	}
	short()
	reclaimed("after the dead letters were purged")
	put(t, s, url, `{"after":true}`)
}
