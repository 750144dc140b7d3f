package buffer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// recountDead counts the dead letters one by one, as a listing sees them.
func recountDead(t *testing.T, s *Store) DeadTotals {
	t.Helper()
	var want DeadTotals
	ds, err := s.ListDeadLetters(DeadLetterFilter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ds {
		want.add(letterTotals(&ds[i]))
	}
	return want
}

// checkDeadTotals fails the test unless DeadLetterTotals agrees with a
// recount.
func checkDeadTotals(t *testing.T, s *Store, when string) DeadTotals {
	t.Helper()
	got, err := s.DeadLetterTotals()
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if want := recountDead(t, s); got != want {
		t.Fatalf("%s: totals %+v, a recount gives %+v", when, got, want)
	}
	return got
}

func (s *Store) deadCounts() int {
	s.dead.mu.Lock()
	defer s.dead.mu.Unlock()
	return s.dead.counts
}

// TestDeadLetterTotalsFollowChanges: once counted, the dead-letter totals
// follow every give-up (a batch split into parts too), replay and purge
// without reading the dead letters again, and agree with a recount after
// each; a restart counts them again.
func TestDeadLetterTotalsFollowChanges(t *testing.T) {
	orig := maxDeadLetterValue
	maxDeadLetterValue = 64 << 10
	t.Cleanup(func() { maxDeadLetterValue = orig })
	dir := t.TempDir()
	s := openStore(t, dir, Options{GCInterval: -1})

	checkDeadTotals(t, s, "empty store")
	_, first := deadLetterOf(t, s, "http://a.test/", 3, 0)
	checkDeadTotals(t, s, "one give-up")
	_, parts := deadLetterOf(t, s, "http://b.test/", 50, 4<<10)
	if got := checkDeadTotals(t, s, "a give-up in parts"); got.Letters < 5 {
		t.Fatalf("%d dead letters, want the large batch in 4 parts or more", got.Letters)
	}
	deadLetterOf(t, s, "http://c.test/", 2*replayChunk+3, 10)
	checkDeadTotals(t, s, "a large give-up")

	if _, _, err := s.ReplayDeadLetters(DeadLetterFilter{Target: "http://c.test/"}); err != nil {
		t.Fatal(err)
	}
	checkDeadTotals(t, s, "a replay in chunks")
	if _, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{first, parts + "-0002"}}); err != nil {
		t.Fatal(err)
	}
	got := checkDeadTotals(t, s, "a purge")
	if n := s.deadCounts(); n != 1 {
		t.Fatalf("the dead letters were read %d times, want once", n)
	}
	if got.Letters == 0 || got.Bytes == 0 {
		t.Fatalf("totals %+v: the test left nothing to count", got)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{GCInterval: -1})
	if again := checkDeadTotals(t, s, "after a restart"); again != got {
		t.Fatalf("after a restart: %+v, before it %+v", again, got)
	}
}

// TestDeadLetterTotalsAfterAFailedCommit: after a commit that fails, the
// totals are counted again, as whether it was applied is not known: a
// replay whose second chunk fails leaves its dead letter part way
// replayed, and a give-up whose sync fails is applied all the same.
func TestDeadLetterTotalsAfterAFailedCommit(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	deadLetterOf(t, s, "http://a.test/", 2*replayChunk+3, 0)
	checkDeadTotals(t, s, "before the replay")

	var commits atomic.Int32
	restore := wrapCommits(t, func(txn *badger.Txn, commit func(*badger.Txn) error) error {
		if commits.Add(1) == 2 {
			return errors.New("injected: commit failed")
		}
		return commit(txn)
	})
	if _, n, err := s.ReplayDeadLetters(DeadLetterFilter{}); err == nil || n != replayChunk {
		t.Fatalf("replay = %d hooks, %v; want %d and the injected error", n, err, replayChunk)
	}
	restore()
	got := checkDeadTotals(t, s, "after the failed replay")
	if got.Letters != 1 || got.Hooks != replayChunk+3 {
		t.Fatalf("totals %+v, want 1 dead letter of %d hooks", got, replayChunk+3)
	}
	if n := s.deadCounts(); n != 2 {
		t.Fatalf("the dead letters were read %d times, want twice", n)
	}

	// A give-up whose commit fails after Badger applied it is taken as
	// done (see finish): its dead letter is there, and counted.
	put(t, s, "http://b.test/", `{"n":0}`)
	failAfterApply(t, 1)
	giveUpBatch(t, s, "http://b.test/")
	if got := checkDeadTotals(t, s, "after a give-up whose commit failed"); got.Letters != 2 {
		t.Fatalf("totals %+v, want 2 dead letters", got)
	}
}

// TestDeadLetterCountDuringChanges: give-ups and purges that commit while
// a count reads its snapshot are in the totals once each.
func TestDeadLetterCountDuringChanges(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	_, a := deadLetterOf(t, s, "http://a.test/", 2, 0)
	deadLetterOf(t, s, "http://b.test/", 3, 0)
	put(t, s, "http://c.test/", `{"n":0}`)

	changed := false
	t.Cleanup(func() { afterDeadSnapshot = func() {} })
	afterDeadSnapshot = func() {
		if changed {
			return
		}
		changed = true
		giveUpBatch(t, s, "http://c.test/")
		if _, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{a}}); err != nil {
			t.Error(err)
		}
	}
	got := checkDeadTotals(t, s, "a count during changes")
	if !changed {
		t.Fatal("no change during the count")
	}
	if want := (DeadTotals{Letters: 2, Hooks: 4, Bytes: 4 * int64(len(`{"n":0}`))}); got != want {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
}

// TestDeadLetterCountStopsAtClose: a count of the dead letters (which may
// read gigabytes) stops when Close begins, rather than hold it up.
func TestDeadLetterCountStopsAtClose(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	deadLetterOf(t, s, "http://a.test/", 2, 0)
	closed := make(chan error, 1)
	t.Cleanup(func() { afterDeadSnapshot = func() {} })
	afterDeadSnapshot = func() {
		go func() { closed <- s.Close() }()
		waitFor(t, "Close to begin", s.closing.Load)
	}
	if got, err := s.DeadLetterTotals(); !errors.Is(err, ErrClosed) {
		t.Fatalf("count during Close = %+v, %v; want ErrClosed", got, err)
	}
	if err := recv(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
}

// TestDeadLetterTotalsAfterPurgingADamagedLetter: a dead letter whose
// record was damaged after the totals counted it lists with no hooks;
// purging it leaves totals that agree with a recount, not ones that
// still hold the hooks it had when counted.
func TestDeadLetterTotalsAfterPurgingADamagedLetter(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{GCInterval: -1})
	put(t, s, unreadableURL, bigBody(5)) // 70 kB: its dead letter is in the value log
	_, letter := giveUpBatch(t, s, unreadableURL)
	put(t, s, "http://a.test/", `{"n":0}`)
	giveUpBatch(t, s, "http://a.test/")
	if got := checkDeadTotals(t, s, "before the damage"); got.Hooks != 2 {
		t.Fatalf("totals %+v, want 2 hooks", got)
	}

	// One byte of the dead letter flipped in the value log, the store
	// open (its checksum fails when next read).
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	damaged := false
	for _, file := range vlogs {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.LastIndex(b, []byte(letter))
		if i < 0 {
			continue
		}
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte{b[i+5000] ^ 1}, int64(i)+5000)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		damaged = true
	}
	if !damaged {
		t.Fatalf("dead letter %s not in the value log", letter)
	}
	d, err := s.GetDeadLetter(letter)
	if err != nil || d.Reason != ReasonUnreadable || d.Size != 0 {
		t.Fatalf("damaged dead letter = %+v, %v; want it unreadable, with no hooks", d, err)
	}

	if _, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{letter}}); err != nil {
		t.Fatal(err)
	}
	if got := checkDeadTotals(t, s, "after purging the damaged dead letter"); got.Letters != 1 || got.Hooks != 1 {
		t.Fatalf("totals %+v, want 1 dead letter of 1 hook", got)
	}
}

// TestDeadLetterTotalsAfterARefusedReplay: a replay that the quota
// refuses changed nothing, so the totals stay known: the dead letters
// (gigabytes, perhaps) are not read again.
func TestDeadLetterTotalsAfterARefusedReplay(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{MaxPendingBytes: 100})
	deadLetterOf(t, s, "http://a.test/", 1, 50)
	put(t, s, "http://b.test/", `{"pad":"`+strings.Repeat("x", 50)+`"}`)
	before := checkDeadTotals(t, s, "before the replay")
	if _, _, err := s.ReplayDeadLetters(DeadLetterFilter{}); !errors.Is(err, ErrQuota) {
		t.Fatalf("replay: %v, want ErrQuota", err)
	}
	if got := checkDeadTotals(t, s, "after the refused replay"); got != before {
		t.Fatalf("totals %+v, before the replay %+v", got, before)
	}
	if n := s.deadCounts(); n != 1 {
		t.Fatalf("the dead letters were read %d times, want once", n)
	}
}

// TestDeadLetterIDsNamedTwice: a dead letter named twice in a filter's
// IDs is selected once: a purge takes it out of the totals once (they
// lost it twice, and stayed off until a restart), and a replay puts its
// hooks back once, without failing on it the second time.
func TestDeadLetterIDsNamedTwice(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	_, a := deadLetterOf(t, s, "http://a.test/", 2, 0)
	_, b := deadLetterOf(t, s, "http://b.test/", 3, 0)
	deadLetterOf(t, s, "http://c.test/", 1, 0)
	checkDeadTotals(t, s, "before")

	ids, err := s.PurgeDeadLetters(DeadLetterFilter{IDs: []string{a, a}})
	if err != nil || !slices.Equal(ids, []string{a}) {
		t.Fatalf("purge = %v, %v; want [%s]", ids, err, a)
	}
	checkDeadTotals(t, s, "after a purge naming a dead letter twice")

	replayed, hooks, err := s.ReplayDeadLetters(DeadLetterFilter{IDs: []string{b, b}})
	if err != nil || !slices.Equal(replayed, []string{b}) || hooks != 3 {
		t.Fatalf("replay = %v, %d hooks, %v; want [%s], 3 hooks", replayed, hooks, err, b)
	}
	checkDeadTotals(t, s, "after a replay naming a dead letter twice")
}
