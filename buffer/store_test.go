package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func openStore(tb testing.TB, dir string, opts Options) *Store {
	tb.Helper()
	opts.Dir = dir
	s, err := Open(opts)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func put(tb testing.TB, s *Store, target, body string) *Hook {
	tb.Helper()
	h := &Hook{Target: target, Method: "POST", Body: []byte(body), Header: http.Header{"Content-Type": {"application/json"}}}
	if err := s.Put(context.Background(), h); err != nil {
		tb.Fatalf("put: %v", err)
	}
	return h
}

func bodies(b *Batch) []string {
	var out []string
	for _, h := range b.Hooks {
		out = append(out, string(h.Body))
	}
	return out
}

// deliverAll claims everything pending for url and acknowledges it, as
// a delivery would; it returns the target's id.
func deliverAll(tb testing.TB, s *Store, url string) TargetID {
	tb.Helper()
	id := statusOf(tb, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		tb.Fatalf("claim: %v", err)
	}
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		tb.Fatalf("ack: %v", err)
	}
	return id
}

// firstOfTwo puts hooks {"n":0} and {"n":1} for url and claims a batch
// of the first alone; it returns the target's id and that batch.
func firstOfTwo(tb testing.TB, s *Store, url string) (TargetID, *Batch) {
	tb.Helper()
	put(tb, s, url, `{"n":0}`)
	put(tb, s, url, `{"n":1}`)
	id := statusOf(tb, s, url).ID
	b, err := s.Claim(id, 1, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return id, b
}

func statusOf(tb testing.TB, s *Store, url string) TargetStatus {
	tb.Helper()
	ts, err := s.Targets()
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range ts {
		if t.URL == url {
			return t
		}
	}
	tb.Fatalf("no target %s", url)
	return TargetStatus{}
}

func TestPutClaimAckInOrder(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const a, b = "http://a.test/hook", "http://b.test/hook"
	var ids []string
	for i := range 5 {
		ids = append(ids, put(t, s, a, fmt.Sprintf(`{"n":%d}`, i)).ID)
		put(t, s, b, fmt.Sprintf(`{"b":%d}`, i))
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids not sortable in arrival order: %v", ids)
	}
	if len(ids[0]) != 26 {
		t.Errorf("id %q: want 26 characters", ids[0])
	}
	st := statusOf(t, s, a)
	if st.Pending != 5 || st.PendingBytes != 5*int64(len(`{"n":0}`)) {
		t.Fatalf("status = %+v, want 5 pending", st)
	}

	batch, err := s.Claim(st.ID, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(batch), []string{`{"n":0}`, `{"n":1}`, `{"n":2}`}; !slices.Equal(got, want) {
		t.Fatalf("batch = %v, want %v", got, want)
	}
	if batch.Hooks[0].Header.Get("Content-Type") != "application/json" || batch.Hooks[0].Method != "POST" {
		t.Errorf("hook lost its method or headers: %+v", batch.Hooks[0])
	}
	again, err := s.Claim(st.ID, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != batch.ID || !slices.Equal(bodies(again), bodies(batch)) {
		t.Fatalf("second claim = %s %v, want the in-flight batch %s", again.ID, bodies(again), batch.ID)
	}
	next, err := s.Ack(st.ID, batch.ID, NextClaim{})
	if err != nil {
		t.Fatal(err)
	}
	if next.Pending != 2 || next.InFlight != nil {
		t.Fatalf("after ack = %+v, want 2 pending and nothing in flight", next)
	}
	if _, err := s.Ack(st.ID, batch.ID, NextClaim{}); !errors.Is(err, ErrBatchMismatch) {
		t.Fatalf("second ack: err = %v, want ErrBatchMismatch", err)
	}
	rest, err := s.Claim(st.ID, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(rest), []string{`{"n":3}`, `{"n":4}`}; !slices.Equal(got, want) {
		t.Fatalf("rest = %v, want %v", got, want)
	}
	if rest.ID == batch.ID {
		t.Fatal("a new batch reused the old batch id")
	}
	if _, err := s.Ack(st.ID, rest.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(st.ID, 10, 0); !errors.Is(err, ErrNoHooks) {
		t.Fatalf("claim of empty target: err = %v, want ErrNoHooks", err)
	}
	if got := statusOf(t, s, b).Pending; got != 5 {
		t.Fatalf("other target pending = %d, want 5", got)
	}
}

// TestAckClaimsNext: an ack that asks for it claims the next full batch
// in the same write; the claim is durable (same id after a restart), is
// bounded like Claim, and is not made when too few hooks remain.
func TestAckClaimsNext(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const url = "http://a.test/"
	for i := range 9 {
		put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
	}
	id := statusOf(t, s, url).ID
	first, err := s.Claim(id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	full := NextClaim{MinHooks: 3, MaxHooks: 3}
	st, err := s.Ack(id, first.ID, full)
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight == nil || st.InFlight.Size != 3 || st.Pending != 6 {
		t.Fatalf("after ack = %+v (in flight %+v), want 6 pending and the next 3 in flight", st, st.InFlight)
	}
	second := st.InFlight.ID
	if second == first.ID {
		t.Fatal("the next batch reused the acknowledged batch's id")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	b, err := s.Claim(id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(b), []string{`{"n":3}`, `{"n":4}`, `{"n":5}`}; b.ID != second || !slices.Equal(got, want) {
		t.Fatalf("after restart claim = %s %v, want %s %v", b.ID, got, second, want)
	}
	if got := statusOf(t, s, url).Oldest; got.IsZero() || !got.Equal(b.Hooks[0].Received) {
		t.Errorf("oldest = %v, want the first in-flight hook's arrival %v", got, b.Hooks[0].Received)
	}

	// Bounded by bytes: each body is 7 bytes, so 15 bytes hold two.
	st, err = s.Ack(id, b.ID, NextClaim{MinHooks: 3, MaxHooks: 3, MaxBytes: 15})
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight == nil || st.InFlight.Size != 2 {
		t.Fatalf("byte-bounded next batch = %+v, want 2 hooks", st.InFlight)
	}
	// One hook remains after this one: below MinHooks, nothing is claimed.
	st, err = s.Ack(id, st.InFlight.ID, full)
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight != nil || st.Pending != 1 {
		t.Fatalf("after the last full batch = %+v, want 1 pending and nothing in flight", st)
	}
	last, err := s.Claim(id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(last), []string{`{"n":8}`}; !slices.Equal(got, want) {
		t.Fatalf("remainder = %v, want %v", got, want)
	}
}

func TestAckClaimsNothingForGoneTarget(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://a.test/"
	for i := range 4 {
		put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
	}
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetGone(id, true); err != nil {
		t.Fatal(err)
	}
	st, err := s.Ack(id, b.ID, NextClaim{MinHooks: 1, MaxHooks: 2})
	if err != nil {
		t.Fatal(err)
	}
	if st.InFlight != nil {
		t.Fatalf("a gone target got a next batch: %+v", st.InFlight)
	}
}

func TestClaimMaxBytes(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://a.test/"
	for range 4 {
		put(t, s, url, `{"x":"0123456789"}`) // 18 bytes
	}
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 40)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != 2 || len(b.Hooks) != 2 || b.Bytes != 36 || !b.Cut {
		t.Fatalf("batch of %d hooks, %d bytes, cut %v; want 2 hooks, 36 bytes, cut", len(b.Hooks), b.Bytes, b.Cut)
	}
	// The next claim made by Ack is cut the same way.
	st, err := s.Ack(id, b.ID, NextClaim{MinHooks: 1, MaxBytes: 20})
	if err != nil || st.InFlight == nil {
		t.Fatalf("ack: %v, next batch %+v", err, st.InFlight)
	}
	if b, err = s.Claim(id, 0, 0); err != nil || b.Size != 1 || !b.Cut {
		t.Fatalf("next batch: %v, %d hooks, cut %v; want 1 hook, cut", err, b.Size, b.Cut)
	}
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	// A single hook larger than the limit still goes, alone; the last
	// one is not cut, nothing is behind it.
	b, err = s.Claim(id, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Hooks) != 1 || b.Cut {
		t.Fatalf("batch of %d hooks, cut %v; want 1, not cut", len(b.Hooks), b.Cut)
	}
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	// Stopped by its count, not by the bytes: not cut. (The target had
	// nothing left and was forgotten: the URL has a new one.)
	put(t, s, url, `{"x":"0123456789"}`)
	put(t, s, url, `{"x":"0123456789"}`)
	id = statusOf(t, s, url).ID
	if b, err = s.Claim(id, 1, 40); err != nil || b.Size != 1 || b.Cut {
		t.Fatalf("batch stopped by its count: %v, %d hooks, cut %v", err, b.Size, b.Cut)
	}
}

func TestRestartKeepsQueueAndInFlightBatch(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://a.test/hook"
	var want []string
	for i := range 6 {
		h := put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
		want = append(want, h.ID)
	}
	id := statusOf(t, s, url).ID
	first, err := s.Claim(id, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(id, first.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	inflight, err := s.Claim(id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if inflight.Resumed {
		t.Fatal("a batch claimed in this run is marked resumed")
	}
	failAt := time.Unix(1700000000, 0)
	if err := s.RecordAttempt(id, inflight.ID, Failure{At: failAt, Status: 503, Error: "HTTP 503", Next: failAt.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), &Hook{Target: url}); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: err = %v, want ErrClosed", err)
	}

	s = openStore(t, dir, Options{})
	st := statusOf(t, s, url)
	if st.ID != id || st.Pending != 4 || st.InFlight == nil || st.InFlight.ID != inflight.ID {
		t.Fatalf("after restart: %+v, want target %d with 4 pending and batch %s in flight", st, id, inflight.ID)
	}
	if st.InFlight.Attempts != 1 || st.InFlight.LastStatus != 503 || !st.InFlight.NextAttempt.Equal(failAt.Add(time.Minute)) {
		t.Fatalf("in-flight attempts lost: %+v", st.InFlight)
	}
	if !st.Oldest.Equal(inflight.Hooks[0].Received) {
		t.Errorf("oldest = %v, want %v", st.Oldest, inflight.Hooks[0].Received)
	}
	again, err := s.Claim(id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range again.Hooks {
		got = append(got, h.ID)
	}
	if again.ID != inflight.ID || !slices.Equal(got, want[2:5]) {
		t.Fatalf("claim after restart = %s %v, want %s %v", again.ID, got, inflight.ID, want[2:5])
	}
	// It may have gone out unrecorded before the restart: it says so.
	if !again.Resumed || !st.InFlight.Resumed {
		t.Errorf("batch in flight at the restart: Resumed %v (claim) %v (status), want true", again.Resumed, st.InFlight.Resumed)
	}
	// New hooks after a restart still come after the old ones.
	put(t, s, url, `{"n":6}`)
	if _, err := s.Ack(id, again.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	last, err := s.Claim(id, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(last), []string{`{"n":5}`, `{"n":6}`}; !slices.Equal(got, want) {
		t.Fatalf("tail = %v, want %v", got, want)
	}
	if last.Resumed {
		t.Error("a batch claimed after the restart is marked resumed")
	}
}

// TestRestartRebuildsEveryTarget: a restart rebuilds every target's
// count, bytes, oldest arrival and in-flight batch, and deletes hook keys
// a crash left below a target's head.
func TestRestartRebuildsEveryTarget(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{"http://a.test/", "http://b.test/", "http://c.test/"}
	for i := range 4 {
		for j, u := range urls {
			put(t, s, u, fmt.Sprintf(`{"t":%d,"n":%d}`, j, i))
		}
	}
	a, b := statusOf(t, s, urls[0]).ID, statusOf(t, s, urls[1]).ID
	// a: one batch delivered, then a crash's leftover below its head.
	done, err := s.Claim(a, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := done.Hooks[0]
	leftover := queueKey{target: a, seq: mustSeq(t, h), received: h.Received, size: h.Size()}.bytes()
	if _, err := s.Ack(a, done.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(leftover, []byte("stale")) }); err != nil {
		t.Fatal(err)
	}
	// b: a batch in flight.
	flying, err := s.Claim(b, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]TargetStatus{}
	for _, u := range urls {
		before[u] = statusOf(t, s, u)
	}
	stats := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	for _, u := range urls {
		got, want := statusOf(t, s, u), before[u]
		// By the wall clock: the arrival read back carries a monotonic
		// reading of the new process's own (see onClock).
		if got.Pending != want.Pending || got.PendingBytes != want.PendingBytes || !got.Oldest.Round(0).Equal(want.Oldest.Round(0)) {
			t.Errorf("%s after restart: %d pending, %d bytes, oldest %v; want %d, %d, %v",
				u, got.Pending, got.PendingBytes, got.Oldest, want.Pending, want.PendingBytes, want.Oldest)
		}
	}
	if st := statusOf(t, s, urls[1]); st.InFlight == nil || st.InFlight.ID != flying.ID {
		t.Errorf("in-flight batch of b after restart = %+v, want %s", st.InFlight, flying.ID)
	}
	if got := s.Stats(); got.PendingHooks != stats.PendingHooks || got.PendingBytes != stats.PendingBytes {
		t.Errorf("stats after restart = %+v, want %+v", got, stats)
	}
	err = s.db.View(func(txn *badger.Txn) error { _, err := txn.Get(leftover); return err })
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Errorf("leftover key below the head: err = %v, want it deleted", err)
	}
}

// TestRestartForgetsIdleTargets: a restart forgets the targets with
// nothing pending, no batch in flight and no gone mark, in memory and on
// disk; a capture for such a URL makes its target again, and a dead
// letter of a forgotten target is still there to replay.
func TestRestartForgetsIdleTargets(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const done, dead, gone, flying, pending = "http://done.test/", "http://dead.test/", "http://gone.test/", "http://flying.test/", "http://pending.test/"
	for _, u := range []string{done, dead, gone, flying, pending} {
		put(t, s, u, `{"n":0}`)
	}
	// The URL index earlier versions wrote with each target.
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, u := range []string{done, dead} {
			if err := txn.Set(urlKey(u), []byte{0}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	doneID := deliverAll(t, s, done)
	deadID, letter := giveUpBatch(t, s, dead)
	goneID := statusOf(t, s, gone).ID
	b, err := s.Claim(goneID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DiscardGone(goneID, b.ID); err != nil {
		t.Fatal(err)
	}
	flyingID := statusOf(t, s, flying).ID
	if _, err := s.Claim(flyingID, 0, 0); err != nil {
		t.Fatal(err)
	}
	pendingID := statusOf(t, s, pending).ID
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	for _, id := range []TargetID{doneID, deadID} {
		if _, err := s.Target(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("target %d after restart: err = %v, want ErrNotFound", id, err)
		}
	}
	for _, id := range []TargetID{goneID, flyingID, pendingID} {
		if _, err := s.Target(id); err != nil {
			t.Errorf("target %d after restart: %v", id, err)
		}
	}
	err = s.db.View(func(txn *badger.Txn) error {
		for _, k := range [][]byte{targetKey(doneID), urlKey(done), targetKey(deadID), urlKey(dead)} {
			if _, err := txn.Get(k); !errors.Is(err, badger.ErrKeyNotFound) {
				t.Errorf("key %q after restart: err = %v, want it deleted", k, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The forgotten URLs take hooks again, under new targets.
	put(t, s, done, `{"n":1}`)
	again := statusOf(t, s, done)
	if again.ID == doneID || again.Pending != 1 {
		t.Errorf("%s captured again: id %d (was %d), %d pending; want a new id and 1 pending", done, again.ID, doneID, again.Pending)
	}
	dl, err := s.GetDeadLetter(letter)
	if err != nil {
		t.Fatal(err)
	}
	if dl.TargetID != deadID || dl.Target != dead {
		t.Errorf("dead letter of a forgotten target: target %d %s, want %d %s", dl.TargetID, dl.Target, deadID, dead)
	}
	if _, n, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{letter}}); err != nil || n != 1 {
		t.Fatalf("replay: %d hooks, %v", n, err)
	}
	if st := statusOf(t, s, dead); st.Pending != 1 || st.ID == deadID {
		t.Errorf("%s after replay: id %d, %d pending; want a new id and 1 pending", dead, st.ID, st.Pending)
	}
}

// TestRunningStoreForgetsIdleTargets: a target is forgotten, in memory
// and then on disk, once its last batch ends with nothing left, not only
// at the next start: with a URL per subscriber (often with a query of
// its own), a sidecar that runs for weeks would otherwise keep every URL
// ever posted to. A capture for a forgotten URL makes its target again;
// the records of the forgotten ones are gone by the next start.
func TestRunningStoreForgetsIdleTargets(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const n = 500
	url := func(i int) string { return fmt.Sprintf("http://a.test/hooks/%d?event=book.added", i) }
	var ids []TargetID
	for i := range n {
		put(t, s, url(i), `{"n":0}`)
		ids = append(ids, deliverAll(t, s, url(i)))
	}
	const pending, gone = "http://pending.test/", "http://gone.test/"
	put(t, s, pending, `{"n":0}`)
	put(t, s, gone, `{"n":0}`)
	goneID := statusOf(t, s, gone).ID
	b, err := s.Claim(goneID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DiscardGone(goneID, b.ID); err != nil {
		t.Fatal(err)
	}

	s.mu.Lock()
	inMemory, byURL := len(s.targets), len(s.byURL)
	s.mu.Unlock()
	if inMemory != 2 || byURL != 2 {
		t.Errorf("after %d targets delivered: %d targets and %d URLs in memory, want 2 (pending and gone)", n, inMemory, byURL)
	}
	if _, err := s.Target(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("delivered target: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Claim(ids[0], 0, 0); !errors.Is(err, ErrNoHooks) {
		t.Errorf("claim of a forgotten target: err = %v, want ErrNoHooks", err)
	}
	put(t, s, url(0), `{"n":1}`)
	if st := statusOf(t, s, url(0)); st.ID == ids[0] || st.Pending != 1 {
		t.Errorf("%s captured again: id %d (was %d), %d pending; want a new id and 1 pending", url(0), st.ID, ids[0], st.Pending)
	}
	// Clearing the gone mark of a target with nothing left forgets it.
	if _, err := s.SetGone(goneID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Target(goneID); !errors.Is(err, ErrNotFound) {
		t.Errorf("target whose gone mark was cleared: err = %v, want ErrNotFound", err)
	}
	deliverAll(t, s, pending)

	records := countKeys(t, s, prefixTarget)
	// Each batch's end deleted the records forgotten before it: left are
	// the record of the new target of url(0) and that of the target
	// forgotten last.
	if records != 2 {
		t.Errorf("%d target records on disk, want 2", records)
	}
}

// TestForgetWaitsForCaptureInProgress: a target whose last batch ends
// while a capture for its URL is being committed under its id is not
// forgotten: its record would be deleted, and the capture, acknowledged,
// would not be seen by the next start.
func TestForgetWaitsForCaptureInProgress(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://a.test/"
	put(t, s, url, `{"n":0}`)
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	acked := false
	restore := wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		if !acked {
			// The capture's commit: the batch ends first (its own
			// commit comes back here).
			acked = true
			if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
				t.Errorf("ack: %v", err)
			}
		}
		return commit(txn)
	})
	h := put(t, s, url, `{"n":1}`)
	restore()
	if st, err := s.Target(id); err != nil || st.Pending != 1 {
		t.Fatalf("target after the capture: %+v, %v; want it with 1 pending", st, err)
	}
	// Another batch's end, which deletes the records of forgotten targets.
	put(t, s, "http://b.test/", `{"n":0}`)
	deliverAll(t, s, "http://b.test/")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	b, err = s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatalf("after a restart: %v; want hook %s pending", err, h.ID)
	}
	if got := bodies(b); len(got) != 1 || got[0] != `{"n":1}` {
		t.Errorf("after a restart: batch %v, want the hook captured while the batch ended", got)
	}
}

// TestShortDiskKeepsIdleTargets: forgetting idle targets is a write, and
// waits for a start that finds the disk above its reserve.
func TestShortDiskKeepsIdleTargets(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://done.test/"
	put(t, s, url, `{"n":0}`)
	id := deliverAll(t, s, url)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{MinFreeBytes: 1 << 20, FreeBytes: func(string) (int64, error) { return 1 << 19, nil }})
	if _, err := s.Target(id); err != nil {
		t.Errorf("idle target on a short disk after restart: %v, want it kept", err)
	}
}

// TestForgetFailingPartWayLosesNoHook: forgetting idle targets deletes
// their records in a write batch, which Badger commits in several
// transactions when it is large, so a failure can leave some records
// deleted. A target whose record is gone must not take hooks under its
// old id: with no record, a restart does not see them, and acknowledged
// hooks would never be delivered. A record the failure left behind must
// not take the URL from the target made after it.
func TestForgetFailingPartWayLosesNoHook(t *testing.T) {
	for _, tt := range []struct {
		name    string
		deleted int // of the keys to delete, how many the failure deletes
	}{
		{"record deleted", 1},
		{"record left", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			const url = "http://a.test/"
			put(t, s, url, `{"n":0}`)
			deliverAll(t, s, url)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			orig := forgetKeys
			t.Cleanup(func() { forgetKeys = orig })
			forgetKeys = func(s *Store, keys [][]byte) error {
				if err := s.deleteKeys(keys[:tt.deleted]); err != nil {
					return err
				}
				return errors.New("injected: the write batch's second transaction failed")
			}
			s, err = Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			forgetKeys = orig
			h := put(t, s, url, `{"n":1}`)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = openStore(t, dir, Options{})
			if st := s.Stats(); st.PendingHooks != 1 {
				t.Fatalf("after a restart: %d hooks pending, want the acknowledged hook %s", st.PendingHooks, h.ID)
			}
			put(t, s, url, `{"n":2}`)
			ts, err := s.Targets()
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != 1 || ts[0].Pending != 2 {
				t.Fatalf("targets after another capture: %+v, want one target with both hooks", ts)
			}
			b, err := s.Claim(ts[0].ID, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := bodies(b); len(got) != 2 || got[0] != `{"n":1}` || got[1] != `{"n":2}` {
				t.Fatalf("batch after a restart: %v, want {\"n\":1} then {\"n\":2}", got)
			}
		})
	}
}

// heavyHook is a hook whose headers outweigh its body, as an app that
// sends a bearer token with every hook makes them: 512 of them pass the
// ~1.2 MB Badger takes in one transaction here.
func heavyHook() *Hook {
	return &Hook{Target: "http://a.test/", Method: "POST", Body: bytes.Repeat([]byte("b"), 1500),
		Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + strings.Repeat("x", 1000)}}}
}

// TestGroupCommitCountsHeaders: a group is bounded by what its hooks
// store, headers included, so a burst of heavy hooks commits (in more
// groups) instead of failing every capture of an oversized group.
func TestGroupCommitCountsHeaders(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	// The first commit's notification holds the leader, so the next
	// Puts all queue for one group.
	paused, release := holdFirstCommit(s)
	first := make(chan error, 1)
	go func() { first <- s.Put(context.Background(), heavyHook()) }()
	recv(t, paused, "the first commit")
	errs := make(chan error, groupMaxHooks)
	for range groupMaxHooks {
		go func() { errs <- s.Put(context.Background(), heavyHook()) }()
	}
	waitFor(t, "every Put queued", func() bool { return s.queued() == groupMaxHooks })
	close(release)
	if err := recv(t, first, "the first Put"); err != nil {
		t.Fatal(err)
	}
	failed, last := 0, error(nil)
	for range groupMaxHooks {
		if err := recv(t, errs, "a queued Put"); err != nil {
			failed, last = failed+1, err
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d captures failed: %v", failed, groupMaxHooks, last)
	}
	if st := statusOf(t, s, "http://a.test/"); st.Pending != groupMaxHooks+1 {
		t.Errorf("%d hooks pending, want %d", st.Pending, groupMaxHooks+1)
	}
}

// TestGroupCommitForgetsCommittedPuts: once a group is committed, the
// commit queue keeps no reference to its requests, which hold the hooks'
// bodies: after a burst of large captures their memory must be free to
// collect (it stayed in the queue's array, 470 MB after 40 captures of
// 16 MB, until as many captures queued again).
func TestGroupCommitForgetsCommittedPuts(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	paused, release := holdFirstCommit(s)
	first := make(chan error, 1)
	go func() { first <- s.Put(context.Background(), heavyHook()) }()
	recv(t, paused, "the first commit")
	const burst = 8
	errs := make(chan error, burst)
	for range burst {
		go func() { errs <- s.Put(context.Background(), heavyHook()) }()
	}
	waitFor(t, "every Put queued", func() bool { return s.queued() == burst })
	close(release)
	if err := recv(t, first, "the first Put"); err != nil {
		t.Fatal(err)
	}
	for range burst {
		if err := recv(t, errs, "a queued Put"); err != nil {
			t.Fatal(err)
		}
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	for i, r := range s.queue[:cap(s.queue)] {
		if r != nil {
			t.Fatalf("slot %d of the commit queue (length %d) still holds a committed request of %d hooks", i, len(s.queue), len(r.hooks))
		}
	}
}

// TestCommitGroupSplitsWhenTooBig: a group Badger refuses as too big for
// one transaction is committed in halves, in order, not failed.
func TestCommitGroupSplitsWhenTooBig(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var group []*putRequest
	for range 2 * groupMaxHooks {
		h := heavyHook()
		h.Received = time.Now()
		group = append(group, &putRequest{hooks: []*Hook{h}, size: h.Size(), done: make(chan error, 1)})
	}
	s.commitGroup(group) // bypasses takeGroup's bounds
	for i, r := range group {
		if err := recv(t, r.done, "a request of the group"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	st := statusOf(t, s, "http://a.test/")
	b, err := s.Claim(st.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range b.Hooks {
		if h.ID != group[i].hooks[0].ID {
			t.Fatalf("hook %d is %s, want %s: the halves were committed out of order", i, h.ID, group[i].hooks[0].ID)
		}
	}
	if len(b.Hooks) != len(group) {
		t.Errorf("%d hooks stored, want %d", len(b.Hooks), len(group))
	}
}

func TestGroupCommitConcurrentPuts(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const writers, each = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				h := &Hook{Target: fmt.Sprintf("http://w%d.test/", w%4), Body: fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i)}
				if err := s.Put(context.Background(), h); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ts, err := s.Targets()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	total := 0
	for _, st := range ts {
		b, err := s.Claim(st.ID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Each writer's hooks must come out in the order it put them.
		last := map[int]int{}
		for _, h := range b.Hooks {
			if seen[h.ID] {
				t.Fatalf("duplicate id %s", h.ID)
			}
			seen[h.ID] = true
			var w, i int
			if _, err := fmt.Sscanf(string(h.Body), `{"w":%d,"i":%d}`, &w, &i); err != nil {
				t.Fatal(err)
			}
			if prev, ok := last[w]; ok && i != prev+1 {
				t.Fatalf("writer %d: hook %d after %d", w, i, prev)
			}
			last[w] = i
		}
		total += len(b.Hooks)
	}
	if total != writers*each {
		t.Fatalf("claimed %d hooks, want %d", total, writers*each)
	}
}

func TestQuota(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{MaxPendingBytes: 20})
	const url = "http://a.test/"
	put(t, s, url, `{"n":"12345678"}`) // 16 bytes
	err := s.Put(context.Background(), &Hook{Target: url, Body: []byte(`{"n":1}`)})
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("put past quota: err = %v, want ErrQuota", err)
	}
	put(t, s, url, `{}`) // 2 bytes still fit
	deliverAll(t, s, url)
	put(t, s, url, `{"n":1}`) // accepted again once delivered
	if got := s.Stats().PendingBytes; got != 7 {
		t.Fatalf("pending bytes = %d, want 7", got)
	}
}

// TestDiskFullRefusesCaptures: a capture is refused with ErrDiskFull,
// and the store reported unhealthy, while the file system
// has less than MinFreeBytes free, rather than written into a full disk
// (where Badger's memory-mapped write kills the process with SIGBUS);
// and that both recover once space is back.
func TestDiskFullRefusesCaptures(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 20)
	dir := t.TempDir()
	s := openStore(t, dir, Options{
		MinFreeBytes: 64 << 20,
		FreeBytes: func(d string) (int64, error) {
			if d != dir {
				t.Errorf("free space asked of %q, want the data directory %q", d, dir)
			}
			return free.Load(), nil
		},
	})
	const url = "http://a.test/"
	put(t, s, url, `{"n":0}`)

	free.Store(10 << 20)
	err := s.Put(context.Background(), &Hook{Target: url, Body: []byte(`{"n":1}`)})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put on a nearly full disk: err = %v, want ErrDiskFull", err)
	}
	if errors.Is(err, ErrQuota) {
		t.Fatalf("put on a nearly full disk: err = %v is ErrQuota (a 507), want a store error", err)
	}
	if err := s.Check(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("check on a nearly full disk = %v, want ErrDiskFull", err)
	}
	if got, want := s.Stats().PendingHooks, 1; got != want {
		t.Fatalf("pending hooks = %d, want %d (the refused hook is not kept)", got, want)
	}
	// The sender's writes go on: they give the space back.
	deliverAll(t, s, url)

	// Space comes back: the store is healthy again before any capture
	// comes to say so, and captures are taken.
	free.Store(100 << 20)
	if err := s.Check(); err != nil {
		t.Fatalf("check once space is back = %v, want nil", err)
	}
	put(t, s, url, `{"n":2}`)
}

// TestDiskFullCountsTheCapture: a capture that would itself take the
// free space below MinFreeBytes is refused, while a smaller one that
// leaves the reserve whole is taken: the check is of the space left once
// the hook is written, not before.
// TestDiskFullKeepsGiveUpsInFlight: a dead letter is written anew, so
// on a disk short of its reserve a give-up is refused as a capture is:
// the batch stays in flight and nothing is dead-lettered (discarding,
// which writes nothing new, goes on). With space back, it goes through.
func TestDiskFullKeepsGiveUpsInFlight(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 20)
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: 64 << 20,
		FreeBytes:    func(string) (int64, error) { return free.Load(), nil },
	})
	const url = "http://a.test/"
	put(t, s, url, `{"n":0}`)
	put(t, s, url, `{"n":1}`)
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 1, 0)
	if err != nil || b == nil {
		t.Fatalf("claim: %v, %v", b, err)
	}

	free.Store(64<<20 + 100)
	f := Failure{At: time.Now(), Status: 400, Error: "HTTP 400 Bad Request"}
	if _, err := s.GiveUp(id, b.ID, "status", f, NextClaim{}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("give up on a short disk: err = %v, want ErrDiskFull", err)
	}
	if dl, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(dl) != 0 {
		t.Fatalf("dead letters after a refused give-up: %d, %v; want none", len(dl), err)
	}
	again, err := s.Claim(id, 1, 0)
	if err != nil || again == nil || again.ID != b.ID {
		t.Fatalf("claim after a refused give-up: %+v, %v; want batch %s still in flight", again, err, b.ID)
	}

	free.Store(100 << 20)
	if _, err := s.GiveUp(id, b.ID, "status", f, NextClaim{}); err != nil {
		t.Fatalf("give up with space back: %v", err)
	}
	if dl, err := s.ListDeadLetters(DeadLetterFilter{}, false); err != nil || len(dl) != 1 || dl[0].ID != b.ID {
		t.Fatalf("dead letters: %+v, %v; want batch %s", dl, err, b.ID)
	}

	free.Store(64<<20 + 100)
	b2, err := s.Claim(id, 1, 0)
	if err != nil || b2 == nil {
		t.Fatalf("claim the second: %v, %v", b2, err)
	}
	if _, err := s.Discard(id, b2.ID, NextClaim{}); err != nil {
		t.Fatalf("discard on a short disk: %v, want it to go through", err)
	}
}

func TestDiskFullCountsTheCapture(t *testing.T) {
	const reserve = 64 << 10
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return reserve + 16<<10, nil },
	})
	const url = "http://a.test/"
	big := &Hook{Target: url, Body: []byte(`"` + strings.Repeat("x", 32<<10) + `"`)}
	if err := s.Put(context.Background(), big); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put of 32 KiB with 16 KiB above the reserve: err = %v, want ErrDiskFull", err)
	}
	put(t, s, url, `{"n":1}`)
	if got, want := s.Stats().PendingHooks, 1; got != want {
		t.Fatalf("pending hooks = %d, want %d", got, want)
	}
}

// TestDiskFullCountsTheHeaders: what a capture takes on disk is its
// whole record, headers included, not the body the quota counts: a hook
// of a few bytes of body and 32 KiB of headers does not fit in 16 KiB
// above the reserve.
func TestDiskFullCountsTheHeaders(t *testing.T) {
	const reserve = 64 << 10
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return reserve + 16<<10, nil },
	})
	h := &Hook{Target: "http://a.test/", Method: "POST", Body: []byte(`{}`),
		Header: http.Header{"Authorization": {"Bearer " + strings.Repeat("t", 32<<10)}}}
	if err := s.Put(context.Background(), h); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put of 32 KiB of headers with 16 KiB above the reserve: err = %v, want ErrDiskFull", err)
	}
}

// TestDiskFullCountsTheGroup: the requests of one group commit are
// admitted in order while their records, together, leave the reserve
// whole: with room for exactly two of three equal captures, the first
// two are taken and the third is refused.
func TestDiskFullCountsTheGroup(t *testing.T) {
	const reserve = 64 << 10
	var free atomic.Int64
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return free.Load(), nil },
	})
	var group []*putRequest
	for i := range 3 {
		h := &Hook{Target: "http://a.test/", Method: "POST", Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), Received: time.Now()}
		group = append(group, &putRequest{hooks: []*Hook{h}, size: h.Size(), done: make(chan error, 1)})
	}
	d := group[0].diskSize()
	free.Store(reserve + 2*d) // the two first leave exactly the reserve
	s.commitGroup(group)      // one group, as takeGroup would make it
	for i, r := range group {
		err := recv(t, r.done, "a request of the group")
		if i < 2 && err != nil {
			t.Errorf("request %d, which fits: %v", i, err)
		}
		if i == 2 && !errors.Is(err, ErrDiskFull) {
			t.Errorf("request 2, past the room the two first left: err = %v, want ErrDiskFull", err)
		}
	}
	if got := s.Stats().PendingHooks; got != 2 {
		t.Errorf("pending hooks = %d, want 2", got)
	}
}

// TestDiskFullAtTheReserve: the store is unhealthy while the free space
// is below MinFreeBytes, and healthy again once it is back to exactly
// MinFreeBytes.
func TestDiskFullAtTheReserve(t *testing.T) {
	const reserve = 1 << 20
	var free atomic.Int64
	free.Store(reserve - 1)
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes:    func(string) (int64, error) { return free.Load(), nil },
	})
	if err := s.Put(context.Background(), &Hook{Target: "http://a.test/", Body: []byte(`{}`)}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("put one byte short of the reserve: err = %v, want ErrDiskFull", err)
	}
	if err := s.Check(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("check one byte short of the reserve = %v, want ErrDiskFull", err)
	}
	free.Store(reserve)
	if err := s.Check(); err != nil {
		t.Fatalf("check with exactly the reserve free = %v, want nil", err)
	}
}

// TestFreeSpaceUnchecked: no reserve, or a free space that cannot be
// read, does not stop captures: the check guards against a crash, it is
// not itself to refuse writes.
func TestFreeSpaceUnchecked(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"no reserve", Options{FreeBytes: func(string) (int64, error) { return 0, nil }}},
		{"unreadable", Options{MinFreeBytes: 1 << 20, FreeBytes: func(string) (int64, error) { return 0, errors.New("statfs: no") }}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), tt.opts)
			put(t, s, "http://a.test/", `{"n":1}`)
			if err := s.Check(); err != nil {
				t.Fatalf("check = %v, want nil", err)
			}
		})
	}
}

// TestReplayWritesOnlyTheHooks: each chunk of a replay records how many
// hooks have gone back (in the same transaction, so an interrupted replay
// neither loses nor repeats hooks) instead of writing the rest of the
// dead letter again, which made a replay quadratic in the letter's size
// and took disk space as large as the rest: with room for one chunk's
// hooks above the reserve, a replay of more goes through. Interrupted by
// a short disk after its first chunk, it leaves the rest as the dead
// letter, and a second replay puts that back after the first chunk.
func TestReplayWritesOnlyTheHooks(t *testing.T) {
	const reserve = 1 << 20
	var free, calls, shortAfter atomic.Int64
	free.Store(1 << 30)
	s := openStore(t, t.TempDir(), Options{
		MinFreeBytes: reserve,
		FreeBytes: func(string) (int64, error) {
			if n := shortAfter.Load(); n > 0 && calls.Add(1) > n {
				return reserve, nil
			}
			return free.Load(), nil
		},
		LSMBytes: func() int64 { return 0 },
	})
	const url, n = "http://a.test/", replayChunk + 72
	_, letter := deadLetterOf(t, s, url, n, 1<<10)
	dl, err := s.GetDeadLetter(letter)
	if err != nil {
		t.Fatal(err)
	}
	var chunk int64
	for i := range replayChunk {
		chunk += int64(recordLen(&dl.Hooks[i]) + queueKeyLength)
	}
	free.Store(reserve + chunk + 1<<10)
	if _, got, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{letter}}); err != nil || got != n {
		t.Fatalf("replay with room for one chunk's hooks: %d hooks back, %v; want %d", got, err, n)
	}
	if _, err := s.GetDeadLetter(letter); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dead letter after its replay: %v, want ErrNotFound", err)
	}
	deliverAll(t, s, url)

	// Interrupted: the disk is short from the second chunk on.
	free.Store(1 << 30)
	_, letter = deadLetterOf(t, s, url, n, 1<<10)
	calls.Store(0)
	shortAfter.Store(1)
	_, got, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{letter}})
	if !errors.Is(err, ErrDiskFull) || got != replayChunk {
		t.Fatalf("replay on a disk short after one chunk: %d hooks back, %v; want %d and ErrDiskFull", got, err, replayChunk)
	}
	left, err := s.GetDeadLetter(letter)
	if err != nil || len(left.Hooks) != n-replayChunk {
		t.Fatalf("dead letter after an interrupted replay: %d hooks, %v; want %d", len(left.Hooks), err, n-replayChunk)
	}
	shortAfter.Store(0)
	if _, got, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{letter}}); err != nil || got != n-replayChunk {
		t.Fatalf("replay of the rest: %d hooks back, %v; want %d", got, err, n-replayChunk)
	}
	// The dead letter's target had nothing left and was forgotten: the
	// hooks are back in the URL's target.
	id := statusOf(t, s, url).ID
	if st, err := s.Target(id); err != nil || st.Pending != n {
		t.Fatalf("target after both replays: %+v, %v; want %d pending", st, err, n)
	}
	b, err := s.Claim(id, n, 0)
	if err != nil || len(b.Hooks) != n {
		t.Fatalf("claim: %v, %v", b, err)
	}
	for i, h := range b.Hooks {
		if want := fmt.Sprintf(`"n":%d,`, i); !strings.Contains(string(h.Body), want) {
			t.Fatalf("hook %d of the replayed letter: %.40s, want %s (original order)", i, h.Body, want)
		}
	}
}

func TestDeadLettersGiveUpReplayPurge(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const a, b = "http://a.test/", "http://b.test/"
	for i := range 3 {
		put(t, s, a, fmt.Sprintf(`{"n":%d}`, i))
	}
	put(t, s, b, `{"b":0}`)
	ida, idb := statusOf(t, s, a).ID, statusOf(t, s, b).ID
	ba, err := s.Claim(ida, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 0).UTC()
	if err := s.RecordAttempt(ida, ba.ID, Failure{At: at, Status: 500, Error: "HTTP 500"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.GiveUp(ida, ba.ID, "retries-exhausted", Failure{At: at.Add(time.Second), Status: 502, Error: "HTTP 502 Bad Gateway"}, NextClaim{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 {
		t.Fatalf("pending after give-up = %d, want 1 (fresh hooks are kept)", st.Pending)
	}
	bb, err := s.Claim(idb, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GiveUp(idb, bb.ID, "status", Failure{At: at, Status: 404, Error: "HTTP 404 Not Found"}, NextClaim{}); err != nil {
		t.Fatal(err)
	}

	all, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d dead letters, want 2", len(all))
	}
	d, err := s.GetDeadLetter(ba.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Reason != "retries-exhausted" || d.Detail != "HTTP 502 Bad Gateway" || d.Attempts != 2 || d.LastStatus != 502 ||
		!d.FirstAttempt.Equal(at) || !d.LastAttempt.Equal(at.Add(time.Second)) || d.Target != a || d.Size != 2 {
		t.Fatalf("dead letter = %+v", d)
	}
	if got, want := []string{string(d.Hooks[0].Body), string(d.Hooks[1].Body)}, []string{`{"n":0}`, `{"n":1}`}; !slices.Equal(got, want) {
		t.Fatalf("dead hooks = %v, want %v", got, want)
	}
	byReason, _ := s.ListDeadLetters(DeadLetterFilter{Reason: "status"}, false)
	if len(byReason) != 1 || byReason[0].ID != bb.ID || byReason[0].Hooks != nil || byReason[0].Size != 1 {
		t.Fatalf("filter by reason = %+v", byReason)
	}

	// Replay by target: the hooks go back at the tail, in their order, with their ids.
	_, n, err := s.ReplayDeadLetters(DeadLetterFilter{Target: a})
	if err != nil || n != 2 {
		t.Fatalf("replay = %d, %v; want 2", n, err)
	}
	q, err := s.Claim(ida, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bodies(q), []string{`{"n":2}`, `{"n":0}`, `{"n":1}`}; !slices.Equal(got, want) {
		t.Fatalf("queue after replay = %v, want %v", got, want)
	}
	if q.Hooks[1].ID != d.Hooks[0].ID {
		t.Fatalf("replayed hook id = %s, want %s", q.Hooks[1].ID, d.Hooks[0].ID)
	}
	if _, err := s.GetDeadLetter(ba.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replayed dead letter still there: %v", err)
	}
	purged, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{bb.ID}})
	if err != nil || len(purged) != 1 || purged[0] != bb.ID {
		t.Fatalf("purge = %v, %v; want [%s]", purged, err, bb.ID)
	}
	if rest, _ := s.ListDeadLetters(DeadLetterFilter{}, false); len(rest) != 0 {
		t.Fatalf("%d dead letters after purge, want 0", len(rest))
	}
}

func TestReplayLargeDeadLetterInChunks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://a.test/"
	const n = 3*replayChunk + 5
	deadLetterOf(t, s, url, n, 0)
	_, got, err := s.ReplayDeadLetters(DeadLetterFilter{})
	if err != nil || got != n {
		t.Fatalf("replay = %d, %v; want %d", got, err, n)
	}
	q, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range q.Hooks {
		if want := fmt.Sprintf(`{"n":%d}`, i); string(h.Body) != want {
			t.Fatalf("hook %d = %s, want %s", i, h.Body, want)
		}
	}
	if len(q.Hooks) != n {
		t.Fatalf("%d hooks back, want %d", len(q.Hooks), n)
	}
}

// deadLetterOf fills url with n hooks ({"n":i}, with a pad of that many
// bytes when pad > 0), claims them as one batch and gives it up: one dead
// letter of n hooks (or several parts, when that is too large).
func deadLetterOf(t *testing.T, s *Store, url string, n, pad int) (TargetID, string) {
	t.Helper()
	for i := range n {
		if pad > 0 {
			put(t, s, url, fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", pad)))
		} else {
			put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
		}
	}
	return giveUpBatch(t, s, url)
}

// giveUpBatch claims url's pending hooks as one batch and gives it up
// (a 400): it returns the target's id and the dead letter's id.
func giveUpBatch(t testing.TB, s *Store, url string) (TargetID, string) {
	t.Helper()
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GiveUp(id, b.ID, "status", Failure{At: time.Now(), Status: 400}, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	return id, b.ID
}

// holdFirstCommit makes the group-commit leader wait, right after the
// next commit, until release is closed; paused is closed when it does.
func holdFirstCommit(s *Store) (paused, release chan struct{}) {
	paused, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.SetNotify(func(TargetStatus) { once.Do(func() { close(paused); <-release }) })
	return paused, release
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// queued reports how many requests wait for the group commit.
func (s *Store) queued() int {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	return len(s.queue)
}

// TestConcurrentReplaysReplayOnce: a second replay of a dead letter that
// starts while the first is between chunks waits for it, and then finds
// nothing to replay, instead of putting the same hooks back twice.
func TestConcurrentReplaysReplayOnce(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const n = replayChunk + 72
	_, dl := deadLetterOf(t, s, "http://a.test/", n, 0)
	paused, release := holdFirstCommit(s)
	var nA, nB int
	var errA, errB error
	doneA, doneB := make(chan struct{}), make(chan struct{})
	go func() { _, nA, errA = s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{dl}}); close(doneA) }()
	recv(t, paused, "A's first chunk") // A committed its first chunk
	go func() { _, nB, errB = s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{dl}}); close(doneB) }()
	// B either waits its turn or (were replays not serialised) has read
	// the dead letter and queued its hooks behind A's commit.
	waitFor(t, "the second replay waits or queues", func() bool { return s.deadWaiting.Load() == 1 || s.queued() == 1 })
	close(release)
	recv(t, doneA, "replay A")
	recv(t, doneB, "replay B")
	if errA != nil || errB != nil {
		t.Fatalf("replays: %v, %v", errA, errB)
	}
	st := statusOf(t, s, "http://a.test/")
	if st.Pending != n || nA+nB != n {
		t.Fatalf("replays returned %d + %d, %d hooks pending; want %d in all", nA, nB, st.Pending, n)
	}
}

// TestPurgeDuringReplay: a purge that comes while a replay is between
// chunks waits for it; the purged dead letter does not come back, and no
// hook is put back after the purge answered.
func TestPurgeDuringReplay(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const n = 2*replayChunk + 44
	_, dl := deadLetterOf(t, s, "http://a.test/", n, 0)
	paused, release := holdFirstCommit(s)
	doneReplay := make(chan struct{})
	go func() { _, _, _ = s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{dl}}); close(doneReplay) }()
	recv(t, paused, "the replay's first chunk") // the replay committed its first chunk
	purged := make(chan int, 1)
	go func() {
		ids, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{dl}})
		if err != nil {
			t.Error(err)
		}
		purged <- len(ids)
	}()
	var np int
	waitFor(t, "the purge waits or ends", func() bool {
		select {
		case np = <-purged:
			purged <- np
			return true
		default:
			return s.deadWaiting.Load() == 1
		}
	})
	close(release)
	recv(t, doneReplay, "the replay")
	np = recv(t, purged, "the purge")
	left, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	st := statusOf(t, s, "http://a.test/")
	if len(left) != 0 {
		t.Errorf("purge returned %d, and dead letter %s is there after it, with %d hooks", np, left[0].ID, left[0].Size)
	}
	// Either order is fine, as long as it is one order: the replay
	// whole and then nothing to purge.
	if np != 0 || st.Pending != n {
		t.Errorf("purge returned %d with %d hooks put back; want the replay whole (%d) and nothing purged", np, st.Pending, n)
	}
}

// TestGiveUpOfLargeBatch: a batch whose dead letter would pass the largest
// value stored in one piece is still given up, as several dead letters,
// listed in order and replayed whole. The real bound is Badger's 64 MiB
// value-log file, which 50 hooks of 1 MiB pass; the test lowers the bound
// to 64 KiB rather than write that much.
func TestGiveUpOfLargeBatch(t *testing.T) {
	orig := maxDeadLetterValue
	maxDeadLetterValue = 64 << 10
	t.Cleanup(func() { maxDeadLetterValue = orig })
	s := openStore(t, t.TempDir(), Options{GCInterval: -1})
	const url, n = "http://a.test/", 50
	_, batch := deadLetterOf(t, s, url, n, 4<<10)
	dead, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	// 50 x ~5.5 KiB encoded: four parts of at most 64 KiB, or five.
	if len(dead) < 4 || dead[0].ID != batch {
		t.Fatalf("%d dead letters, first %q; want 4 or more, the first with the batch id %s", len(dead), dead[0].ID, batch)
	}
	total := 0
	for i, d := range dead {
		if i > 0 && d.ID != fmt.Sprintf("%s-%04d", batch, i+1) {
			t.Errorf("part %d has id %s", i+1, d.ID)
		}
		if d.Reason != "status" || d.Attempts != 1 || d.Target != url {
			t.Errorf("part %s: reason %q, %d attempts, target %s", d.ID, d.Reason, d.Attempts, d.Target)
		}
		total += d.Size
	}
	if total != n {
		t.Fatalf("parts hold %d hooks, want %d", total, n)
	}
	if _, got, err := s.ReplayDeadLetters(DeadLetterFilter{}); err != nil || got != n {
		t.Fatalf("replay = %d, %v; want %d", got, err, n)
	}
	q, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range q.Hooks {
		if want := fmt.Sprintf(`{"n":%d,`, i); !strings.HasPrefix(string(h.Body), want) {
			t.Fatalf("hook %d after replay starts %.12s, want %s", i, h.Body, want)
		}
	}
	if len(q.Hooks) != n {
		t.Fatalf("%d hooks back, want %d", len(q.Hooks), n)
	}
}

func TestOpenDeletesKeysBelowHead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://a.test/"
	id, b := firstOfTwo(t, s, url)
	// Simulate a crash between the acknowledgement and the clean-up of its
	// keys: advance the head without deleting the hook.
	rec := fmt.Appendf(nil, `{"url":%q,"head":%d}`, url, mustSeq(t, b.Hooks[0])+1)
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(flightKey(id)); err != nil {
			return err
		}
		return txn.Set(targetKey(id), rec)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	st := statusOf(t, s, url)
	if st.Pending != 1 || st.InFlight != nil {
		t.Fatalf("after restart = %+v, want 1 pending", st)
	}
	keys := 0
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(id)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys++
		}
		return nil
	})
	if keys != 1 {
		t.Fatalf("%d queue keys, want 1 (the acknowledged one deleted)", keys)
	}
}

// mustSeq finds the queue sequence of a hook by scanning for its id.
func mustSeq(tb testing.TB, h Hook) uint64 {
	tb.Helper()
	// The id carries the low 48 bits of the sequence in its last 10 characters.
	var v uint64
	for _, c := range h.ID[16:] {
		i := -1
		for j := range crockford {
			if crockford[j] == byte(c) {
				i = j
			}
		}
		v = v<<5 | uint64(i)
	}
	return v & (1<<48 - 1)
}

func TestNotifyAfterCommit(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var mu sync.Mutex
	var got []TargetStatus
	s.SetNotify(func(st TargetStatus) {
		mu.Lock()
		got = append(got, st)
		mu.Unlock()
	})
	put(t, s, "http://a.test/", `{}`)
	put(t, s, "http://a.test/", `{}`)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[1].Pending != 2 || got[1].Version <= got[0].Version || got[0].Oldest.IsZero() {
		t.Fatalf("notifications = %+v", got)
	}
}

func TestGoneMarkSurvivesRestartAndAck(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const url = "http://gone.test/"
	id, b := firstOfTwo(t, s, url)
	if st, err := s.SetGone(id, true); err != nil || !st.Gone {
		t.Fatalf("SetGone = %+v, %v", st, err)
	}
	if _, err := s.Ack(id, b.ID, NextClaim{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	st := statusOf(t, s, url)
	if !st.Gone || st.Pending != 1 {
		t.Fatalf("after restart = %+v, want gone with 1 pending", st)
	}
	if st, err = s.SetGone(id, false); err != nil || st.Gone {
		t.Fatalf("clear = %+v, %v", st, err)
	}
	if _, err := s.SetGone(999, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown target: err = %v, want ErrNotFound", err)
	}
}

// TestGiveUpGone: GiveUpGone and DiscardGone end the batch that got a
// 410 and mark its target gone in one write; the target claims nothing
// more, also after a restart.
func TestGiveUpGone(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run(fmt.Sprintf("discard=%t", discard), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			const url = "http://gone.test/"
			id, b := firstOfTwo(t, s, url)
			var (
				st  TargetStatus
				err error
			)
			if discard {
				st, err = s.DiscardGone(id, b.ID)
			} else {
				st, err = s.GiveUpGone(id, b.ID, "gone", Failure{At: time.Now(), Status: 410, Error: "HTTP 410 Gone"})
			}
			if err != nil || !st.Gone || st.Pending != 1 || st.InFlight != nil {
				t.Fatalf("= %+v, %v; want gone, 1 pending, nothing in flight", st, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir, Options{})
			if st := statusOf(t, s, url); !st.Gone || st.Pending != 1 {
				t.Fatalf("after restart = %+v, want gone with 1 pending", st)
			}
			dls, err := s.ListDeadLetters(DeadLetterFilter{}, true)
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if discard {
				want = 0
			}
			if len(dls) != want {
				t.Fatalf("%d dead letters, want %d", len(dls), want)
			}
			if want == 1 && (dls[0].LastStatus != 410 || dls[0].Attempts != 1 || string(dls[0].Hooks[0].Body) != `{"n":0}`) {
				t.Errorf("dead letter %+v, want the batch with its 410", dls[0])
			}
		})
	}
}

func TestCheck(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "http://a.test/", `{}`)
	if err := s.Check(); err != nil {
		t.Fatalf("check of a working store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); !errors.Is(err, ErrClosed) {
		t.Fatalf("check after close: %v, want ErrClosed", err)
	}
}

// TestOpenAfterCrashDuringMemtableCreation: Badger creates a memtable file
// before writing its header; a crash in between left an empty .mem file
// that made Open fail (seen after SIGKILL in the crash test).
func TestOpenAfterCrashDuringMemtableCreation(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h := put(t, s, "http://a.test/", `{"n":1}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	b, err := s.Claim(statusOf(t, s, "http://a.test/").ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Hooks) != 1 || b.Hooks[0].ID != h.ID {
		t.Fatalf("after reopen: %+v, want the hook %s", b.Hooks, h.ID)
	}
}

// TestBadgerCacheAdviceIsDebug: Badger's minute-by-minute advice that a
// cache is too small is the normal state of hookproxy's small caches and
// goes out at debug level; its other warnings stay warnings.
func TestBadgerCacheAdviceIsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), vlogSyncFailures: new(atomic.Uint64)}
	l.Warningf("%s might be too small. Metrics: %s\n", "Block cache", "hit: 7 miss: 16628")
	l.Warningf("Cache life expectancy (in seconds): %+v\n", "histogram")
	l.Warningf("Value log GC: %v\n", "something odd")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"level=DEBUG", "level=DEBUG", "level=WARN"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %s, want %s", i+1, lines[i], want)
		}
	}
}

// TestReplayLargeHooks: a dead letter of hooks that each fill ~10 KiB of
// the transaction is replayed in chunks a transaction can hold.
func TestReplayLargeHooks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url, n = "http://a.test/", replayChunk + 10
	deadLetterOf(t, s, url, n, 10<<10)
	if _, got, err := s.ReplayDeadLetters(DeadLetterFilter{}); err != nil || got != n {
		t.Fatalf("replay = %d, %v; want %d", got, err, n)
	}
	if st := statusOf(t, s, url); st.Pending != n {
		t.Fatalf("%d hooks back, want %d", st.Pending, n)
	}
}

// TestOpenSyncsWrites: the store acknowledges nothing before it is on
// disk. A process crash cannot show a missing sync (the page cache
// survives it), so the option that makes every commit wait for the
// sync is checked where Badger keeps it.
func TestOpenSyncsWrites(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	if o := s.db.Opts(); !o.SyncWrites || o.InMemory {
		t.Fatalf("Badger opened with SyncWrites=%v InMemory=%v: commits would be acknowledged before the disk has them", o.SyncWrites, o.InMemory)
	}
}

// recv receives from ch, failing the test when nothing comes within 10 s.
func recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
