package buffer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// errSyncFailed is what failAfterApply's commits return.
var errSyncFailed = errors.New("injected: sync failed after the writes were applied")

// failAfterApply makes the next n commits of captures and of batch ends
// fail as a failed sync makes them fail: Badger has applied the writes
// (they are visible, and a restart without a power loss finds them in
// the write-ahead log) but returns an error.
func failAfterApply(t *testing.T, n int64) {
	t.Helper()
	var left atomic.Int64
	left.Store(n)
	wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		if err := commit(txn); err != nil {
			return err
		}
		if left.Add(-1) >= 0 {
			return errSyncFailed
		}
		return nil
	})
}

// wrapCommits sends every commit of the store through wrap, which calls
// commit to make it, until restore is called or the test ends.
func wrapCommits(t testing.TB, wrap func(txn *badger.Txn, commit func(*badger.Txn) error) error) (restore func()) {
	orig := commitTxn
	restore = func() { commitTxn = orig }
	t.Cleanup(restore)
	commitTxn = func(txn *badger.Txn) error { return wrap(txn, orig) }
	return restore
}

// TestFailedCaptureIsNotKept: a capture whose commit fails after Badger
// applied it (a failed sync) is not delivered: the app was told it was
// not kept (and with ON_STORE_ERROR=forward it went to the receiver
// directly). Nor does it leave the target's count off, which left the
// next capture of the target unclaimed.
func TestFailedCaptureIsNotKept(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const url = "http://r.example/a"
	put(t, s, url, `{"n":0}`)

	failAfterApply(t, 1)
	h := &Hook{Target: url, Method: "POST", Body: []byte(`{"n":1}`)}
	if err := s.Put(t.Context(), h); !errors.Is(err, errSyncFailed) {
		t.Fatalf("put: %v, want the sync's error", err)
	}
	if err := s.Check(); err == nil {
		t.Fatal("Check after a failed commit: nil, want the error")
	}
	if got := statusOf(t, s, url).Pending; got != 1 {
		t.Fatalf("pending after the failed capture: %d, want 1", got)
	}
	deliverAll(t, s, url)

	// The next capture is claimed.
	put(t, s, url, `{"n":2}`)
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatalf("claim the capture after: %v", err)
	}
	if got := bodies(b); len(got) != 1 || got[0] != `{"n":2}` {
		t.Fatalf("batch after the failed capture: %v, want only {\"n\":2}", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	b, err = s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(b); len(got) != 1 || got[0] != `{"n":2}` {
		t.Fatalf("batch after a restart: %v, want only {\"n\":2}", got)
	}
}

// TestFailedCaptureOfNewTargetIsNotKept: the same for the first capture
// of a URL, whose target record the failed commit also wrote.
func TestFailedCaptureOfNewTargetIsNotKept(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const url = "http://r.example/new"
	failAfterApply(t, 1)
	h := &Hook{Target: url, Method: "POST", Body: []byte(`{"n":1}`)}
	if err := s.Put(t.Context(), h); !errors.Is(err, errSyncFailed) {
		t.Fatalf("put: %v, want the sync's error", err)
	}
	put(t, s, url, `{"n":2}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	ts, err := s.Targets()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range ts {
		b, err := s.Claim(st.ID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bodies(b)...)
	}
	if len(got) != 1 || got[0] != `{"n":2}` {
		t.Fatalf("pending after a restart: %v, want only {\"n\":2}", got)
	}
}

// TestFailedReplayChunkIsKept: a replay whose commit fails after Badger
// applied it keeps what it applied (the hooks and the count of those
// replayed go together): a second replay neither repeats nor loses one.
func TestFailedReplayChunkIsKept(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://r.example/dead"
	deadLetterOf(t, s, url, 3, 0)
	failAfterApply(t, 1)
	_, _, err := s.ReplayDeadLetters(DeadLetterFilter{})
	if err != nil && !errors.Is(err, errSyncFailed) {
		t.Fatalf("replay: %v", err)
	}
	if _, _, err := s.ReplayDeadLetters(DeadLetterFilter{}); err != nil {
		t.Fatalf("second replay: %v", err)
	}
	b, err := s.Claim(statusOf(t, s, url).ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(b); fmt.Sprint(got) != `[{"n":0} {"n":1} {"n":2}]` {
		t.Fatalf("replayed: %v, want each hook once", got)
	}
	if st := statusOf(t, s, url); st.Pending != 3 {
		t.Fatalf("pending: %d, want 3", st.Pending)
	}
}

// nextTurn takes the sender's next turn at target id after it failed
// (err) to record the end of batch batchID: it claims, records the end
// again (settle) when the claim returns that batch, and returns the
// batch it is then to send.
func nextTurn(t *testing.T, s *Store, id TargetID, batchID string, err error, settle func() error) *Batch {
	t.Helper()
	for range 2 {
		b, cerr := s.Claim(id, 0, 0)
		if cerr != nil {
			t.Fatalf("claim after a failed end of batch %s (%v): %v", batchID, err, cerr)
		}
		if b.ID != batchID {
			return b
		}
		if err == nil {
			t.Fatalf("claim after batch %s ended returns it", batchID)
		}
		if err = settle(); err != nil {
			t.Fatalf("record the end of batch %s again: %v", batchID, err)
		}
	}
	t.Fatalf("batch %s is still in flight", batchID)
	return nil
}

// TestFailedAckDoesNotStickTheTarget: an acknowledgement whose commit
// fails after Badger applied it (the batch's hooks deleted, the head
// moved) does not leave the target claiming a batch whose hooks are
// gone, which failed every turn until a restart; the next hooks go.
func TestFailedAckDoesNotStickTheTarget(t *testing.T) {
	for _, next := range []NextClaim{{}, {MinHooks: 1}} {
		t.Run(fmt.Sprintf("next=%d", next.MinHooks), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			const url = "http://r.example/ack"
			id, b := firstOfTwo(t, s, url)
			failAfterApply(t, 1)
			_, err := s.Ack(id, b.ID, next)
			if err != nil && !errors.Is(err, errSyncFailed) {
				t.Fatalf("ack: %v", err)
			}
			nb := nextTurn(t, s, id, b.ID, err, func() error { _, err := s.Ack(id, b.ID, next); return err })
			if got := bodies(nb); len(got) != 1 || got[0] != `{"n":1}` {
				t.Fatalf("batch after the failed ack: %v, want {\"n\":1}", got)
			}
			if nb.ID == b.ID {
				t.Fatalf("batch after the failed ack has the delivered batch's id %s", b.ID)
			}
			if st := statusOf(t, s, url); st.Pending != 1 {
				t.Fatalf("pending: %d, want 1", st.Pending)
			}
		})
	}
}

// TestFailedGiveUpDoesNotStickTheTarget: the same for a give-up, which
// keeps one dead letter of the batch.
func TestFailedGiveUpDoesNotStickTheTarget(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	const url = "http://r.example/giveup"
	id, b := firstOfTwo(t, s, url)
	failAfterApply(t, 1)
	f := Failure{At: time.Now(), Status: 400, Error: "400"}
	_, err := s.GiveUp(id, b.ID, "status", f, NextClaim{})
	if err != nil && !errors.Is(err, errSyncFailed) {
		t.Fatalf("give up: %v", err)
	}
	nb := nextTurn(t, s, id, b.ID, err, func() error {
		_, err := s.GiveUp(id, b.ID, "status", f, NextClaim{})
		return err
	})
	if got := bodies(nb); len(got) != 1 || got[0] != `{"n":1}` {
		t.Fatalf("batch after the failed give-up: %v, want {\"n\":1}", got)
	}
	dead, err := s.ListDeadLetters(DeadLetterFilter{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != b.ID || len(dead[0].Hooks) != 1 {
		t.Fatalf("dead letters: %+v, want the given-up batch once", dead)
	}
}

// blockWrites makes Badger refuse every write with ErrBlockedWrites, as
// it does while a DropPrefix (flushMemtable) runs, until the returned
// func is called.
func blockWrites(t *testing.T, s *Store) (unblock func()) {
	t.Helper()
	sw := s.db.NewStreamWriter()
	_ = sw.PrepareIncremental() // blocks writes even when it then refuses
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("probe"), nil) }); !errors.Is(err, badger.ErrBlockedWrites) {
		sw.Cancel()
		t.Fatalf("write while blocked: %v, want ErrBlockedWrites", err)
	}
	return sw.Cancel
}

// TestFailedSequenceLeaseReusesNoSequence: a hook sequence lease whose
// write fails is leased again. Badger's Sequence keeps a lease it failed
// to write and hands out its numbers, and its next lease, read from
// disk, hands them out again: a hook then got the sequence of one
// already delivered, sat below the target's head, never claimed, and
// the next start deleted it as delivered.
func TestFailedSequenceLeaseReusesNoSequence(t *testing.T) {
	orig := hookSeqBandwidth
	t.Cleanup(func() { hookSeqBandwidth = orig })
	hookSeqBandwidth = 4

	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const url = "http://r.example/seq"
	for i := range 4 {
		put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
	}
	// The gone mark keeps the target, and its head, when it has nothing
	// left: a hook under a sequence below the head is what is lost.
	if _, err := s.SetGone(statusOf(t, s, url).ID, true); err != nil {
		t.Fatal(err)
	}
	id := deliverAll(t, s, url)

	unblock := blockWrites(t, s)
	h := &Hook{Target: url, Method: "POST", Body: []byte(`{"refused":true}`)}
	err := s.Put(t.Context(), h)
	unblock()
	if err == nil {
		t.Fatal("put while writes are blocked: nil, want an error")
	}

	for i := 4; i < 8; i++ {
		put(t, s, url, fmt.Sprintf(`{"n":%d}`, i))
	}
	deliverAll(t, s, url)
	last := put(t, s, url, `{"n":8}`)
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatalf("claim the last capture (sequence %d): %v", mustSeq(t, *last), err)
	}
	if got := bodies(b); len(got) != 1 || got[0] != `{"n":8}` {
		t.Fatalf("batch: %v, want {\"n\":8}", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{})
	if st := s.Stats(); st.PendingHooks != 1 {
		t.Fatalf("after a restart: %d hooks pending, want the acknowledged hook %s", st.PendingHooks, last.ID)
	}
}

// TestSequenceAfterFailedLease: after a lease that failed to write, a
// sequence hands out no number twice, for every sequence the store
// keeps (a target id handed out twice would have put two URLs' hooks
// in one queue).
func TestSequenceAfterFailedLease(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	q, err := newSequence(s.db, []byte("!test-seq"), 2)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[uint64]bool)
	next := func() {
		t.Helper()
		n, err := q.Next()
		if err != nil {
			t.Fatal(err)
		}
		if seen[n] {
			t.Fatalf("sequence %d handed out twice", n)
		}
		seen[n] = true
	}
	next()
	next()
	unblock := blockWrites(t, s)
	_, err = q.Next()
	unblock()
	if err == nil {
		t.Fatal("lease while writes are blocked: nil, want an error")
	}
	for range 6 {
		next()
	}
	if err := q.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestValueLogSyncFailureFailsTheCapture: Badger syncs the value log,
// which holds the bodies of valueThreshold and more, after writing it and
// only logs a failure; the commit succeeds if the write-ahead log's sync
// does. Such a capture is not known to be on disk: it fails like a
// commit whose sync failed, and is not kept.
func TestValueLogSyncFailureFailsTheCapture(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const url = "http://r.example/big"
	put(t, s, url, `{"n":0}`)

	restore := wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		err := commit(txn)
		// What value.go's valueLog.write logs when its sync fails, with
		// the format it uses.
		s.db.Opts().Logger.Errorf("Error while curlf sync: %v\n", errors.New("input/output error"))
		return err
	})
	big := &Hook{Target: url, Method: "POST", Body: []byte(`{"pad":"` + strings.Repeat("x", valueThreshold) + `"}`)}
	if err := s.Put(t.Context(), big); !errors.Is(err, errValueLogSync) {
		t.Fatalf("put with a failed value log sync: %v, want %v", err, errValueLogSync)
	}
	if err := s.Check(); !errors.Is(err, errValueLogSync) {
		t.Fatalf("Check after it: %v, want %v", err, errValueLogSync)
	}
	restore()
	put(t, s, url, `{"n":2}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	id := statusOf(t, s, url).ID
	b, err := s.Claim(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(b); len(got) != 2 || got[0] != `{"n":0}` || got[1] != `{"n":2}` {
		t.Fatalf("pending after a restart: %.40q, want {\"n\":0} and {\"n\":2}", got)
	}
}

// TestBadgerLogsValueLogSyncFailures: the message badgerLogger counts is
// the one the Badger in go.mod logs; a Badger that changed it would leave
// value log sync failures uncounted.
func TestBadgerLogsValueLogSyncFailures(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/dgraph-io/badger/v4").Output()
	if err != nil {
		t.Fatalf("go list the badger module: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "value.go"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `vlog.opt.Errorf("` + vlogSyncFailed; !strings.Contains(string(src), want) {
		t.Fatalf("badger's value.go has no %s", want)
	}
}
